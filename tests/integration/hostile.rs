//! The local side under attack (issue 29), against the local Garage: keys that collide with
//! tally's temporary names, keys that nest (`d` and `d/inner`), links placed where tally writes,
//! two downloads to one file, a partial file changed between runs, `--force` onto a device, bad
//! flags; then a seeded property test that builds prefixes of colliding, nesting and odd keys
//! with links placed in the destination, downloads them, and checks that nothing outside DEST
//! changed and that every file a download claims is byte-exact.
//!
//! `TALLY_HOSTILE_SEED=N` replays one case of the property test; `TALLY_HOSTILE_CASES=N` (and
//! `TALLY_HOSTILE_FIRST_SEED`) runs more (`scripts/soak-hostile`).

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::support::*;

/// Every entry under `root` except the folder `skip` (not followed): type, link target or content
/// hash. What "nothing outside DEST changed" compares.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else {
                format!("file {}", hex(&Sha256::digest(std::fs::read(&p).unwrap())))
            };
            out.insert(p, what);
        }
    }
    out
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// Uploads `body` to `key` with tally, or with the AWS CLI where tally refuses the key.
fn put_bytes(s: &Server, dir: &Path, key: &str, body: &[u8], n: usize) {
    let f = dir.join(format!("src-{n}"));
    std::fs::write(&f, body).unwrap();
    let url = s.url(key);
    let out = s.tally([
        "upload",
        f.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--quiet",
    ]);
    if !out.status.success() {
        s.aws(["s3", "cp", "--quiet", f.to_str().unwrap(), &url]);
    }
}

fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The JSON lines of a tree download naming a file (not the summary).
fn file_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("action").is_some())
        .collect()
}

/// Names in `dir` that carry tally's temporary mark.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            if name.contains("\\tally-") {
                v.push(e.path().display().to_string());
            }
        }
    }
    v
}

#[test]
fn keys_named_like_tallys_temporaries_each_land_byte_exact() {
    let s = garage();
    let dir = s.temp_dir();
    let prefix = unique("hostile/collide");
    let objects: Vec<(String, Vec<u8>)> = [
        ("x", 6 * MIB as usize + 7),
        ("x.tally-partial", 22),
        ("x.tally-partial.journal", 33),
        ("x.journal.tmp", 44),
        ("x\\tally-partial", 55),
    ]
    .iter()
    .enumerate()
    .map(|(i, (k, n))| (k.to_string(), body(*n, 40 + i as u64)))
    .collect();
    for (i, (k, b)) in objects.iter().enumerate() {
        put_bytes(s, dir.path(), &format!("{prefix}/{k}"), b, i);
    }
    for run in 0..3 {
        let dest = dir.path().join(format!("dest{run}"));
        std::fs::create_dir(&dest).unwrap();
        let url = s.url(&format!("{prefix}/"));
        let out = s.tally([
            "download",
            &url,
            dest.to_str().unwrap(),
            "--concurrency",
            "2",
            "--json",
        ]);
        // The key with a backslash is refused (it would name a temporary); every other is exact.
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        for (k, b) in &objects {
            let p = dest.join(k);
            if k.contains('\\') {
                assert!(!p.exists(), "{k} refused");
            } else {
                assert_eq!(sha(&std::fs::read(&p).unwrap()), sha(b), "run {run}: {k}");
            }
        }
        let refused: Vec<_> = file_lines(&out)
            .into_iter()
            .filter(|l| l["action"] == "failed")
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0]["reason"].as_str().unwrap().contains("backslash"),
            "{refused:?}"
        );
        assert!(temporaries(&dest).is_empty(), "{:?}", temporaries(&dest));
    }
}

#[test]
fn links_placed_at_the_temporary_names_are_never_followed() {
    let s = garage();
    let dir = s.temp_dir();
    let key = unique("hostile/link");
    let want = body(3 * MIB as usize + 5, 50);
    put_bytes(s, dir.path(), &key, &want, 0);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"must stay").unwrap();
    let dest_dir = dir.path().join("dest");
    std::fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("out");
    for name in [
        "out\\tally-partial",
        "out\\tally-journal",
        "out\\tally-lock",
    ] {
        symlink(&victim, dest_dir.join(name)).unwrap();
    }
    let before = snapshot(dir.path(), &dest_dir);
    let out = s.tally(["download", &s.url(&key), dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        snapshot(dir.path(), &dest_dir),
        before,
        "nothing outside DEST"
    );
    assert!(std::fs::symlink_metadata(&dest).unwrap().is_file());
    assert_eq!(sha(&std::fs::read(&dest).unwrap()), sha(&want));
    assert!(
        temporaries(&dest_dir).is_empty(),
        "{:?}",
        temporaries(&dest_dir)
    );
    // A link at DEST itself is refused, with or without --force, and stays a link.
    let linked = dest_dir.join("linked");
    symlink(&victim, &linked).unwrap();
    for force in [false, true] {
        let mut args = vec![
            "download".to_owned(),
            s.url(&key),
            linked.display().to_string(),
        ];
        if force {
            args.push("--force".into());
        }
        let out = s.tally(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            stderr(&out)
        );
        assert!(
            std::fs::symlink_metadata(&linked)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"must stay");
    // --force onto a device: refused, never replaced.
    let out = s.tally(["download", &s.url(&key), "/dev/null", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn a_key_that_names_another_keys_folder_is_reported_never_nested() {
    let s = garage();
    let dir = s.temp_dir();
    let prefix = unique("hostile/nest");
    let d = body(100_000, 60);
    let inner = body(70_000, 61);
    put_bytes(s, dir.path(), &format!("{prefix}/d"), &d, 0);
    put_bytes(s, dir.path(), &format!("{prefix}/d/inner"), &inner, 1);
    let url = s.url(&format!("{prefix}/"));
    // DIR/d a folder already (an earlier run, or the other key first): `d` is refused.
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(dest.join("d")).unwrap();
    let out = s.tally(["download", &url, dest.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dest.join("d/d").exists(), "never nested");
    assert_eq!(std::fs::read(dest.join("d/inner")).unwrap(), inner);
    let failed: Vec<_> = file_lines(&out)
        .into_iter()
        .filter(|l| l["action"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("is a directory")
    );
    assert!(temporaries(&dest).is_empty(), "{:?}", temporaries(&dest));
    // A fresh folder, both at once: one lands, the other is reported; nothing left behind.
    for run in 0..3 {
        let dest = dir.path().join(format!("fresh{run}"));
        std::fs::create_dir(&dest).unwrap();
        let out = s.tally(["download", &url, dest.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!dest.join("d/d").exists(), "never nested");
        let m = std::fs::symlink_metadata(dest.join("d")).unwrap();
        if m.is_file() {
            assert_eq!(std::fs::read(dest.join("d")).unwrap(), d);
        } else {
            assert_eq!(std::fs::read(dest.join("d/inner")).unwrap(), inner);
        }
        assert!(temporaries(&dest).is_empty(), "{:?}", temporaries(&dest));
    }
}

#[test]
fn a_second_download_to_the_same_file_is_refused_while_the_first_runs() {
    let s = garage();
    let dir = s.temp_dir();
    let key = unique("hostile/lock");
    let want = body(11 * MIB as usize, 70);
    put_bytes(s, dir.path(), &key, &want, 0);
    let other_key = unique("hostile/lock-other");
    let other = body(1000, 71);
    put_bytes(s, dir.path(), &other_key, &other, 1);
    let dest = dir.path().join("same");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args([
        "download",
        &s.url(&key),
        dest.to_str().unwrap(),
        "--concurrency",
        "1",
    ]);
    seams.hold(&mut cmd, "dlpart", &[1]);
    let mut first = Running::spawn(&mut cmd, "tally download (held after part 1)");
    seams.reached(&mut first, "dlpart", 1);
    let out = s.tally([
        "download",
        &s.url(&other_key),
        dest.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another tally is downloading to this file"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    seams.go("dlpart", 1);
    let out = first.finish(TALLY_BOUND);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha(&std::fs::read(&dest).unwrap()), sha(&want));
    assert!(temporaries(dir.path()).is_empty(), "lock removed");
}

#[test]
fn a_resumed_download_hashes_the_parts_it_keeps_again() {
    let s = garage();
    let dir = s.temp_dir();
    let key = unique("hostile/resume");
    let want = body(4 * 5 * MIB as usize - 999, 80);
    put_bytes(s, dir.path(), &key, &want, 0);
    let dest = dir.path().join("out.bin");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args([
        "download",
        &s.url(&key),
        dest.to_str().unwrap(),
        "--concurrency",
        "1",
    ]);
    seams.hold(&mut cmd, "dlpart", &[2]);
    let mut child = Running::spawn(&mut cmd, "tally download (held after part 2)");
    seams.reached(&mut child, "dlpart", 2);
    child.kill9();
    // 1 MiB of a part the journal recorded is zeroed.
    let partial = dir.path().join("out.bin\\tally-partial");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; MIB as usize], MIB).unwrap();
    drop(f);
    let out = s.tally(["download", &s.url(&key), dest.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sha(&std::fs::read(&dest).unwrap()),
        sha(&want),
        "byte-exact"
    );
    assert!(
        stderr(&out).contains("no longer hold the bytes the journal recorded"),
        "{}",
        stderr(&out)
    );
    let r = json_report(&out);
    assert_eq!(r["parts_resumed"], 1, "only the intact recorded part kept");
}

#[test]
fn sigint_or_sigterm_stops_a_single_download_with_one_line_and_it_resumes() {
    let s = garage();
    let dir = s.temp_dir();
    let key = unique("hostile/signal");
    let want = body(11 * MIB as usize, 90);
    put_bytes(s, dir.path(), &key, &want, 0);
    for (n, sig) in ["INT", "TERM"].iter().enumerate() {
        let dest = dir.path().join(format!("out{n}"));
        let seams = Seams::new(&dir.path().join(format!("seams{n}")));
        let mut cmd = s.command();
        cmd.args([
            "download",
            &s.url(&key),
            dest.to_str().unwrap(),
            "--concurrency",
            "1",
        ]);
        seams.hold(&mut cmd, "dlpart", &[1]);
        let mut child = Running::spawn(&mut cmd, "tally download (held after part 1)");
        seams.reached(&mut child, "dlpart", 1);
        child.signal(sig);
        let out = child.finish(TALLY_BOUND);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "SIG{sig}: {err}");
        assert!(err.contains("tally: error: interrupted"), "SIG{sig}: {err}");
        assert!(!dest.exists(), "nothing renamed");
        assert!(
            dir.path().join(format!("out{n}\\tally-journal")).exists(),
            "journal kept"
        );
        assert!(
            !dir.path().join(format!("out{n}\\tally-lock")).exists(),
            "lock gone"
        );
        let out = s.tally(["download", &s.url(&key), dest.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(json_report(&out)["parts_resumed"], 1);
        assert_eq!(sha(&std::fs::read(&dest).unwrap()), sha(&want));
    }
}

#[test]
fn keys_with_control_characters_are_listed_and_printed_escaped() {
    let s = garage();
    let dir = s.temp_dir();
    let prefix = unique("hostile/ctl");
    let f = dir.path().join("src");
    std::fs::write(&f, b"control").unwrap();
    for k in ["a\u{1}b", "esc\u{1b}[31mred", "new\nline"] {
        s.aws([
            "s3api",
            "put-object",
            "--bucket",
            &s.bucket,
            "--key",
            &format!("{prefix}/{k}"),
            "--body",
            f.to_str().unwrap(),
        ]);
    }
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = s.tally([
        "download",
        &s.url(&format!("{prefix}/")),
        dest.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "the listing holds every key: {err}");
    for k in ["a\u{1}b", "esc\u{1b}[31mred", "new\nline"] {
        assert_eq!(std::fs::read(dest.join(k)).unwrap(), b"control", "{k:?}");
    }
    // The reports on standard output too: the tree's summary, and one object's download and
    // verify, each naming the key escaped.
    let raw = |text: &str| text.contains('\u{1b}') || text.contains('\u{1}');
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!raw(&summary), "{summary:?}");
    for k in ["esc\u{1b}[31mred", "new\nline"] {
        let url = s.url(&format!("{prefix}/{k}"));
        let one = dir.path().join("one");
        let _ = std::fs::remove_file(&one);
        let down = s.tally(["download", &url, one.to_str().unwrap()]);
        let ver = s.tally(["verify", one.to_str().unwrap(), &url]);
        for o in [&down, &ver] {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(o.status.success(), "{}", stderr(o));
            assert!(!raw(&text), "{text:?}");
            assert_eq!(
                text.lines()
                    .next()
                    .map(|l| l.contains(&k.escape_default().to_string())),
                Some(true),
                "the first line names the key escaped: {text:?}"
            );
        }
    }
    // Printed escaped: a failure line for each (DEST exists and differs) stays one line, raw
    // control characters never reach the terminal.
    for k in ["a\u{1}b", "esc\u{1b}[31mred", "new\nline"] {
        std::fs::write(dest.join(k), b"other").unwrap();
    }
    let out = s.tally([
        "download",
        &s.url(&format!("{prefix}/")),
        dest.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{1}'), "{err:?}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("tally: FAILED"))
            .count(),
        3,
        "{err}"
    );
    assert!(err.contains("new\\nline"), "{err}");
}

#[test]
fn a_download_with_concurrency_0_is_refused() {
    let s = garage();
    let dir = s.temp_dir();
    let out = s.tally([
        "download",
        &s.url("any"),
        dir.path().join("x").to_str().unwrap(),
        "--concurrency",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("concurrency"), "{}", stderr(&out));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// A small deterministic generator (xorshift64*), so a seed replays a case exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Keys a prefix may hold: plain, named like tally's temporaries (old and new forms), nesting,
/// odd characters.
const KEY_FORMS: &[&str] = &[
    "x",
    "x.tally-partial",
    "x.tally-partial.journal",
    "x.journal.tmp",
    "x\\tally-partial",
    "x\\tally-journal",
    "x\\tally-lock",
    "d",
    "d/inner",
    "d/d",
    "d/inner/deep",
    "d\\tally-partial",
    "clip.mov",
    "clip.mov.tmp",
    "sp ace",
    "ünï cødé",
    "a+b%20c?#&=",
    ".hidden",
    "x/x",
];

/// Names a case may place in DEST before the download, each a link to something outside.
const PLACED: &[&str] = &[
    "x\\tally-partial",
    "x\\tally-journal",
    "x\\tally-lock",
    "d\\tally-partial",
    "clip.mov\\tally-partial",
    "clip.mov",
    "x",
    "d",
];

/// Distinct prefixes the seeded cases draw from: seed N downloads prefix N % PREFIXES (its keys
/// and sizes drawn from N % PREFIXES), with links, concurrency and a fresh DEST drawn from N. Each
/// prefix is uploaded once per test process, so a soak of many cases spends its time downloading.
const PREFIXES: u64 = 64;

/// The objects of prefix `n`, uploaded on first use: (prefix, key below it -> bytes).
fn prefix_of(s: &Server, n: u64) -> (String, BTreeMap<String, Vec<u8>>) {
    use std::sync::{Mutex, OnceLock};
    type Made = BTreeMap<u64, (String, BTreeMap<String, Vec<u8>>)>;
    static MADE: OnceLock<Mutex<Made>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    if let Some(p) = made.lock().unwrap().get(&n) {
        return p.clone();
    }
    let mut rng = Rng(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = s.temp_dir();
    let prefix = unique(&format!("hostile/prefix-{n}"));
    let count = 2 + rng.below(5);
    let mut keys: Vec<&str> = Vec::new();
    while keys.len() < count {
        let k = KEY_FORMS[rng.below(KEY_FORMS.len())];
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut objects = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let len = match rng.below(8) {
            0 => 0,
            1 => 6 * MIB as usize + rng.below(4096),
            _ => 1 + rng.below(200_000),
        };
        let b = body(len, n ^ ((i as u64 + 1) << 32));
        put_bytes(s, dir.path(), &format!("{prefix}/{k}"), &b, i);
        objects.insert(k.to_string(), b);
    }
    let p = (prefix, objects);
    made.lock().unwrap().insert(n, p.clone());
    p
}

/// One seeded case: DEST with links placed in it, the download of one prefix, the checks.
fn one_case(s: &Server, seed: u64) {
    let (prefix, objects) = prefix_of(s, seed % PREFIXES);
    let keys: Vec<&String> = objects.keys().collect();
    let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let dir = s.temp_dir();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("folder")).unwrap();
    std::fs::write(outside.join("victim"), b"outside, must stay").unwrap();
    std::fs::write(outside.join("folder/f"), b"also outside").unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    for name in PLACED {
        if rng.chance(3) {
            let to = if *name == "d" {
                outside.join("folder")
            } else {
                outside.join("victim")
            };
            symlink(&to, dest.join(name)).unwrap();
        }
    }
    let before = snapshot(dir.path(), &dest);
    let placed = snapshot(&dest, Path::new("/nonexistent"));
    let concurrency = (1 + rng.below(3)).to_string();
    let url = s.url(&format!("{prefix}/"));
    let out = s.tally([
        "download",
        &url,
        dest.to_str().unwrap(),
        "--concurrency",
        &concurrency,
        "--json",
    ]);
    let what = format!(
        "seed {seed} (replay: TALLY_HOSTILE_SEED={seed}), keys {keys:?}, placed {:?}, exit {:?}\n{}",
        placed.keys().collect::<Vec<_>>(),
        out.status.code(),
        stderr(&out)
    );
    assert!(matches!(out.status.code(), Some(0 | 2)), "{what}");
    assert_eq!(
        snapshot(dir.path(), &dest),
        before,
        "something outside DEST changed: {what}"
    );
    // Every file claimed is the object, byte for byte; every regular file at a key's name is
    // that object or was there before.
    for line in file_lines(&out) {
        let action = line["action"].as_str().unwrap();
        if action == "downloaded" || action == "skipped" {
            let key = line["key"].as_str().unwrap();
            let rel = &key[prefix.len() + 1..];
            let p = Path::new(line["path"].as_str().unwrap());
            assert!(
                std::fs::symlink_metadata(p).unwrap().is_file(),
                "{rel} claimed but not a regular file: {what}"
            );
            assert_eq!(
                sha(&std::fs::read(p).unwrap()),
                sha(&objects[rel]),
                "{rel} claimed {action} but differs: {what}"
            );
        }
    }
    for (rel, b) in &objects {
        let p = dest.join(rel);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            assert_eq!(
                sha(&std::fs::read(&p).unwrap()),
                sha(b),
                "{rel} holds other bytes: {what}"
            );
        }
    }
    if out.status.success() {
        for (rel, b) in &objects {
            assert_eq!(
                sha(&std::fs::read(dest.join(rel)).unwrap()),
                sha(b),
                "{what}"
            );
        }
    }
    // Nothing of tally's is left, but what the case placed itself.
    for t in temporaries(&dest) {
        assert!(
            placed.contains_key(Path::new(&t)),
            "{t} left behind: {what}"
        );
    }
}

#[test]
fn seeded_hostile_prefixes_never_write_outside_dest_or_claim_a_wrong_file() {
    let s = garage();
    let (first, cases) = match std::env::var("TALLY_HOSTILE_SEED") {
        Ok(v) => (v.parse::<u64>().expect("TALLY_HOSTILE_SEED is a number"), 1),
        Err(_) => {
            let first = std::env::var("TALLY_HOSTILE_FIRST_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        % 1_000_000
                        * 1000
                });
            let cases = std::env::var("TALLY_HOSTILE_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(12);
            (first, cases)
        }
    };
    eprintln!(
        "hostile: seeds {first}..{} (replay one: TALLY_HOSTILE_SEED=N)",
        first + cases
    );
    for seed in first..first + cases {
        eprintln!("hostile: seed {seed}");
        one_case(s, seed);
    }
    eprintln!("hostile: {cases} cases passed");
}

#[test]
fn an_edited_md5_state_is_refused_and_removing_it_as_told_gives_the_right_md5() {
    let s = garage();
    let dir = s.temp_dir();
    let key = unique("hostile/md5state");
    let want = body(20 * MIB as usize + 3, 95);
    put_bytes(s, dir.path(), &key, &want, 0);
    let url = s.url(&key);
    let state = dir.path().join("md5.state");
    let st = state.to_str().unwrap();
    // Stopped by the time limit after its first chunk (held at the seam until the limit passed).
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(["md5", &url, "--state", st, "--time-limit", "2s", "--json"]);
    seams.hold(&mut cmd, "chunk", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally md5 --time-limit 2s");
    let held = seams.reached(&mut child, "chunk", 1);
    std::thread::sleep(
        (held + std::time::Duration::from_secs(2))
            .saturating_duration_since(std::time::Instant::now()),
    );
    seams.go("chunk", 1);
    let out = child.finish(TALLY_BOUND);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // 8 MiB added to the saved offset by hand.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let offset = v["offset"].as_u64().unwrap();
    v["offset"] = (offset + 8 * MIB).into();
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = s.tally(["md5", &url, "--state", st]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("does not match its content") && err.contains("remove the file to start over"),
        "{err}"
    );
    // The remedy named: remove it; the MD5 is then the file's.
    std::fs::remove_file(&state).unwrap();
    let out = s.tally(["md5", &url, "--state", st, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["md5"], hex(&md5::Md5::digest(&want)));
}

#[test]
fn a_damaged_manifest_header_is_not_a_dead_end() {
    let s = garage();
    let dir = s.temp_dir();
    let src = dir.path().join("src.bin");
    let want = body(4 * 5 * MIB as usize + 11, 96);
    std::fs::write(&src, &want).unwrap();
    for remedy in ["restart", "abort"] {
        let key = unique(&format!("hostile/manifest-{remedy}"));
        let url = s.url(&key);
        let manifest = dir.path().join(format!("{remedy}.manifest"));
        let args = [
            "upload",
            src.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--concurrency",
            "1",
            "--manifest",
            manifest.to_str().unwrap(),
        ];
        let seams = Seams::new(&dir.path().join(format!("seams-{remedy}")));
        let mut cmd = s.command();
        cmd.args(args);
        seams.hold(&mut cmd, "part", &[2]);
        let mut child = Running::spawn(&mut cmd, "tally upload (held before part 2)");
        seams.reached(&mut child, "part", 2);
        child.kill9();
        // One character of the header changed: its CRC fails, its upload id still reads.
        let text = std::fs::read_to_string(&manifest).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        let id = first
            .split("\"upload_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        let damaged = first.replacen("\"format\":1", "\"format\":7", 1);
        assert_ne!(damaged, first);
        std::fs::write(&manifest, format!("{damaged}\n{rest}")).unwrap();
        let out = s.tally(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--restart") && err.contains("tally abort"),
            "{err}"
        );
        if remedy == "restart" {
            let mut again = args.to_vec();
            again.push("--restart");
            let out = s.tally(&again);
            assert!(out.status.success(), "--restart works: {}", stderr(&out));
            assert_eq!(s.download_sha256(&key), sha(&want));
            assert!(!manifest.exists(), "the manifest is gone after the upload");
            s.abort_uploads(&key);
        } else {
            let out = s.tally(["abort", &url, "--upload-id", &id]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                !manifest.exists(),
                "tally abort removed the damaged manifest"
            );
            assert_eq!(s.uploads_in_progress(&key), 0);
            let out = s.tally(args);
            assert!(
                out.status.success(),
                "then the upload runs: {}",
                stderr(&out)
            );
        }
    }
}
