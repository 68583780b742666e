//! `tally hash DIR` on a real tree (no server): every file's checksum checked against Python's
//! hashlib, the key order, the odd entries and the exit code.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

fn tally(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args);
    run_bounded(&mut cmd, TALLY_BOUND, &format!("tally {args:?}"))
}

/// The tree the tests hash: nested folders, a numbered frame sequence with a gap, a 0-byte
/// sidecar, names with spaces and non-ASCII letters, links to a file and to a directory, a file
/// over one 5 MiB part, a dangling link and a FIFO.
fn tree(root: &Path) {
    for (i, n) in [1, 2, 3, 5].iter().enumerate() {
        std::fs::create_dir_all(root.join("reel1")).unwrap();
        random_file(
            root,
            &format!("reel1/shot_010.{n:06}.dpx"),
            1000 + i as u64,
            *n,
        );
    }
    std::fs::create_dir_all(root.join("reel1/sidecars")).unwrap();
    std::fs::write(root.join("reel1/sidecars/shot_010.xml"), b"").unwrap();
    std::fs::create_dir_all(root.join("Überblick – Tag 2")).unwrap();
    random_file(root, "Überblick – Tag 2/notes final.txt", 333, 9);
    random_file(root, "big.mov", 6 * MIB + 7, 10);
    random_file(root, "a-c", 3, 11);
    std::fs::create_dir_all(root.join("a")).unwrap();
    random_file(root, "a/b", 4, 12);
    symlink("big.mov", root.join("link to big.mov")).unwrap();
    symlink("reel1/sidecars", root.join("sidecars-link")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    let mkfifo = run_bounded(
        Command::new("mkfifo").arg(root.join("fifo")),
        Duration::from_secs(30),
        "mkfifo",
    );
    assert!(mkfifo.status.success());
}

/// What Python's hashlib says an upload with 5 MiB parts and SHA-256 would produce for each of
/// `rels`: (checksum, ETag), computed without tally.
fn python_hashes(root: &Path, rels: &[&str]) -> BTreeMap<String, (String, String)> {
    let script = r#"
import base64, hashlib, json, sys
root, part = sys.argv[1], 5 * 1024 * 1024
out = {}
for rel in sys.argv[2:]:
    data = open(root + "/" + rel, "rb").read()
    if len(data) <= part:
        out[rel] = [base64.b64encode(hashlib.sha256(data).digest()).decode(), hashlib.md5(data).hexdigest()]
    else:
        parts = [data[i:i + part] for i in range(0, len(data), part)]
        sha = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
        md5 = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
        out[rel] = [base64.b64encode(sha).decode() + "-%d" % len(parts), "%s-%d" % (md5, len(parts))]
print(json.dumps(out))
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(root).args(rels);
    let out = run_bounded(&mut cmd, Duration::from_secs(60), "python3 hashlib");
    assert!(out.status.success(), "python3: {}", stderr(&out));
    let v: BTreeMap<String, (String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    v
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON line: {l}: {e}")))
        .collect()
}

#[test]
fn hash_dir_matches_hashlib_in_key_order_and_names_every_odd_entry() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    tree(root);
    let out = tally(&[
        "hash",
        root.to_str().unwrap(),
        "--part-size",
        "5MiB",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a dangling link is a failure: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("tally: error: dangling: a symbolic link to nothing"),
        "{err}"
    );
    assert!(
        err.contains("1 entry of") && err.contains("could not be hashed"),
        "{err}"
    );
    let lines = json_lines(&out);

    let mut expected = vec![
        "reel1/shot_010.000001.dpx",
        "reel1/shot_010.000002.dpx",
        "reel1/shot_010.000003.dpx",
        "reel1/shot_010.000005.dpx",
        "reel1/sidecars/shot_010.xml",
        "Überblick – Tag 2/notes final.txt",
        "big.mov",
        "a-c",
        "a/b",
        "link to big.mov",
        "sidecars-link/shot_010.xml",
    ];
    // S3 lists keys in byte order: that is the order the lines must come in.
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let hashed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["action"] == "hashed").collect();
    let paths: Vec<&str> = hashed.iter().map(|l| l["rel"].as_str().unwrap()).collect();
    assert_eq!(paths, expected);

    let want = python_hashes(root, &expected);
    for l in &hashed {
        let rel = l["rel"].as_str().unwrap();
        let (checksum, etag) = &want[rel];
        assert_eq!(l["checksum"]["value"], checksum.as_str(), "{rel}");
        assert_eq!(l["etag"], etag.as_str(), "{rel}");
        let len = std::fs::metadata(root.join(rel)).unwrap().len();
        assert_eq!(l["size"], len, "{rel}");
    }
    assert_eq!(want["big.mov"].0.rsplit('-').next(), Some("2"), "two parts");

    let skipped: BTreeMap<&str, (&str, bool)> = lines
        .iter()
        .filter(|l| l["code"].is_string())
        .map(|l| {
            (
                l["rel"].as_str().unwrap(),
                (l["code"].as_str().unwrap(), l["action"] == "failed"),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        BTreeMap::from([
            ("dangling", ("broken_symlink", true)),
            ("fifo", ("special", false))
        ])
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    let bytes: u64 = expected
        .iter()
        .map(|r| std::fs::metadata(root.join(r)).unwrap().len())
        .sum();
    assert_eq!(
        (
            &summary["files"],
            &summary["bytes"],
            &summary["ignored"],
            &summary["failed"]
        ),
        (
            &serde_json::json!(expected.len()),
            &serde_json::json!(bytes),
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );
}

#[test]
fn hash_dir_text_groups_the_sequence_and_warnings_alone_exit_0() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    tree(root);
    let r = root.to_str().unwrap();
    // Without the dangling link only warnings remain (the FIFO): exit 0.
    let out = tally(&["hash", r, "--exclude", "dangling"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        text.contains("reel1/shot_010.[000001-000005].dpx  4 files (1 missing)  3.9 KiB  hashed"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("tally: warning: fifo: a FIFO"),
        "{}",
        stderr(&out)
    );

    // Links not followed: each one a warning, nothing under the linked directory.
    let out = tally(&["hash", r, "--no-follow-symlinks", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    let not_followed: Vec<&str> = lines
        .iter()
        .filter(|l| l["code"] == "symlink_not_followed")
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(
        not_followed,
        ["dangling", "link to big.mov", "sidecars-link"]
    );

    // The rsync idiom: every directory, the frames, nothing else.
    let out = tally(&[
        "hash",
        r,
        "--include",
        "*/",
        "--include",
        "*.dpx",
        "--exclude",
        "*",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let paths: Vec<String> = json_lines(&out)
        .iter()
        .filter(|l| l["action"] == "hashed")
        .map(|l| l["rel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "reel1/shot_010.000001.dpx",
            "reel1/shot_010.000002.dpx",
            "reel1/shot_010.000003.dpx",
            "reel1/shot_010.000005.dpx"
        ]
    );
    // The same rules the other way round: `*` matches first, nothing is taken.
    let out = tally(&[
        "hash",
        r,
        "--exclude",
        "*",
        "--include",
        "*/",
        "--include",
        "*.dpx",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "only the summary: {lines:?}");
}

#[test]
fn hash_empty_dir_says_nothing_to_hash_and_bad_patterns_are_one_line() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().to_str().unwrap();
    let out = tally(&["hash", r]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nothing to hash: "));

    let out = tally(&["hash", r, "--exclude", "a["]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tally: error: --exclude 'a[' is not a valid pattern"),
        "{err}"
    );
}
