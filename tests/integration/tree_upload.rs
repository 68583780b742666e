//! `tally upload DIR s3://BUCKET/PREFIX/` against Garage and LocalStack: a tree round-trips
//! byte-exact (read back by the AWS CLI's `s3 sync`), a second run sends no object bytes, a
//! same-size edit with its mtime restored is caught and only that file sent, kill -9 mid-tree is
//! finished by the same command, and odd entries are reported while the rest lands.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::Output;

use crate::proxy::{Op, Plan, Proxy};
use crate::support::*;

/// The tree every test starts from: nested folders, a numbered frame sequence, a 0-byte sidecar,
/// names with spaces and non-ASCII letters, a symlink to a file, and a file over one 5 MiB part.
/// Returns the files as the upload should see them: relative path -> bytes' SHA-256.
fn media_tree(root: &Path) -> BTreeMap<String, String> {
    std::fs::create_dir_all(root.join("reel1/sub")).unwrap();
    std::fs::create_dir_all(root.join("sound dir")).unwrap();
    for i in 1..=12u64 {
        random_file(
            &root.join("reel1"),
            &format!("shot_010.{i:06}.dpx"),
            40_000 + i * 997,
            i,
        );
    }
    random_file(&root.join("reel1/sub"), "grade.cdl", 3_000, 50);
    random_file(&root.join("sound dir"), "täke 1.wav", 700_000, 51);
    std::fs::write(root.join("sidecar.xml"), b"").unwrap();
    random_file(root, "A001C003.mov", 11 * MIB + 3, 52);
    std::os::unix::fs::symlink("../A001C003.mov", root.join("reel1/link.mov")).unwrap();
    expected(root)
}

/// Every regular file under `root` (links followed) -> SHA-256, by relative path.
fn expected(root: &Path) -> BTreeMap<String, String> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::metadata(&p).unwrap();
            if meta.is_dir() {
                visit(root, &p, out);
            } else if meta.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, file_sha256(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

/// The JSON lines of a `--json` tree run: (file lines by relative path, summary).
fn lines(out: &Output) -> (BTreeMap<String, serde_json::Value>, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = BTreeMap::new();
    let mut summary = None;
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nstderr: {}", stderr(out)));
        if v["kind"] == "summary" {
            summary = Some(v.clone());
        } else {
            let key = match v["rel"].as_str() {
                Some(r) if !r.is_empty() => r.to_owned(),
                _ => v["path"].as_str().unwrap().to_owned(),
            };
            files.insert(key, v);
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no summary line; stderr: {}", stderr(out)));
    (files, summary)
}

fn upload_args(root: &Path, url: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "upload",
        root.to_str().unwrap(),
        url,
        "--part-size",
        "5MiB",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Reads the prefix back with the AWS CLI (`aws s3 sync` into an empty folder) and compares every
/// file, and that nothing else is there.
fn assert_round_trip(s: &Server, prefix: &str, want: &BTreeMap<String, String>, what: &str) {
    let dir = s.temp_dir();
    let down = dir.path().join("down");
    s.aws([
        "s3",
        "sync",
        "--quiet",
        &s.url(prefix),
        down.to_str().unwrap(),
    ]);
    let got = expected(&down);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same files, by name"
    );
    for (rel, sha) in want {
        assert_eq!(&got[rel], sha, "{what}: {rel} byte-exact");
    }
}

/// Objects sent (PutObject or UploadPart) through `proxy`, by key (URL-decoded path).
fn sent(proxy: &Proxy, bucket: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in proxy.stats.events() {
        if e.op != Op::Part {
            continue;
        }
        let path = e.target.split_whitespace().nth(1).unwrap_or(&e.target);
        let path = path.split('?').next().unwrap();
        let key = path
            .trim_start_matches('/')
            .trim_start_matches(bucket)
            .trim_start_matches('/');
        *out.entry(percent_decode(key)).or_insert(0) += 1;
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn via(proxy: &Proxy, mut args: Vec<String>) -> Vec<String> {
    args.extend(["--endpoint-url".to_owned(), proxy.url.clone()]);
    args
}

#[test]
fn a_tree_round_trips_and_a_second_run_sends_nothing_but_a_same_size_edit() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let root = dir.path().join("A001");
        let want = media_tree(&root);
        let prefix = unique(&format!("tree/{name}")) + "/";
        let url = s.url(&prefix);

        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let out = s.tally(via(
            &proxy,
            upload_args(&root, &url, &["--metadata", "reel=A001"]),
        ));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let (files, summary) = lines(&out);
        assert_eq!(files.len(), want.len(), "{name}: one line per file");
        // Object settings reach every file of the tree; the content type is guessed per file.
        let head = s
            .head(&format!("{prefix}reel1/shot_010.000003.dpx"))
            .unwrap();
        assert_eq!(head["Metadata"]["reel"], "A001", "{name}: {head}");
        assert_eq!(head["ContentType"], "image/dpx", "{name}: {head}");
        let head = s.head(&format!("{prefix}sound dir/täke 1.wav")).unwrap();
        assert_eq!(head["Metadata"]["reel"], "A001", "{name}: {head}");
        assert_eq!(head["ContentType"], "audio/wav", "{name}: {head}");
        // The listing says the prefix is empty: no file asks its object before it is sent. A
        // single PUT whose reply proved it is read back by a listing; the multipart files (the
        // 11 MiB clip and the link to it) by one HEAD each after completion.
        let heads = proxy
            .stats
            .events()
            .iter()
            .filter(|e| e.op == Op::Head)
            .count();
        assert_eq!(
            heads, 2,
            "{name}: one HEAD per multipart file, after its upload"
        );
        drop(proxy);
        for (rel, l) in &files {
            assert_eq!(l["action"], "uploaded", "{name}: {rel}: {l}");
            assert_eq!(l["key"], format!("{prefix}{rel}"), "{name}: {rel}");
        }
        assert_eq!(summary["uploaded"], want.len(), "{name}: {summary}");
        assert_round_trip(s, &prefix, &want, name);

        // A second run: every file proven and re-hashed; no object bytes sent.
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let out = s.tally(via(&proxy, upload_args(&root, &url, &[])));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let (files, summary) = lines(&out);
        assert!(
            files.values().all(|l| l["action"] == "skipped"),
            "{name}: every file skipped as proven: {files:?}"
        );
        assert_eq!(summary["skipped"], want.len(), "{name}");
        assert!(
            sent(&proxy, &s.bucket).is_empty(),
            "{name}: a re-run sends no object bytes: {:?}",
            sent(&proxy, &s.bucket)
        );
        let heads = proxy
            .stats
            .events()
            .iter()
            .filter(|e| e.op == Op::Head)
            .count();
        // A single-part object is proven by its listed ETag (the MD5 of its bytes) against the
        // file's MD5; a multipart one (the clip and the link to it) by a HEAD and its checksum.
        assert_eq!(heads, 2, "{name}: a HEAD per multipart file proves it");
        drop(proxy);

        // One byte of one frame changed in place, same size, mtime restored: only it is sent.
        let frame = root.join("reel1/shot_010.000007.dpx");
        let mtime = std::fs::metadata(&frame).unwrap().modified().unwrap();
        let mut data = std::fs::read(&frame).unwrap();
        data[1234] ^= 0x20;
        std::fs::write(&frame, &data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&frame)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&frame).unwrap().modified().unwrap(),
            mtime,
            "mtime restored"
        );
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let out = s.tally(via(&proxy, upload_args(&root, &url, &[])));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let (files, _) = lines(&out);
        let edited = "reel1/shot_010.000007.dpx";
        for (rel, l) in &files {
            let want_action = if rel == edited { "uploaded" } else { "skipped" };
            assert_eq!(l["action"], want_action, "{name}: {rel}: {l}");
        }
        let keys: Vec<String> = sent(&proxy, &s.bucket).into_keys().collect();
        assert_eq!(
            keys,
            [format!("{prefix}{edited}")],
            "{name}: only the edited frame sent"
        );
        let mut want = want.clone();
        want.insert(edited.into(), file_sha256(&frame));
        assert_round_trip(s, &prefix, &want, &format!("{name} after the edit"));
    }
}

#[test]
fn kill_9_mid_tree_then_the_same_command_finishes_it_without_resending() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("roll");
    std::fs::create_dir_all(&root).unwrap();
    for (i, n) in ["a1", "a2", "a3"].iter().enumerate() {
        random_file(&root, n, MIB + i as u64, 60 + i as u64);
    }
    // Four parts of 5 MiB: the kill comes while it is half sent.
    random_file(&root, "m_big.bin", 4 * 5 * MIB - 100, 70);
    for (i, n) in ["z1", "z2"].iter().enumerate() {
        random_file(&root, n, MIB + 7 + i as u64, 80 + i as u64);
    }
    let want = expected(&root);
    let prefix = unique("tree/kill") + "/";
    let url = s.url(&prefix);
    // One file and one request at a time, in key order: a1..a3 complete, then the big file's
    // parts; hold before its 3rd part is sent, with 2 parts stored, and kill there. Both runs go
    // through the same proxy: an interrupted upload is kept per endpoint.
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let args = via(&proxy, upload_args(&root, &url, &["--concurrency", "1"]));
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(&args);
    seams.hold(&mut cmd, "part", &[3]);
    let mut child = Running::spawn(&mut cmd, "tally upload (tree, to be killed)");
    seams.reached(&mut child, "part", 3);
    child.kill9();
    for n in ["a1", "a2", "a3"] {
        assert!(
            s.head(&format!("{prefix}{n}")).is_some(),
            "{n} completed before the kill"
        );
    }
    for n in ["m_big.bin", "z1", "z2"] {
        assert!(
            s.head(&format!("{prefix}{n}")).is_none(),
            "{n} not completed before the kill"
        );
    }
    let before = sent(&proxy, &s.bucket);

    let out = s.tally(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (files, _) = lines(&out);
    for n in ["a1", "a2", "a3"] {
        assert_eq!(files[n]["action"], "skipped", "{n}: {}", files[n]);
    }
    assert_eq!(files["m_big.bin"]["action"], "uploaded");
    assert!(
        files["m_big.bin"]["reason"]
            .as_str()
            .unwrap()
            .contains("resumed"),
        "{}",
        files["m_big.bin"]
    );
    let after = sent(&proxy, &s.bucket);
    let now = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let big = format!("{prefix}m_big.bin");
    assert_eq!(
        before.get(&big),
        Some(&2),
        "2 parts were sent before the kill: {before:?}"
    );
    assert_eq!(
        now(&big),
        2,
        "only the 2 parts not stored before the kill are sent: {before:?} then {after:?}"
    );
    for n in ["a1", "a2", "a3"] {
        assert_eq!(now(&format!("{prefix}{n}")), 0, "{n} not sent again");
    }
    assert_eq!(
        s.uploads_in_progress(&big),
        0,
        "the resumed upload was completed"
    );
    assert_round_trip(s, &prefix, &want, "after resuming");
}

#[test]
fn odd_entries_are_reported_and_the_rest_of_the_tree_lands() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("odd");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    random_file(&root, "good.mov", 100_000, 90);
    random_file(&root.join("sub"), "also good.wav", 50_000, 91);
    // A FIFO: a warning. A loop back to the root: a warning. A dangling link: a failure.
    let fifo = root.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo");
    std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("nowhere.mov", root.join("dangling.mov")).unwrap();
    // A name that is not UTF-8: a failure.
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.mov");
    std::fs::write(root.join(bad), b"x").unwrap();
    // A key over 1,024 bytes: a failure.
    let mut deep = root.clone();
    for i in 0..5 {
        deep = deep.join(format!("{i}{}", "d".repeat(240)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("frame.dpx"), b"deep").unwrap();

    let prefix = unique("tree/odd") + "/";
    let out = s.tally(upload_args(&root, &s.url(&prefix), &[]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "failures make exit 2: {}",
        stderr(&out)
    );
    let (files, summary) = lines(&out);
    let by_path = |suffix: &str| -> &serde_json::Value {
        files
            .values()
            .find(|l| l["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("a line for {suffix}: {files:?}"))
    };
    assert_eq!(by_path("pipe")["action"], "ignored");
    assert_eq!(by_path("sub/up")["action"], "ignored");
    assert_eq!(by_path("dangling.mov")["action"], "failed");
    assert_eq!(by_path("caf\u{fffd}.mov")["action"], "failed");
    assert_eq!(by_path("frame.dpx")["action"], "failed");
    assert!(
        by_path("frame.dpx")["reason"]
            .as_str()
            .unwrap()
            .contains("1024"),
        "{}",
        by_path("frame.dpx")
    );
    assert_eq!(summary["failed"], 3, "{summary}");
    assert_eq!(summary["ignored"], 2, "{summary}");
    let err = stderr(&out);
    for name in ["pipe", "dangling.mov", "frame.dpx", "sub/up"] {
        assert!(err.contains(name), "stderr names {name}: {err}");
    }
    // The rest landed, byte-exact.
    for rel in ["good.mov", "sub/also good.wav"] {
        assert_eq!(
            s.download_sha256(&format!("{prefix}{rel}")),
            file_sha256(&root.join(rel)),
            "{rel}"
        );
    }

    // An empty directory: nothing to upload, exit 0.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = s.tally(["upload", empty.to_str().unwrap(), &s.url(&prefix)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to upload"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn verify_dir_names_the_file_and_part_that_differ_and_the_missing_object() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("B002");
    let want = media_tree(&root);
    let prefix = unique("tree/verify") + "/";
    let url = s.url(&prefix);
    let out = s.tally(upload_args(&root, &url, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", root.to_str().unwrap(), url.as_str(), "--json"];
        args.extend_from_slice(extra);
        s.tally(args)
    };
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (files, summary) = lines(&out);
    assert_eq!(files.len(), want.len());
    assert!(
        files.values().all(|l| l["action"] == "identical"),
        "{files:?}"
    );
    assert_eq!(summary["identical"], want.len(), "{summary}");

    // One byte of the multipart file changed (its second 5 MiB part), same size.
    let big = root.join("A001C003.mov");
    let mut data = std::fs::read(&big).unwrap();
    data[(5 * MIB + 10) as usize] ^= 1;
    std::fs::write(&big, &data).unwrap();
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (files, _) = lines(&out);
    // The link to it differs too: it is the same file.
    for rel in ["A001C003.mov", "reel1/link.mov"] {
        assert_eq!(files[rel]["action"], "differs", "{rel}: {}", files[rel]);
        assert!(
            files[rel]["reason"]
                .as_str()
                .unwrap()
                .contains("parts differ: 2"),
            "{rel}: {}",
            files[rel]
        );
    }
    assert_eq!(
        files
            .values()
            .filter(|l| l["action"] == "identical")
            .count(),
        want.len() - 2
    );
    assert!(stderr(&out).contains("DIFFERS"), "{}", stderr(&out));

    // A file whose object is gone: could not verify, exit 2, named.
    s.aws([
        "s3",
        "rm",
        "--quiet",
        &s.url(&format!("{prefix}sidecar.xml")),
    ]);
    let out = verify(&["--exclude", "A001C003.mov", "--exclude", "link.mov"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (files, _) = lines(&out);
    assert_eq!(files["sidecar.xml"]["action"], "failed");
    assert!(
        files["sidecar.xml"]["reason"]
            .as_str()
            .unwrap()
            .contains("no object"),
        "{}",
        files["sidecar.xml"]
    );
    assert!(!files.contains_key("A001C003.mov"), "excluded");
}

#[test]
fn trust_manifest_skips_unchanged_files_unread_and_shows_its_trade_off() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("C003");
    media_tree(&root);
    let prefix = unique("tree/trust") + "/";
    let url = s.url(&prefix);
    // Every run through one proxy: the record, like a manifest, belongs to one endpoint.
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let run = |extra: &[&str]| s.tally(via(&proxy, upload_args(&root, &url, extra)));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = lines(&out).0.len();
    let before = sent(&proxy, &s.bucket);

    // The record of the first run lets a --trust-manifest run skip every file on its word: one
    // HEAD per file (the object still has the recorded ETag), nothing sent.
    let out = run(&["--trust-manifest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (lines_now, _) = lines(&out);
    assert_eq!(lines_now.len(), files);
    for (rel, l) in &lines_now {
        assert_eq!(l["action"], "skipped", "{rel}: {l}");
        assert!(
            l["reason"].as_str().unwrap().contains("trusted the record"),
            "{rel}: {l}"
        );
    }
    assert_eq!(sent(&proxy, &s.bucket), before, "nothing sent");

    // The trade-off it names: a same-size edit with its mtime restored goes unnoticed with
    // --trust-manifest, and the default run (which proves every file again) catches it.
    let frame = root.join("reel1/shot_010.000004.dpx");
    let mtime = std::fs::metadata(&frame).unwrap().modified().unwrap();
    let mut data = std::fs::read(&frame).unwrap();
    data[99] ^= 0x08;
    std::fs::write(&frame, &data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&frame)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = run(&["--trust-manifest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        lines(&out).0["reel1/shot_010.000004.dpx"]["action"],
        "skipped",
        "--trust-manifest trusts size, mtime and inode"
    );
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        lines(&out).0["reel1/shot_010.000004.dpx"]["action"],
        "uploaded",
        "the default run proves the bytes"
    );
    assert_eq!(
        s.download_sha256(&format!("{prefix}reel1/shot_010.000004.dpx")),
        file_sha256(&frame)
    );
}
