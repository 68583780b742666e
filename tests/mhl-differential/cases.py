#!/usr/bin/env python3
"""The reference side of the ASC MHL differential test (tests/integration/mhl_diff.rs).

Run with the Python of the `ascmhl` 1.2 venv that scripts/tools installs: the reference tool's
own code runs in this process (its commands called directly, so no CLI start-up and no update
check per call), which makes hundreds of cases cheap.

  cases.py make  --seed S --first I --count N --out DIR
      builds cases I..I+N-1 under DIR/case-<i>/: a random small tree and history made with
      `ascmhl create` (formats, generations, nested cards, ignore patterns incl. negations,
      renames recorded with -dr, odd names), then random mutations (flip a byte, truncate,
      delete, add, rename, forge or drop a generation, edit the chain); then `ascmhl-debug
      verify` of the tree, twice: as it is, and with the generation files the chain does not
      list moved away (the sealed history alone). Writes DIR/case-<i>/case.json.
  cases.py judge --out DIR
      after the Rust side ran `tally upload --mhl` on each case (DIR/case-<i>/tally.json),
      checks tally's verdict against the reference's and the generation tally wrote (no
      non-failed value for a file the reference says differs; XSD-valid; `ascmhl-debug
      verify` accepts the tree afterwards when tally accepted it). Prints one JSON object:
      {"cases": n, "problems": [...], "stats": {...}}.

Every case is built from random.Random(f"{seed}:{i}") alone, so `--seed S --first i --count 1`
rebuilds case i exactly (file contents, names, mutations; only timestamps differ).
"""

import argparse
import json
import os
import random
import re
import shutil
import sys
import time

import click
from lxml import etree

from ascmhl import commands, hasher
from ascmhl import logger as mhl_logger

FORMATS = ["xxh64", "md5", "xxh128", "xxh3", "sha1", "c4"]
NAMES = [
    "A001.mov",
    "B002.mov",
    "Clips/A001.mov",
    "Clips/c1.mov",
    "Clips/sub/c2.mov",
    "Proxy/a.mov",
    "Proxy/sub/b.mov",
    "Sound & Notes/t<1>.wav",
    " lead.mov",
    "trail.mov ",
    "Clips/ both .wav ",
    "x.tmp",
    "notes.txt",
    "ünïcode/é.mov",
    "deep/er/still/z.mov",
]
PATTERNS = [
    ["*.tmp"],
    ["Proxy/*.mov"],
    ["*.mov", "!A001.mov"],
    ["sub/"],
    ["Proxy/**/b.mov"],
    ["*.wav", "!t<1>.wav"],
    ["deep/"],
    ["c?.mov"],
    ["[AB]00*.mov"],
]
XSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mhl")
GEN_RE = re.compile(r"^(\d{4,})(?:_(.+))?\.mhl$")


class Captured:
    """ascmhl's log lines, captured while one command runs."""

    def __init__(self):
        self.lines = []
        self.visited = []

    def __enter__(self):
        self._error, self._info, self._verbose = mhl_logger.error, mhl_logger.info, mhl_logger.verbose
        mhl_logger.error = lambda msg, *a: self.lines.append(str(msg))
        mhl_logger.info = lambda msg, *a: self.lines.append(str(msg))
        mhl_logger.verbose = lambda msg, *a: None
        self._walk = commands.post_order_lexicographic

        def walk(top, spec=None):
            for folder, children in self._walk(top, spec):
                for name, is_dir in children:
                    if not is_dir:
                        self.visited.append(os.path.join(folder, name))
                yield folder, children

        commands.post_order_lexicographic = walk
        return self

    def __exit__(self, *exc):
        mhl_logger.error, mhl_logger.info, mhl_logger.verbose = self._error, self._info, self._verbose
        commands.post_order_lexicographic = self._walk
        return False


def run(command, args):
    """Runs an ascmhl click command in this process: (exit code, captured)."""
    with Captured() as cap:
        try:
            command.main(args=args, standalone_mode=False)
            code = 0
        except click.ClickException as e:
            code = e.exit_code
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # the reference tool itself crashed (seen: -dr with a new format)
            cap.lines.append(f"ascmhl crashed: {type(e).__name__}: {e}")
            code = 99
    return code, cap


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def files_of(root):
    """Every file under root (not ascmhl/ folders), relative, '/'-separated, sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "ascmhl")
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return sorted(out)


def chained(adir):
    """The generation file names ascmhl_chain.xml lists (None without a readable chain)."""
    chain = os.path.join(adir, "ascmhl_chain.xml")
    if not os.path.exists(chain):
        return None
    try:
        t = etree.parse(chain)
    except etree.XMLSyntaxError:
        return None
    return [e.text for e in t.iter("{*}path")]


def history_dirs(root):
    """The folders holding a history: "" for the root (whether it has one or not), then every
    nested one, relative and '/'-separated (as ascmhl finds them: any folder below the root
    with an ascmhl/ folder)."""
    out = [""]
    for d, dirs, _ in os.walk(root):
        if d != root and "ascmhl" in dirs:
            out.append(os.path.relpath(d, root).replace(os.sep, "/"))
        dirs[:] = sorted(x for x in dirs if x != "ascmhl")
    return out


def under(d, p):
    return f"{d}/{p}" if d else p


def all_generations(root):
    """{history folder: its generation file names}."""
    return {d: generation_files(os.path.join(root, d, "ascmhl")) for d in history_dirs(root)}


def generation_files(adir):
    if not os.path.isdir(adir):
        return []
    return sorted(n for n in os.listdir(adir) if GEN_RE.match(n) and not n.startswith("._"))


def rewrite_chain_c4(adir, name):
    """Re-seals generation `name`: its chain entry gets the file's current C4."""
    chain = os.path.join(adir, "ascmhl_chain.xml")
    text = open(chain, encoding="utf-8").read()
    c4 = hasher.hash_file(os.path.join(adir, name), "c4")
    pat = re.compile(r"(<path>" + re.escape(name) + r"</path>\s*<c4>)([^<]*)(</c4>)")
    text = pat.sub(lambda m: m.group(1) + c4 + m.group(3), text)
    open(chain, "w", encoding="utf-8").write(text)


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def listed_values(gen_path):
    """(path text, format, action, value) of every file <hash> in a generation."""
    out = []
    t = etree.parse(gen_path)
    for h in t.iter("{*}hash"):
        p = None
        vals = []
        for c in h:
            tag = etree.QName(c).localname
            if tag == "path":
                p = c.text
            elif tag in FORMATS:
                vals.append((tag, c.get("action"), c.text))
        for tag, action, v in vals:
            out.append((p, tag, action, v))
    return out


def make_case(seed, i, out):
    rnd = random.Random(f"{seed}:{i}")
    case_dir = os.path.join(out, f"case-{i}")
    shutil.rmtree(case_dir, ignore_errors=True)
    rootname = rnd.choice(["card", "A002R2EC", "day 1", "Reel_ü"])
    root = os.path.join(case_dir, rootname)
    os.makedirs(root)
    ops = []
    exempt = []
    forged_paths = []

    def new_content():
        n = rnd.choice([0, 1, 7, 64, 300, 5000])
        return bytes(rnd.getrandbits(8) for _ in range(n))

    names = rnd.sample(NAMES, rnd.randint(1, 6))
    for n in names:
        write_file(os.path.join(root, n), new_content())
    nested = rnd.random() < 0.3
    if nested:
        make_cards(rnd, root, ops, new_content)
    generations = rnd.choice([1, 1, 2, 3])
    for g in range(generations):
        args = []
        fmts = rnd.sample(FORMATS, rnd.choice([1, 1, 2]))
        for f in fmts:
            args += ["-h", f]
        if rnd.random() < 0.5:
            args.append("-n")
        pats = []
        if rnd.random() < 0.4:
            pats = rnd.choice(PATTERNS)
            for p in pats:
                args += ["-i", p]
        if g > 0:
            # Between generations: a file added, or one renamed and recorded with -dr.
            present = files_of(root)
            r = rnd.random()
            if r < 0.4:
                n = rnd.choice(NAMES)
                if n not in present and not any(n.startswith(p + "/") for p in present):
                    write_file(os.path.join(root, n), new_content())
                    ops.append(f"gen {g + 1}: added {n!r}")
            elif r < 0.8 and present:
                src = rnd.choice(present)
                dst = os.path.join(os.path.dirname(src), "renamed_" + os.path.basename(src))
                if not os.path.exists(os.path.join(root, dst)):
                    os.makedirs(os.path.dirname(os.path.join(root, dst)), exist_ok=True)
                    os.rename(os.path.join(root, src), os.path.join(root, dst))
                    args.append("-dr")
                    ops.append(f"gen {g + 1}: renamed {src!r} -> {dst!r} (-dr)")
        code, cap = run(commands.create, args + [root])
        ops.append(f"create {' '.join(args)} -> {code}")
        if code != 0:
            ops.append("  " + " | ".join(cap.lines[-3:]))
        time.sleep(0) if g == generations - 1 else None

    # Mutations (of the root's history, or of a nested card's).
    for _ in range(rnd.choice([0, 1, 1, 1, 2])):
        present = files_of(root)
        hroot, rootname_h = root, rootname
        nested_dirs = history_dirs(root)[1:]
        if nested_dirs and rnd.random() < 0.4:
            d = rnd.choice(nested_dirs)
            hroot, rootname_h = os.path.join(root, d), os.path.basename(d)
        adir = os.path.join(hroot, "ascmhl")
        before_generations = generation_files(adir)
        kind = rnd.choice(
            [
                "flip",
                "flip",
                "truncate",
                "delete",
                "add",
                "rename",
                "forge_unchained",
                "forge_unchained_first",
                "forge_sealed",
                "chain_c4",
                "chain_drop",
                "chain_delete",
                "gen_delete",
            ]
        )
        if kind in ("flip", "truncate", "delete", "rename") and present:
            n = rnd.choice(present)
            p = os.path.join(root, n)
            if kind == "flip":
                data = bytearray(open(p, "rb").read())
                if data:
                    k = rnd.randrange(len(data))
                    data[k] ^= 1 << rnd.randrange(8)
                else:
                    data = bytearray(b"x")
                open(p, "wb").write(bytes(data))
            elif kind == "truncate":
                data = open(p, "rb").read()
                open(p, "wb").write(data[: len(data) // 2] if data else b"y")
            elif kind == "delete":
                os.remove(p)
            else:
                os.rename(p, p + ".moved")
            ops.append(f"{kind} {n!r}")
        elif kind == "add":
            n = rnd.choice(["new.mov", "Clips/new.mov", "new.tmp", " new .mov"])
            write_file(os.path.join(root, n), new_content())
            ops.append(f"add {n!r}")
        elif kind.startswith("forge_unchained") and generation_files(adir):
            # Issue 25 case 1: a file changed and a generation the chain does not list that
            # records the changed file's hashes.
            listed = [
                (p, f, v)
                for (p, f, a, v) in listed_values(os.path.join(adir, generation_files(adir)[-1]))
                if p and os.path.isfile(os.path.join(hroot, p)) and a != "failed"
            ]
            if not listed:
                continue
            p, _, _ = rnd.choice(listed)
            fp = os.path.join(hroot, p)
            data = bytearray(open(fp, "rb").read() or b"z")
            data[0] ^= 0x20
            open(fp, "wb").write(bytes(data))
            text = open(os.path.join(adir, generation_files(adir)[-1]), encoding="utf-8").read()
            for (q, f, v) in listed:
                if q == p:
                    text = text.replace(f">{v}<", f">{hasher.hash_file(fp, f)}<")
            number = 0 if kind.endswith("first") else len(before_generations) + 1
            name = f"{number:04d}_{rootname_h}_2020-01-01_000000Z.mhl"
            open(os.path.join(adir, name), "w", encoding="utf-8").write(text)
            ops.append(f"{kind}: changed {p!r}, unchained {os.path.relpath(adir, root)}/{name} records its new hashes")
        elif kind == "forge_sealed" and generation_files(adir):
            # A value changed in a sealed generation, the chain re-sealed to match.
            g = rnd.choice(generation_files(adir))
            vals = [
                (p, f, a, v)
                for (p, f, a, v) in listed_values(os.path.join(adir, g))
                if v and a != "failed"
            ]
            if not vals or chained(adir) is None or g not in chained(adir):
                continue
            p, f, a, v = rnd.choice(vals)
            forged = ("0" if v[-1] != "0" else "1") if f != "c4" else ("2" if v[-1] != "2" else "3")
            text = open(os.path.join(adir, g), encoding="utf-8").read()
            text = text.replace(f">{v}<", f">{v[:-1]}{forged}<", 1)
            open(os.path.join(adir, g), "w", encoding="utf-8").write(text)
            rewrite_chain_c4(adir, g)
            ops.append(f"forge_sealed: {os.path.relpath(adir, root)}/{g} {p!r} {f} ({a}) changed, chain re-sealed")
            forged_paths.append(under(os.path.relpath(hroot, root) if hroot != root else "", p))
        elif kind == "chain_c4" and os.path.exists(os.path.join(adir, "ascmhl_chain.xml")):
            chain = os.path.join(adir, "ascmhl_chain.xml")
            text = open(chain, encoding="utf-8").read()
            text = re.sub(r"<c4>c4(.)", lambda m: "<c4>c4" + ("2" if m.group(1) != "2" else "3"), text, count=1)
            open(chain, "w", encoding="utf-8").write(text)
            ops.append(f"chain_c4: the first C4 in {os.path.relpath(adir, root)}'s chain changed")
        elif kind == "chain_drop" and os.path.exists(os.path.join(adir, "ascmhl_chain.xml")):
            chain = os.path.join(adir, "ascmhl_chain.xml")
            text = open(chain, encoding="utf-8").read()
            entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
            if entries:
                text = text.replace(entries[-1], "", 1)
                open(chain, "w", encoding="utf-8").write(text)
                ops.append(f"chain_drop: the newest generation removed from {os.path.relpath(adir, root)}'s chain")
        elif kind == "chain_delete" and os.path.exists(os.path.join(adir, "ascmhl_chain.xml")):
            os.remove(os.path.join(adir, "ascmhl_chain.xml"))
            ops.append(f"chain_delete {os.path.relpath(adir, root)}")
        elif kind == "gen_delete" and generation_files(adir):
            g = rnd.choice(generation_files(adir))
            if os.path.exists(os.path.join(adir, g)):
                os.remove(os.path.join(adir, g))
                ops.append(f"gen_delete {os.path.relpath(adir, root)}/{g}")

    verdict = verify(root)
    # ascmhl compares a file with one value only (its first `original` entry); tally with every
    # sealed value: a forged value ascmhl does not compare with is refused by tally alone.
    if any(p not in verdict["mismatched"] for p in forged_paths):
        exempt.append("forged-value-ascmhl-does-not-compare")
    # The sealed history alone: generation files the chain does not list moved away.
    unsealed = []
    for d in history_dirs(root):
        adir = os.path.join(root, d, "ascmhl")
        listed = chained(adir)
        unsealed += [(adir, g) for g in generation_files(adir) if listed is not None and g not in listed]
    if unsealed:
        aside = os.path.join(case_dir, "unsealed")
        for k, (adir, g) in enumerate(unsealed):
            os.makedirs(os.path.join(aside, str(k)), exist_ok=True)
            shutil.move(os.path.join(adir, g), os.path.join(aside, str(k), g))
        sealed = verify(root)
        for k, (adir, g) in enumerate(unsealed):
            shutil.move(os.path.join(aside, str(k), g), os.path.join(adir, g))
    else:
        sealed = verdict
    # A file differs from the sealed history, and ascmhl passes it only because an unlisted
    # generation gives the value it compares with (issue 25 case 1, a forgery numbered before
    # the real generations): tally must refuse it (assertion 1), so this is no disagreement.
    if verdict["exit"] == 0 and sealed["mismatched"]:
        exempt.append("changed-file-vouched-for-only-by-an-unlisted-generation")
    if verdict["listed_not_visited"]:
        exempt.append("listed-file-ignored-by-ascmhl")
    if relisted_and_missing(root):
        exempt.append("missing-name-reused-after-a-rename")
    case = {
        "case": i,
        "seed": seed,
        "root": root,
        "ops": ops,
        "nested": nested,
        "ascmhl": verdict,
        "sealed": sealed,
        "exempt": exempt,
        "generations_before": all_generations(root),
        "create_before": create_on_a_copy(root, case_dir),
    }
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return case


def create_on_a_copy(root, case_dir):
    """The exit code of `ascmhl create -h xxh64` on a copy of the tree as it stands (the next
    offload, before tally): check 6 holds tally only to what ascmhl itself manages (its create
    compares with the first value of a format over every generation file, its verify with the
    original, so a forged unlisted generation can fail the one and not the other)."""
    probe = os.path.join(case_dir, "create-probe")
    shutil.rmtree(probe, ignore_errors=True)
    copy = os.path.join(probe, os.path.basename(root))
    shutil.copytree(root, copy, symlinks=True)
    code, _ = run(commands.create, ["-h", "xxh64", copy])
    shutil.rmtree(probe, ignore_errors=True)
    return code


def relisted_and_missing(root):
    """Paths a sealed generation names as a previousPath that a later one lists again as a
    file of the folder, and that the folder now lacks: tally reports them missing (the newest
    record lists them), ascmhl's rename map (previous -> new, over every generation) hides
    them. Relative to the root."""
    present = set(files_of(root))
    out = []
    for d, gens in all_generations(root).items():
        away, relisted = set(), set()
        # The generations the chain lists (tally reads no other as a listing).
        listed = chained(os.path.join(root, d, "ascmhl")) or []
        for g in [g for g in gens if g in listed]:
            try:
                t = etree.parse(os.path.join(root, d, "ascmhl", g))
            except etree.XMLSyntaxError:
                continue
            entries = []
            for h in t.iter("{*}hash"):
                path = next((c.text for c in h if etree.QName(c).localname == "path"), None)
                prev = next((c.text for c in h if etree.QName(c).localname == "previousPath"), None)
                entries.append((path, prev))
            relisted.update(p for (p, _) in entries if p in away)
            away.update(q for (_, q) in entries if q)
        out += [under(d, p) for p in sorted(relisted) if under(d, p) not in present]
    return out


def make_cards(rnd, root, ops, new_content):
    """One or two cards with histories of their own inside the root (a day folder), made with
    `ascmhl create` on the card; sometimes a second card generation with a file renamed in the
    card and recorded with -dr."""
    for cname in rnd.sample(["Card1", "Card2", "Day2/CardB"], rnd.choice([1, 1, 2])):
        card = os.path.join(root, cname)
        for n in rnd.sample(["Clips/n1.mov", "Clips/n2.mov", "Proxy/p.mov", " sp .mov", "x.tmp"], rnd.randint(1, 3)):
            write_file(os.path.join(card, n), new_content())
        args = []
        for f in rnd.sample(FORMATS, rnd.choice([1, 1, 2])):
            args += ["-h", f]
        if rnd.random() < 0.5:
            args.append("-n")
        if rnd.random() < 0.3:
            args += ["-i", rnd.choice(["*.tmp", "Proxy/", "!n1.mov"])]
        code, cap = run(commands.create, args + [card])
        ops.append(f"nested {cname}: create {' '.join(args)} -> {code}")
        if rnd.random() < 0.4:
            present = files_of(card)
            if present:
                src = rnd.choice(present)
                dst = os.path.join(os.path.dirname(src), "renamed_" + os.path.basename(src))
                os.rename(os.path.join(card, src), os.path.join(card, dst))
                code, cap = run(commands.create, args + ["-dr", card])
                ops.append(f"nested {cname}: renamed {src!r} -> {dst!r}, create -dr -> {code}")


def flip(path, at=0):
    data = bytearray(open(path, "rb").read() or b"z")
    data[at % len(data)] ^= 0x01
    open(path, "wb").write(bytes(data))


def named_case(name, out):
    """The regression cases: issue 25's reports and every disagreement the random cases found,
    each a fixed tree with the verdicts both tools must give ("tally": 0, or "fail" for any
    non-zero exit)."""
    case_dir = os.path.join(out, "case-0")
    shutil.rmtree(case_dir, ignore_errors=True)
    root = os.path.join(case_dir, "card")
    os.makedirs(root)
    adir = os.path.join(root, "ascmhl")
    ops, nested = [name], False

    def files(*names):
        for k, n in enumerate(names):
            write_file(os.path.join(root, n), f"content {k} of {n}".encode())

    def create(*args, at=root):
        code, cap = run(commands.create, list(args) + [at])
        assert code == 0, (name, args, cap.lines)

    if name == "unsealed-forgery-of-a-changed-file":
        # Issue 25 case 1: the file changed, and a generation the chain does not list holds its
        # new hash.
        files("A001.mov", "B002.mov")
        create("-h", "xxh64")
        g1 = generation_files(adir)[0]
        old = hasher.hash_file(os.path.join(root, "A001.mov"), "xxh64")
        flip(os.path.join(root, "A001.mov"))
        new = hasher.hash_file(os.path.join(root, "A001.mov"), "xxh64")
        text = open(os.path.join(adir, g1), encoding="utf-8").read().replace(old, new)
        open(os.path.join(adir, "0002_card_2020-01-01_000000Z.mhl"), "w", encoding="utf-8").write(text)
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "unsealed-forged-value-of-an-intact-file":
        # Issue 25 case 1, the reverse: the forged value must not make tally refuse.
        files("A001.mov")
        create("-h", "xxh64")
        g1 = generation_files(adir)[0]
        old = hasher.hash_file(os.path.join(root, "A001.mov"), "xxh64")
        text = open(os.path.join(adir, g1), encoding="utf-8").read().replace(old, "0" * 16)
        open(os.path.join(adir, "0002_card_2020-01-01_000000Z.mhl"), "w", encoding="utf-8").write(text)
        expect = {"ascmhl": 0, "tally": 0, "warning": "its xxh64 for 'A001.mov' (0000000000000000"}
    elif name == "rename-recorded-only-by-an-unlisted-generation":
        # Found by the soak (seed 27, cases 308, 417, 442, 893, 995; 171 in a card): a rename
        # recorded with -dr by a generation then dropped from the chain. ascmhl maps the old
        # name to the new (not missing) and compares the renamed file with the old name's
        # original; tally reported the old name missing. Now it follows the rename as ascmhl
        # does, with a warning (the renamed file is checked against the old name's value).
        files("notes.txt", "A001.mov")
        create("-h", "xxh64", "-n")
        os.rename(os.path.join(root, "notes.txt"), os.path.join(root, "renamed_notes.txt"))
        create("-h", "xxh64", "-n", "-dr")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text.replace(entries[-1], "", 1))
        expect = {"ascmhl": 0, "tally": 0, "warning": "its rename of 'notes.txt' to 'renamed_notes.txt' is followed"}
    elif name == "unlisted-rename-of-a-changed-file":
        # ... and the renamed file changed: both compare it with the old name's value.
        files("notes.txt", "A001.mov")
        create("-h", "xxh64", "-n")
        os.rename(os.path.join(root, "notes.txt"), os.path.join(root, "renamed_notes.txt"))
        create("-h", "xxh64", "-n", "-dr")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text.replace(entries[-1], "", 1))
        flip(os.path.join(root, "renamed_notes.txt"))
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "missing-file-excused-by-unlisted-patterns":
        # The newest generation file, not in the chain, adds '*.tmp'; x.tmp is then gone.
        # ascmhl verify applies the newest generation file's patterns: not missing; tally
        # agrees, with a warning.
        files("x.tmp", "A001.mov")
        create("-h", "md5")
        create("-h", "md5", "-i", "*.tmp")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text.replace(entries[-1], "", 1))
        os.remove(os.path.join(root, "x.tmp"))
        expect = {"ascmhl": 0, "tally": 0, "warning": "its ignore patterns excuse the missing 'x.tmp'"}
    elif name == "chain-entry-dropped-and-file-changed":
        # Found by the random cases (seed 1, case 1): the only generation dropped from the chain
        # is still ascmhl's reference; the changed file must not pass as new.
        files(" lead.mov", "A001.mov")
        create("-h", "md5")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        text = re.sub(r"\s*<hashlist [^>]*>.*?</hashlist>", "", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text)
        flip(os.path.join(root, " lead.mov"))
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "unlisted-renames-and-a-forgery-sorted-first":
        # Found by the random cases (seed 4, case 573): two renames recorded with -dr, the newest
        # generation dropped from the chain, the renamed file changed and a forged generation
        # numbered 0000 recording it: ascmhl follows the renames through every generation file
        # to the original and calls the file different; so must tally.
        files("B002.mov", "A001.mov")
        create("-h", "xxh64", "-n")
        os.rename(os.path.join(root, "B002.mov"), os.path.join(root, "renamed_B002.mov"))
        create("-h", "xxh3", "-dr")
        os.rename(os.path.join(root, "renamed_B002.mov"), os.path.join(root, "renamed_renamed_B002.mov"))
        create("-h", "xxh64", "-n", "-dr")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text.replace(entries[-1], "", 1))
        newest = generation_files(adir)[-1]
        fp = os.path.join(root, "renamed_renamed_B002.mov")
        olds = {f: hasher.hash_file(fp, f) for f in ("xxh64", "xxh3")}
        flip(fp)
        text = open(os.path.join(adir, newest), encoding="utf-8").read()
        for f, v in olds.items():
            text = text.replace(v, hasher.hash_file(fp, f))
        open(os.path.join(adir, "0000_card_2020-01-01_000000Z.mhl"), "w", encoding="utf-8").write(text)
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "rename-recorded-only-by-an-unchained-generation":
        # Found by the lead's soak (seed 8, case 315): an anchored pattern, a rename recorded
        # with -dr in a generation then dropped from the chain whose '*.mov' hides the renamed
        # file from ascmhl's verify. tally's generation must carry those patterns on (as
        # ascmhl create does), or ascmhl-debug verify calls the renamed file new after it.
        files("Proxy/a.mov", "B002.mov", "Sound & Notes/t<1>.wav")
        create("-h", "xxh128", "-h", "md5", "-i", "Proxy/*.mov")
        os.rename(os.path.join(root, "Proxy/a.mov"), os.path.join(root, "Proxy/renamed_a.mov"))
        create("-h", "md5", "-i", "*.mov", "-i", "!A001.mov", "-dr")
        chain = os.path.join(adir, "ascmhl_chain.xml")
        text = open(chain, encoding="utf-8").read()
        entries = re.findall(r"\s*<hashlist [^>]*>.*?</hashlist>", text, flags=re.S)
        open(chain, "w", encoding="utf-8").write(text.replace(entries[-1], "", 1))
        expect = {"ascmhl": 0, "tally": 0}
    elif name == "name-reused-after-a-rename-then-missing":
        # Found by the soak (seed 25, case 304): x.tmp renamed with -dr, a new x.tmp (other
        # bytes) recorded by the next generation (as failed, the original differs), then gone.
        # ascmhl maps x.tmp to its new name and reports nothing missing (0); tally reports
        # x.tmp missing, as the newest generation lists it (stricter on purpose, docs/mhl.md).
        files("x.tmp", "A001.mov")
        create("-h", "xxh3")
        os.rename(os.path.join(root, "x.tmp"), os.path.join(root, "renamed_x.tmp"))
        create("-h", "xxh3", "-dr")
        write_file(os.path.join(root, "x.tmp"), b"other bytes under the old name")
        code, cap = run(commands.create, ["-h", "md5", "-n", root])
        assert code == 11, (name, cap.lines)
        os.remove(os.path.join(root, "x.tmp"))
        expect = {"ascmhl": 0, "tally": "fail"}
    elif name == "empty-history-folder":
        # Found by the random cases (seed 3, case 86): ascmhl/ emptied is no fresh start.
        files("A001.mov")
        create("-h", "md5")
        shutil.rmtree(adir)
        os.makedirs(adir)
        expect = {"ascmhl": 32, "tally": "fail"}
    elif name == "ignore-star-does-not-cross-a-slash":
        # Issue 25 case 3: -i 'Proxy/*.mov' leaves Proxy/sub/b.mov listed and checked.
        files("Proxy/a.mov", "Proxy/sub/b.mov", "c.mov")
        create("-h", "xxh64", "-i", "Proxy/*.mov")
        flip(os.path.join(root, "Proxy/sub/b.mov"))
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "ignore-negation-is-honoured":
        # Issue 25 case 3: -i '*.mov' -i '!A001.mov' leaves A001.mov listed and checked.
        files("A001.mov", "B002.mov", "n.txt")
        create("-h", "xxh64", "-i", "*.mov", "-i", "!A001.mov")
        flip(os.path.join(root, "A001.mov"))
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "names-with-leading-and-trailing-spaces":
        # Issue 25 case 4.
        files(" lead.mov", "trail.mov ", "Clips/ both .wav ")
        create("-h", "xxh64")
        expect = {"ascmhl": 0, "tally": 0}
    elif name == "rename-recorded-with-previous-path":
        # Issue 25 case 5.
        files("Clips/A001.mov", "B002.mov")
        create("-h", "xxh64")
        os.rename(os.path.join(root, "Clips/A001.mov"), os.path.join(root, "Clips/A001_renamed.mov"))
        create("-h", "xxh64", "-dr")
        expect = {"ascmhl": 0, "tally": 0}
    elif name == "nested-card-with-a-changed-clip":
        # Issue 25 case 2: the changed clip is refused (checked against its card's history).
        nested = True
        files("Card1/Clips/n1.mov", "Card2/Clips/n2.mov", "day.txt")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "xxh64", at=os.path.join(root, "Card2"))
        create("-h", "xxh64")
        flip(os.path.join(root, "Card1/Clips/n1.mov"))
        expect = {"ascmhl": 11, "tally": "fail"}
    elif name == "nested-cards-intact":
        # A day folder with two cards (one a level deeper), each with its own history, and the
        # day's own: each clip checked against its card's history, a generation written into
        # each card's history and the day's, referencing them.
        nested = True
        files("Card1/Clips/n1.mov", "Card1/Clips/n2.mov", "Day2/CardB/Clips/b1.mov", "day.txt")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "md5", "-h", "xxh128", at=os.path.join(root, "Day2/CardB"))
        create("-h", "xxh64")
        expect = {"ascmhl": 0, "tally": 0}
    elif name == "nested-card-with-a-rename":
        # A clip renamed inside a card, recorded with -dr by the card's own create and then by
        # the day's.
        nested = True
        files("Card1/Clips/n1.mov", "Card1/Clips/n2.mov", "day.txt")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "xxh64")
        os.rename(os.path.join(root, "Card1/Clips/n1.mov"), os.path.join(root, "Card1/Clips/renamed_n1.mov"))
        create("-h", "xxh64", "-dr")
        expect = {"ascmhl": 0, "tally": 0}
    elif name == "nested-cards-without-a-day-history":
        # Cards with histories in a folder without one: ascmhl verify of the folder has no
        # history (30); tally checks each card's clips and starts the folder's history with
        # references to the cards' new generations, which ascmhl then accepts.
        nested = True
        files("Card1/Clips/n1.mov", "Card2/Clips/n2.mov")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "c4", at=os.path.join(root, "Card2"))
        expect = {"ascmhl": 30, "tally": 0}
    elif name == "nested-cards-without-a-day-history-one-changed":
        nested = True
        files("Card1/Clips/n1.mov", "Card2/Clips/n2.mov")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "xxh64", at=os.path.join(root, "Card2"))
        flip(os.path.join(root, "Card2/Clips/n2.mov"))
        expect = {"ascmhl": 30, "tally": "fail"}
    elif name == "nested-card-with-a-modified-generation":
        # A card's generation edited after its chain sealed it: the whole tree is refused.
        nested = True
        files("Card1/Clips/n1.mov", "day.txt")
        create("-h", "xxh64", at=os.path.join(root, "Card1"))
        create("-h", "xxh64")
        cdir = os.path.join(root, "Card1", "ascmhl")
        g = generation_files(cdir)[-1]
        with open(os.path.join(cdir, g), "a", encoding="utf-8") as f:
            f.write("\n")
        expect = {"ascmhl": 31, "tally": "fail"}
    elif name == "sha256-element-in-the-history":
        # Issue 25 case 7: a <sha256> in an input generation; tally's must stay XSD-valid.
        files("A001.mov")
        create("-h", "xxh64")
        g1 = generation_files(adir)[0]
        path = os.path.join(adir, g1)
        text = open(path, encoding="utf-8").read()
        text = re.sub(
            r"(<xxh64 action=\"original\"[^>]*>[0-9a-f]+</xxh64>)",
            r'\1\n      <sha256 action="original" hashdate="2020-01-01T00:00:00+00:00">' + "ab" * 32 + "</sha256>",
            text,
            count=1,
        )
        open(path, "w", encoding="utf-8").write(text)
        rewrite_chain_c4(adir, g1)
        expect = {"ascmhl": 0, "tally": 0}
    else:
        raise SystemExit(f"no named case {name!r}")
    case = {
        "case": 0,
        "seed": name,
        "root": root,
        "ops": ops,
        "nested": nested,
        "ascmhl": verify(root),
        "sealed": verify(root),
        "exempt": ["missing-name-reused-after-a-rename"] if relisted_and_missing(root) else [],
        "expect": expect,
        "generations_before": all_generations(root),
        "create_before": create_on_a_copy(root, case_dir),
    }
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return case


def verify(root):
    """`ascmhl-debug verify ROOT` in this process: exit code, files it says differ / are new /
    are missing, and listed files its walk did not visit (ignored)."""
    code, cap = run(commands.verify, [root])
    present = files_of(root)
    mismatched, new, missing = set(), set(), set()
    in_missing = False
    for line in cap.lines:
        m = re.match(r"ERROR: hash mismatch\s+for (.*)$", line, flags=re.S)
        if m:
            rest = m.group(1)
            best = max((p for p in present if rest.startswith(p + " old ")), key=len, default=None)
            mismatched.add(best if best is not None else rest)
            continue
        if line.startswith("found new file "):
            new.add(line[len("found new file "):])
            continue
        if re.match(r"ERROR: \d+ missing file\(s\):", line):
            in_missing = True
            continue
        if in_missing and line.startswith("  "):
            missing.add(line[2:])
        else:
            in_missing = False
    visited = {os.path.relpath(p, root).replace(os.sep, "/") for p in cap.visited}
    listed = set()
    for d, gens in all_generations(root).items():
        for g in gens:
            try:
                gp = os.path.join(root, d, "ascmhl", g)
                listed.update(under(d, p) for (p, _, _, _) in listed_values(gp) if p)
            except etree.XMLSyntaxError:
                pass
    # (Only when the walk ran: a history refused up front visits nothing.)
    listed_not_visited = [] if code in (30, 31, 32, 33) else sorted(
        p for p in listed if p in present and p not in visited
    )
    return {
        "exit": code,
        "mismatched": sorted(mismatched),
        "new": sorted(new),
        "missing": sorted(missing),
        "listed_not_visited": listed_not_visited,
        "log": cap.lines[-12:],
    }


def xsd_ok(path, chain=False):
    xsd = os.path.join(XSD, "ASCMHLDirectory__combined.xsd" if chain else "ASCMHL.xsd")
    schema = etree.XMLSchema(etree.parse(xsd))
    doc = etree.parse(path)
    return schema.validate(doc), str(schema.error_log)[:300]


def check_new_generations(root, before, differ, problem, stats):
    """The generations written in the tree since `before` ({history folder: names}): at most
    one per history, each XSD-valid with its chain, none recording a value of a file in
    `differ` other than failed. Returns {history folder: new names}."""
    new = {}
    for d, gens in all_generations(root).items():
        adir = os.path.join(root, d, "ascmhl")
        fresh = [g for g in gens if g not in before.get(d, [])]
        if not fresh:
            continue
        new[d] = fresh
        if len(fresh) > 1:
            problem(f"{under(d, 'ascmhl')}: {len(fresh)} generations written: {fresh}")
        for g in fresh:
            stats["generations_checked"] += 1
            gp = os.path.join(adir, g)
            ok, why = xsd_ok(gp)
            if not ok:
                problem(f"the generation {under(d, 'ascmhl/' + g)} fails the ASC MHL XSD: {why}")
            ok, why = xsd_ok(os.path.join(adir, "ascmhl_chain.xml"), chain=True)
            if not ok:
                problem(f"the chain of {under(d, 'ascmhl')} fails the XSD: {why}")
            for (p, f, action, v) in listed_values(gp):
                if under(d, p) in differ and action != "failed":
                    problem(f"the generation {under(d, 'ascmhl/' + g)} records {under(d, p)!r} {f} as {action}")
    for d in new:
        if d and not os.path.isdir(os.path.join(root, d)):
            problem(f"a generation was written for {d!r}, which is not a history folder")
    return new


def judge_download(root, down, after, problem, stats):
    """`tally download --mhl` of what tally uploaded, into down["dir"]: where ascmhl accepts the
    source with tally's generation, the download exits 0; every generation it writes passes the
    checks above; and ascmhl-debug verify of the copy is no worse than of the source (folders
    S3 cannot hold, empty ones, aside)."""
    copy = down["dir"]
    if after["exit"] == 0 and down["exit"] != 0:
        problem(f"ascmhl accepts the uploaded tree, tally download --mhl exits {down['exit']}: {down['stderr'][-600:]}")
    before = all_generations(root)
    check_new_generations(copy, before, set(after["mismatched"]), problem, stats)
    if down["exit"] != 0:
        return
    got = verify(copy)
    missing = {m for m in got["missing"] if not os.path.isdir(os.path.join(root, m))}
    worse = (
        got["mismatched"]
        or got["exit"] in (11, 12, 30, 31, 32, 33)
        or not missing <= set(after["missing"])
        or (after["exit"] == 0 and got["exit"] not in (0, 10))
        or (after["exit"] == 0 and got["exit"] == 10 and missing)
    )
    if worse:
        problem(f"ascmhl-debug verify of the downloaded copy after tally's generation exits {got['exit']}: {got['log']}")


def judge(out):
    problems = []
    stats = {"cases": 0, "ascmhl_accepts": 0, "ascmhl_mismatch": 0, "tally_exit0": 0, "exempt": 0,
             "generations_checked": 0, "nested": 0, "downloads": 0}
    for d in sorted(os.listdir(out), key=lambda s: int(s.split("-")[1]) if s.startswith("case-") else -1):
        if not d.startswith("case-"):
            continue
        cdir = os.path.join(out, d)
        case = json.load(open(os.path.join(cdir, "case.json")))
        tally = json.load(open(os.path.join(cdir, "tally.json")))
        stats["cases"] += 1
        i, root = case["case"], case["root"]
        code = tally["exit"]
        ref, sealed = case["ascmhl"], case["sealed"]
        exempt = case["exempt"]
        stats["exempt"] += bool(exempt)
        stats["nested"] += bool(case.get("nested"))
        stats["tally_exit0"] += code == 0

        def problem(what):
            problems.append({"case": i, "problem": what, "ops": case["ops"], "ascmhl": ref["exit"],
                             "ascmhl_log": ref["log"], "tally_exit": code, "tally": tally["stderr"][-800:],
                             "exempt": exempt})

        # Files the reference says differ: as the tree stands, and by the sealed history alone.
        differ = set(sealed["mismatched"]) | set(ref["mismatched"])
        if differ:
            stats["ascmhl_mismatch"] += 1
            if code == 0:
                problem(f"tally exited 0 where ascmhl says these differ: {sorted(differ)}")
        if ref["exit"] in (31, 32, 33) and code == 0:
            problem(f"tally exited 0 where ascmhl refuses the history ({ref['exit']})")
        if ref["exit"] == 0:
            stats["ascmhl_accepts"] += 1
            if code != 0 and not exempt:
                problem("ascmhl accepts the tree, tally does not")
            elif code != 0:
                # Stricter on purpose (docs/mhl.md): counted by reason.
                for why in exempt:
                    key = "accepted_refused_" + why
                    stats[key] = stats.get(key, 0) + 1
        want = case.get("expect")
        if want:
            if ref["exit"] != want["ascmhl"]:
                problem(f"the scenario expects ascmhl to exit {want['ascmhl']}, it exited {ref['exit']}")
            if (want["tally"] == "fail") != (code != 0):
                problem(f"the scenario expects tally to {'fail' if want['tally'] == 'fail' else 'exit 0'}")
            warned = tally.get("warnings", [])
            if "warning" in want and not any(want["warning"] in w for w in warned):
                problem(f"the scenario expects a warning with {want['warning']!r}; tally's: {warned}")
        for p in set(tally.get("uploaded", [])) | set(tally.get("in_s3", [])):
            if p in differ:
                problem(f"{p!r} is in S3 after tally's run, and ascmhl says it differs")
        # The generations tally wrote (one per history): nothing that differs sealed, XSD-valid,
        # and (when tally accepted the tree) the reference accepts the tree with them.
        new_gens = check_new_generations(root, case["generations_before"], differ, problem, stats)
        after = None
        if code == 0:
            if ref["exit"] != 30 and not new_gens.get(""):
                problem("tally exited 0 and wrote no generation for the root")
            # The tree with tally's generations: nothing differs, nothing is missing, the
            # history holds; and a tree the reference accepted before, it accepts after.
            # (New files: ascmhl's verify does not apply an anchored ignore pattern, see
            # docs/mhl.md, so a file both tools' create leave out can stay "new" there.)
            after = verify(root)
            worse = (
                after["mismatched"]
                or after["exit"] in (11, 12, 30, 31, 32, 33)
                or not set(after["missing"]) <= set(ref["missing"])
                or (ref["exit"] == 0 and after["exit"] != 0)
            )
            if worse:
                problem(f"ascmhl-debug verify after tally's generation exits {after['exit']}: {after['log']}")
        down = tally.get("download")
        if down is not None and after is not None:
            stats["downloads"] += 1
            judge_download(root, down, after, problem, stats)
        if after is not None and after["exit"] == 0 and case.get("create_before") == 0:
            # The next offload on top of tally's generations: `ascmhl create` of the tree
            # (where it succeeded on the tree before tally).
            later, cap = run(commands.create, ["-h", "xxh64", root])
            stats[f"later_create_{later}"] = stats.get(f"later_create_{later}", 0) + 1
            if later != 0:
                problem(f"ascmhl create on top of tally's generations exits {later}: {cap.lines[-4:]}")
    print(json.dumps({"problems": problems, "stats": stats}, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["make", "judge"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--named", default=None)
    a = ap.parse_args()
    if a.what == "make" and a.named:
        c = named_case(a.named, a.out)
        print(json.dumps({"case": 0, "root": c["root"]}), flush=True)
    elif a.what == "make":
        for i in range(a.first, a.first + a.count):
            c = make_case(a.seed, i, a.out)
            print(json.dumps({"case": i, "root": c["root"], "nested": c["nested"]}), flush=True)
    else:
        judge(a.out)


if __name__ == "__main__":
    sys.exit(main())
