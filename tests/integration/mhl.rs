//! ASC MHL in and out on Garage, checked with the ASC's reference tool `ascmhl` 1.2 (installed by
//! `scripts/tools` into `$TALLY_TOOLS/bin`): a history made by `ascmhl create` is checked before
//! each file is sent, `--mhl` adds a `transfer` generation that `ascmhl-debug verify`, the XSDs and
//! `ascmhl info` accept, here and after the tree is read back with the AWS CLI; a changed byte, a
//! missing and a new file are reported as such; a modified generation stops the upload.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

const ASCMHL_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the reference tool (`ascmhl` or `ascmhl-debug`); the test fails clearly when it is not
/// installed.
fn ascmhl(tool: &str, args: &[&str]) -> Output {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "{tool} is not on PATH: run scripts/tools and put its bin directory first on PATH"
    );
    run_bounded(
        Command::new(tool).args(args),
        ASCMHL_BOUND,
        &format!("{tool} {}", args.join(" ")),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mhl")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// A card: two clips (one over a 5 MiB part), a sound file whose name needs XML escaping, a
/// note; then `ascmhl create -h xxh64` as an offload tool would.
fn card(root: &Path) {
    std::fs::create_dir_all(root.join("Clips")).unwrap();
    std::fs::create_dir_all(root.join("Sound & Notes")).unwrap();
    std::fs::write(root.join("Clips/c1.mov"), b"hello world").unwrap();
    random_file(&root.join("Clips"), "c2.mov", 6 * MIB + 123, 7);
    random_file(&root.join("Sound & Notes"), "t<1>.wav", 200_000, 8);
    std::fs::write(root.join("readme.txt"), b"shot on A cam\n").unwrap();
    let out = ascmhl("ascmhl", &["create", "-h", "xxh64", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "ascmhl create: {}", text(&out));
}

/// The generation files in `root/ascmhl/`, sorted.
fn generations(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("ascmhl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mhl"))
        .collect();
    v.sort();
    v
}

/// The `--json` lines: file lines by `rel` (or path), and the summary.
fn lines(
    out: &Output,
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    serde_json::Value,
) {
    let mut files = std::collections::BTreeMap::new();
    let mut summary = None;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nstderr: {}", stderr(out)));
        if v["kind"] == "summary" {
            summary = Some(v.clone());
        } else {
            let k = v["rel"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(str::to_owned);
            files.insert(
                k.unwrap_or_else(|| v["path"].as_str().unwrap().to_owned()),
                v,
            );
        }
    }
    (
        files,
        summary.unwrap_or_else(|| panic!("no summary: {}", stderr(out))),
    )
}

/// The action the generation `xml` records for the value `value` of `format`.
fn action_of<'a>(xml: &'a str, format: &str, value: &str) -> Option<&'a str> {
    let line = xml.lines().find(|l| {
        l.trim_start().starts_with(&format!("<{format} "))
            && l.contains(&format!(">{value}</{format}>"))
    })?;
    line.split("action=\"").nth(1)?.split('"').next()
}

fn upload(s: &Server, root: &Path, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "upload",
        root.to_str().unwrap(),
        url,
        "--part-size",
        "5MiB",
        "--json",
    ];
    args.extend_from_slice(extra);
    s.tally(args)
}

#[test]
fn a_transfer_generation_passes_the_reference_tool_here_and_after_a_download() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("A001");
    card(&root);
    let prefix = unique("mhl/ok") + "/";
    let url = s.url(&prefix);

    let out = upload(s, &root, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (files, summary) = lines(&out);
    for rel in [
        "Clips/c1.mov",
        "Clips/c2.mov",
        "Sound & Notes/t<1>.wav",
        "readme.txt",
    ] {
        assert_eq!(files[rel]["action"], "uploaded", "{rel}: {}", files[rel]);
        assert_eq!(files[rel]["mhl"], "verified", "{rel}: {}", files[rel]);
    }
    let m = &summary["mhl"];
    assert_eq!(m["verified"], 4, "{m}");
    assert_eq!(
        (
            m["new"].as_u64(),
            m["mismatched"].as_u64(),
            m["missing"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );

    // The source now has tally's generation 0002 in its chain.
    let gens = generations(&root);
    assert_eq!(gens.len(), 2, "{gens:?}");
    let name = gens[1].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("0002_A001_") && name.ends_with("Z.mhl"),
        "{name}"
    );
    assert_eq!(m["generation"], name.as_str());
    let xml = std::fs::read_to_string(&gens[1]).unwrap();
    assert!(xml.contains("<process>transfer</process>"), "{xml}");
    assert!(
        xml.contains(&format!("<location>{url}</location>")),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<key>{prefix}Clips/c2.mov</key>")),
        "{xml}"
    );
    assert!(xml.contains("Sound &amp; Notes/t&lt;1&gt;.wav"), "{xml}");
    // Each file's xxh64 as the reference tool computes it, recorded as verified.
    let c2 = ascmhl(
        "ascmhl-debug",
        &[
            "hash",
            "-h",
            "xxh64",
            root.join("Clips/c2.mov").to_str().unwrap(),
        ],
    );
    let c2 = text(&c2).trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        action_of(&xml, "xxh64", &c2),
        Some("verified"),
        "c2's xxh64 {c2}: {xml}"
    );

    // The chain lists it with its C4 as the reference tool computes it.
    let c4 = ascmhl(
        "ascmhl-debug",
        &["hash", "-h", "c4", gens[1].to_str().unwrap()],
    );
    let c4 = text(&c4).trim().rsplit(' ').next().unwrap().to_owned();
    let chain_xml = std::fs::read_to_string(root.join("ascmhl/ascmhl_chain.xml")).unwrap();
    let ours = chain_xml
        .split("<hashlist sequencenr=\"2\">")
        .nth(1)
        .unwrap_or_default();
    assert!(
        ours.contains(&format!("<path>{name}</path>")) && ours.contains(&format!("<c4>{c4}</c4>")),
        "generation 2 with c4 {c4} in the chain: {chain_xml}"
    );
    let r = root.to_str().unwrap();
    let v = ascmhl("ascmhl-debug", &["verify", r]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "ascmhl-debug verify on the source: {}",
        text(&v)
    );
    let x = ascmhl(
        "ascmhl-debug",
        &[
            "xsd-schema-check",
            "-xsd",
            &fixture("ASCMHL.xsd"),
            gens[1].to_str().unwrap(),
        ],
    );
    assert_eq!(x.status.code(), Some(0), "XSD: {}", text(&x));
    let chain = root.join("ascmhl/ascmhl_chain.xml");
    let x = ascmhl(
        "ascmhl-debug",
        &[
            "xsd-schema-check",
            "-df",
            "-xsd",
            &fixture("ASCMHLDirectory__combined.xsd"),
            chain.to_str().unwrap(),
        ],
    );
    assert_eq!(x.status.code(), Some(0), "chain XSD: {}", text(&x));
    let info = ascmhl("ascmhl", &["info", "-v", r]);
    assert_eq!(info.status.code(), Some(0), "{}", text(&info));
    let info = text(&info);
    let ours = info.split("Generation 2").nth(1).unwrap_or_default();
    assert!(
        ours.contains(&format!("tally {}", env!("CARGO_PKG_VERSION")))
            && ours.contains(&url)
            && ours.contains("ProcessInfo: transfer"),
        "ascmhl info lists tally's generation: {info}"
    );

    // Read back with the AWS CLI: the folder, its ascmhl/ included, passes the reference check.
    let down = dir.path().join("down/A001");
    s.aws(["s3", "sync", "--quiet", &url, down.to_str().unwrap()]);
    assert_eq!(
        generations(&down).len(),
        2,
        "the generation was uploaded with the tree"
    );
    let v = ascmhl("ascmhl-debug", &["verify", down.to_str().unwrap()]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "ascmhl-debug verify on the download: {}",
        text(&v)
    );
}

#[test]
fn a_changed_byte_is_not_uploaded_and_missing_and_new_files_are_reported() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("A002");
    card(&root);
    let c2 = root.join("Clips/c2.mov");
    let hash = |p: &Path| {
        let o = ascmhl(
            "ascmhl-debug",
            &["hash", "-h", "xxh64", p.to_str().unwrap()],
        );
        text(&o).trim().rsplit(' ').next().unwrap().to_owned()
    };
    let before = hash(&c2);
    // One byte changed in place (same size), a file gone, a file added.
    let mut bytes = std::fs::read(&c2).unwrap();
    bytes[3 * MIB as usize] ^= 0x01;
    std::fs::write(&c2, &bytes).unwrap();
    let after = hash(&c2);
    assert_ne!(before, after);
    // The same for a file sent in one PUT (c2 is multipart: 6 MiB in 5 MiB parts). Both are
    // checked on the upload's own read: the multipart upload is aborted before Complete, the PUT
    // never sent.
    let wav = root.join("Sound & Notes/t<1>.wav");
    let wav_before = hash(&wav);
    let mut bytes = std::fs::read(&wav).unwrap();
    bytes[100_000] ^= 0x01;
    std::fs::write(&wav, &bytes).unwrap();
    let wav_after = hash(&wav);
    std::fs::remove_file(root.join("readme.txt")).unwrap();
    std::fs::write(root.join("Clips/c3.mov"), b"new take").unwrap();
    let prefix = unique("mhl/bad") + "/";
    let url = s.url(&prefix);

    let out = upload(s, &root, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (files, summary) = lines(&out);
    let l = &files["Clips/c2.mov"];
    assert_eq!(
        (l["action"].as_str(), l["mhl"].as_str()),
        (Some("failed"), Some("mismatch")),
        "{l}"
    );
    let reason = l["reason"].as_str().unwrap();
    assert!(
        reason.contains(&before) && reason.contains(&after),
        "both values: {reason}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("FAILED {}", c2.display())) && err.contains(&after),
        "{err}"
    );
    assert!(
        s.head(&format!("{prefix}Clips/c2.mov")).is_none(),
        "the changed file is not in S3"
    );
    assert_eq!(
        s.uploads_in_progress(&format!("{prefix}Clips/c2.mov")),
        0,
        "no multipart upload left open (ListMultipartUploads)"
    );
    let l = &files["Sound & Notes/t<1>.wav"];
    assert_eq!(
        (l["action"].as_str(), l["mhl"].as_str()),
        (Some("failed"), Some("mismatch")),
        "{l}"
    );
    let reason = l["reason"].as_str().unwrap();
    assert!(
        reason.contains(&wav_before) && reason.contains(&wav_after),
        "both values: {reason}"
    );
    assert!(
        s.head(&format!("{prefix}Sound & Notes/t<1>.wav")).is_none(),
        "the changed single-PUT file is not in S3"
    );
    assert!(
        s.head(&format!("{prefix}Clips/c1.mov")).is_some(),
        "the others land"
    );
    let l = &files["Clips/c3.mov"];
    assert_eq!(
        (l["action"].as_str(), l["mhl"].as_str()),
        (Some("uploaded"), Some("new")),
        "{l}"
    );
    assert!(
        err.contains("new (not in the ASC MHL history)") && err.contains("c3.mov"),
        "{err}"
    );
    let l = &files["readme.txt"];
    assert_eq!(
        (l["action"].as_str(), l["mhl"].as_str()),
        (Some("failed"), Some("missing")),
        "{l}"
    );
    assert!(
        err.contains("missing") && err.contains("readme.txt"),
        "{err}"
    );
    let m = &summary["mhl"];
    assert_eq!(
        [&m["verified"], &m["new"], &m["mismatched"], &m["missing"]].map(|v| v.as_u64().unwrap()),
        [1, 1, 2, 1],
        "{m}"
    );
    // The generation records the mismatch as failed and the new file as original.
    let gens = generations(&root);
    assert_eq!(gens.len(), 2, "{gens:?}");
    let xml = std::fs::read_to_string(&gens[1]).unwrap();
    assert_eq!(action_of(&xml, "xxh64", &after), Some("failed"), "{xml}");
    let c3 = hash(&root.join("Clips/c3.mov"));
    assert_eq!(action_of(&xml, "xxh64", &c3), Some("original"), "{xml}");
    let x = ascmhl(
        "ascmhl-debug",
        &[
            "xsd-schema-check",
            "-xsd",
            &fixture("ASCMHL.xsd"),
            gens[1].to_str().unwrap(),
        ],
    );
    assert_eq!(x.status.code(), Some(0), "XSD: {}", text(&x));
    // The reference tool agrees the folder does not match its history.
    let v = ascmhl("ascmhl-debug", &["verify", root.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(11), "{}", text(&v));
}

#[test]
fn a_modified_generation_stops_the_upload_before_anything_is_sent() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("A003");
    card(&root);
    let g = &generations(&root)[0];
    let xml = std::fs::read_to_string(g).unwrap();
    std::fs::write(g, xml.replace("<hostname>", "<hostname>x")).unwrap();
    // The reference tool calls this a modified manifest (exit 31).
    let v = ascmhl("ascmhl-debug", &["verify", root.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(31), "{}", text(&v));
    let prefix = unique("mhl/tampered") + "/";
    let out = upload(s, &root, &s.url(&prefix), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("was modified") && err.contains(g.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let listed = s.aws_output(["s3", "ls", "--recursive", &s.url(&prefix)]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "nothing uploaded"
    );
}

/// A read-only view of a folder (a bind mount remounted read-only, as a write-protected card
/// looks), unmounted when dropped. Needs root, as the test machines run.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn of(src: &Path, at: &Path) -> ReadOnly {
        std::fs::create_dir_all(at).unwrap();
        for args in [
            vec!["--bind", src.to_str().unwrap(), at.to_str().unwrap()],
            vec!["-o", "remount,bind,ro", at.to_str().unwrap()],
        ] {
            let out = run_bounded(Command::new("mount").args(&args), ASCMHL_BOUND, "mount");
            assert!(
                out.status.success(),
                "mount {args:?} failed (this test needs root to mount a read-only view): {}",
                text(&out)
            );
        }
        ReadOnly(at.to_owned())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = run_bounded(Command::new("umount").arg(&self.0), ASCMHL_BOUND, "umount");
    }
}

/// A day folder that can be written holding a card that cannot (a read-only view mounted at
/// `Day/A005`): the card's generation goes to the state directory, and so does the day folder's,
/// which references it, so the source never references a generation it lacks; S3 has both
/// histories whole and the reference tool accepts the tree read back.
#[test]
fn a_read_only_card_in_a_writable_day_folder_keeps_both_generations_out_of_the_source() {
    let s = garage();
    let dir = s.temp_dir();
    let src = dir.path().join("cards/A005");
    card(&src);
    let day = dir.path().join("Day");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("day.txt"), b"day notes\n").unwrap();
    let ro = ReadOnly::of(&src, &day.join("A005"));
    let card_before = generations(&src);
    let prefix = unique("mhl/ro-nested") + "/";
    let url = s.url(&prefix);

    let out = upload(s, &day, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (files, summary) = lines(&out);
    assert_eq!(files["A005/Clips/c1.mov"]["mhl"], "verified", "{files:?}");
    let m = &summary["mhl"];
    assert!(m["source_read_only"].is_string(), "{m}");
    assert!(
        !day.join("ascmhl").exists(),
        "the day folder's history stays out: {m}"
    );
    assert_eq!(generations(&src), card_before, "the card is untouched");
    let nested = m["nested_generations"].as_array().unwrap();
    assert_eq!(nested.len(), 1, "{m}");
    drop(ro);

    let down = dir.path().join("down/Day");
    s.aws(["s3", "sync", "--quiet", &url, down.to_str().unwrap()]);
    assert_eq!(generations(&down).len(), 1, "the day folder's first");
    assert_eq!(
        generations(&down.join("A005")).len(),
        2,
        "the card's and tally's"
    );
    let day_gen = std::fs::read_to_string(&generations(&down)[0]).unwrap();
    assert!(
        day_gen.contains(&format!("<path>{}</path>", nested[0].as_str().unwrap())),
        "{day_gen}"
    );
    let v = ascmhl("ascmhl-debug", &["verify", down.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

#[test]
fn a_read_only_source_is_never_modified_and_its_generation_goes_to_s3_and_the_state_dir() {
    let s = garage();
    let dir = s.temp_dir();
    let src = dir.path().join("card/A004");
    card(&src);
    let ro = ReadOnly::of(&src, &dir.path().join("mnt/A004"));
    assert!(
        std::fs::write(ro.0.join("probe"), b"x").is_err(),
        "the view is read-only"
    );
    let before: Vec<PathBuf> = generations(&src);
    let chain_before = std::fs::read(src.join("ascmhl/ascmhl_chain.xml")).unwrap();
    let prefix = unique("mhl/ro") + "/";
    let url = s.url(&prefix);

    let out = upload(s, &ro.0, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, summary) = lines(&out);
    let m = &summary["mhl"];
    assert!(m["source_read_only"].is_string(), "{m}");
    let written = PathBuf::from(m["written_to"].as_str().unwrap());
    assert!(
        !written.starts_with(&src) && !written.starts_with(&ro.0),
        "{m}"
    );
    let name = m["generation"].as_str().unwrap();
    assert!(
        written.join(name).is_file() && written.join("ascmhl_chain.xml").is_file(),
        "{m}"
    );
    // The source is untouched.
    assert_eq!(generations(&src), before);
    assert_eq!(
        std::fs::read(src.join("ascmhl/ascmhl_chain.xml")).unwrap(),
        chain_before
    );
    drop(ro);
    // S3 has the whole history: the card's generation, tally's, and the chain listing both.
    let down = dir.path().join("down/A004");
    s.aws(["s3", "sync", "--quiet", &url, down.to_str().unwrap()]);
    let got = generations(&down);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].ends_with(name), "{got:?}");
    let v = ascmhl("ascmhl-debug", &["verify", down.to_str().unwrap()]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "ascmhl-debug verify on the download: {}",
        text(&v)
    );
    let info = text(&ascmhl("ascmhl", &["info", "-v", down.to_str().unwrap()]));
    assert!(info.contains("ProcessInfo: transfer"), "{info}");
}

#[test]
fn a_download_and_a_verify_check_the_folder_against_its_history() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("A005");
    card(&root);
    let prefix = unique("mhl/down") + "/";
    let url = s.url(&prefix);
    let out = upload(s, &root, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The whole tree back: every file checked against the history that came with it.
    let down = dir.path().join("down/A005");
    std::fs::create_dir_all(&down).unwrap();
    let out = s.tally(["download", &url, down.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, summary) = lines(&out);
    let m = &summary["mhl"];
    assert_eq!(
        [&m["verified"], &m["new"], &m["mismatched"], &m["missing"]].map(|v| v.as_u64().unwrap()),
        [4, 0, 0, 0],
        "{m}"
    );

    // Another writer replaces one object with other bytes (S3's own checksums agree with the new
    // bytes, so only the history can tell) and deletes another.
    let other = dir.path().join("other.mov");
    std::fs::write(&other, b"not the take").unwrap();
    s.aws([
        "s3",
        "cp",
        "--quiet",
        other.to_str().unwrap(),
        &s.url(&format!("{prefix}Clips/c1.mov")),
    ]);
    s.aws([
        "s3",
        "rm",
        "--quiet",
        &s.url(&format!("{prefix}readme.txt")),
    ]);
    let down2 = dir.path().join("down2/A005");
    std::fs::create_dir_all(&down2).unwrap();
    let out = s.tally(["download", &url, down2.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (files, summary) = lines(&out);
    let c1: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"mhl\":\"mismatch\""))
        .map(str::to_owned)
        .collect();
    assert_eq!(c1.len(), 1, "{c1:?}");
    // The history's xxh64 of "hello world" (the reference tool's test vector) and the new bytes'.
    assert!(
        c1[0].contains("Clips/c1.mov") && c1[0].contains("45ab6734b21e6968"),
        "{c1:?}"
    );
    assert_eq!(files["readme.txt"]["mhl"], "missing", "{files:?}");
    let m = &summary["mhl"];
    assert_eq!(
        (m["mismatched"].as_u64(), m["missing"].as_u64()),
        (Some(1), Some(1)),
        "{m}"
    );

    // `tally verify DIR` on the second download, whose files are S3's bytes: only the history
    // check can fail, and it names c1.
    let out = s.tally(["verify", down2.to_str().unwrap(), &url, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"mhl\":\"mismatch\"") && text.contains("Clips/c1.mov"),
        "{text}"
    );
}

#[test]
fn a_download_with_mhl_adds_a_generation_the_reference_tool_accepts() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("A006");
    card(&root);
    let prefix = unique("mhl/dlgen") + "/";
    let url = s.url(&prefix);
    let out = upload(s, &root, &url, &["--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let down = dir.path().join("down/A006");
    std::fs::create_dir_all(&down).unwrap();
    let out = s.tally(["download", &url, down.to_str().unwrap(), "--json", "--mhl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, summary) = lines(&out);
    let m = &summary["mhl"];
    assert_eq!(m["verified"], 4, "{m}");
    let gens = generations(&down);
    assert_eq!(
        gens.len(),
        3,
        "the card's, the upload's, the download's: {gens:?}"
    );
    let name = gens[2].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("0003_A006_"), "{name}");
    assert_eq!(m["generation"], name, "{m}");
    let xml = std::fs::read_to_string(&gens[2]).unwrap();
    let abs = std::path::absolute(&down).unwrap();
    assert!(
        xml.contains(&format!("<location>{}</location>", abs.display())),
        "{xml}"
    );
    let c1 = "45ab6734b21e6968"; // xxh64 of "hello world" (the reference tool's vector)
    assert_eq!(action_of(&xml, "xxh64", c1), Some("verified"), "{xml}");
    let v = ascmhl("ascmhl-debug", &["verify", down.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    let x = ascmhl(
        "ascmhl-debug",
        &[
            "xsd-schema-check",
            "-xsd",
            &fixture("ASCMHL.xsd"),
            gens[2].to_str().unwrap(),
        ],
    );
    assert_eq!(x.status.code(), Some(0), "XSD: {}", text(&x));
    let info = text(&ascmhl("ascmhl", &["info", "-v", down.to_str().unwrap()]));
    assert!(info.contains("Generation 3"), "{info}");
}
