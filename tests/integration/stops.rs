//! How runs stop: a cause that dooms every file ends a tree with one line (exit 2), files never
//! started are "not started" (never FAILED), and Ctrl-C ends every command with a line saying what
//! is kept and how to go on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A folder of `n` small files (and `big` files of 11 MiB named first in key order).
fn card(dir: &Path, n: usize, big: usize) -> PathBuf {
    let root = dir.join("CARD");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..big {
        random_file(&root, &format!("A{i:03}.mov"), 11 * MIB, 300 + i as u64);
    }
    for i in 0..n {
        random_file(&root, &format!("C{i:04}.mov"), 2000, i as u64);
    }
    root
}

#[test]
fn a_tree_into_a_missing_bucket_stops_with_one_line() {
    let s = garage();
    let dir = s.temp_dir();
    let root = card(dir.path(), 40, 0);
    let out = s.tally([
        "upload",
        root.to_str().unwrap(),
        "s3://no-such-bucket-here/t/",
        "--concurrency",
        "4",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("bucket does not exist"), "{err}");
}

#[test]
fn a_tree_with_refused_credentials_stops_with_one_line() {
    let s = garage();
    let dir = s.temp_dir();
    let root = card(dir.path(), 40, 0);
    let mut cmd = s.command();
    cmd.env("AWS_SECRET_ACCESS_KEY", "f".repeat(64)).args([
        "upload",
        root.to_str().unwrap(),
        &s.url(&unique("stops/creds/")),
        "--concurrency",
        "4",
    ]);
    let out = run_bounded(
        &mut cmd,
        TALLY_BOUND,
        "tally upload DIR (refused credentials)",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("credentials were refused"), "{err}");
}

#[test]
fn a_tree_without_any_credentials_stops_with_one_line() {
    let s = garage();
    let dir = s.temp_dir();
    let root = card(dir.path(), 40, 0);
    let mut cmd = s.command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "upload",
            root.to_str().unwrap(),
            &s.url(&unique("stops/nocreds/")),
        ]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload DIR (no credentials)");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("no AWS credentials found"), "{err}");
}

const STOPPING: &str = "tally: stopping";

/// A finished child's exit code, stdout and stderr.
fn outcome(out: std::process::Output) -> (Option<i32>, String, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Ctrl-C while two big files are held at their first part: the other 30 files are "not
/// started", none of them is called FAILED; the summary says so and how to go on.
#[test]
fn ctrl_c_in_a_tree_leaves_files_not_started_not_failed() {
    let s = garage();
    let dir = s.temp_dir();
    let root = card(dir.path(), 30, 2);
    let seams = Seams::new(&dir.path().join("seams"));
    let prefix = format!("{}/", unique("stops/ctrl-c"));
    let mut cmd = s.command();
    cmd.args(["upload", root.to_str().unwrap(), &s.url(&prefix)])
        .args(["--part-size", "5MiB", "--concurrency", "2", "--json"]);
    seams.hold(&mut cmd, "part", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally");
    let reached = dir.path().join("seams/part-1.reached");
    child.wait_for("seam part #1", || reached.exists());
    // Both big files have kept something (their multipart uploads) before the stop: a file
    // stopped before that counts as not started, which would make the count below a race.
    for big in ["A000.mov", "A001.mov"] {
        let key = format!("{prefix}{big}");
        child.wait_for(&format!("the upload of {key} in S3"), || {
            s.uploads_in_progress(&key) == 1
        });
    }
    child.interrupt();
    child.wait_for_stderr(STOPPING);
    seams.go("part", 1);
    let (code, out, err) = outcome(child.finish(TALLY_BOUND));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.contains("FAILED") && l.contains("C0")),
        "a file never started was called FAILED: {err}"
    );
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "summary")
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    assert_eq!(summary["not_started"].as_u64(), Some(30), "{summary}");
    assert_eq!(summary["complete"], false, "{summary}");
}

/// Ctrl-C during a single-file download: one line saying what is kept and how to go on, exit 2
/// (as documented for an interruption), and the same command finishes it.
#[test]
fn ctrl_c_in_a_download_says_what_is_kept() {
    let s = garage();
    let dir = s.temp_dir();
    let f = random_file(dir.path(), "src.mov", 11 * MIB, 71);
    let key = unique("stops/download");
    s.put(&f, &key, "5MiB");
    let dest = dir.path().join("out.mov");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(["download", &s.url(&key), dest.to_str().unwrap()])
        .args(["--concurrency", "1"]);
    seams.hold(&mut cmd, "dlpart", &[2]);
    let mut child = Running::spawn(&mut cmd, "tally");
    let reached = dir.path().join("seams/dlpart-2.reached");
    child.wait_for("seam dlpart #2", || reached.exists());
    child.interrupt();
    let (code, _, err) = outcome(child.finish(TALLY_BOUND));
    assert_eq!(code, Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("tally: error: interrupted: "), "{err}");
    assert!(last.contains("run the same command again"), "{err}");
    assert!(!dest.exists(), "no file under its final name");
    let out = s.tally(["download", &s.url(&key), dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_sha256(&dest), file_sha256(&f));
}

/// Ctrl-C after the last part was sent, before CompleteMultipartUpload: the upload stops as
/// "stopping" said (exit 2, kept, nothing at the key), and the same command completes it.
#[test]
fn ctrl_c_after_the_last_part_stops_and_the_same_command_completes() {
    let s = garage();
    let dir = s.temp_dir();
    let f = random_file(dir.path(), "src.mov", 11 * MIB, 72);
    let key = unique("stops/complete");
    let seams = Seams::new(&dir.path().join("seams"));
    let upload = |cmd: &mut Command| {
        cmd.args(["upload", f.to_str().unwrap(), &s.url(&key)])
            .args(["--part-size", "5MiB"]);
    };
    let mut cmd = s.command();
    upload(&mut cmd);
    seams.hold(&mut cmd, "complete", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally");
    let reached = dir.path().join("seams/complete-1.reached");
    child.wait_for("seam complete #1", || reached.exists());
    child.interrupt();
    child.wait_for_stderr(STOPPING);
    seams.go("complete", 1);
    let (code, _, err) = outcome(child.finish(TALLY_BOUND));
    assert_eq!(code, Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.contains("run the same command again"), "{err}");
    let head = s.aws_output(["s3api", "head-object", "--bucket", &s.bucket, "--key", &key]);
    assert!(!head.status.success(), "nothing completed at the key");
    let mut again = s.command();
    upload(&mut again);
    let out = run_bounded(&mut again, TALLY_BOUND, "tally upload (again)");
    assert!(out.status.success(), "{}", stderr(&out));
    let back = dir.path().join("back");
    let get = s.aws_output([
        "s3api",
        "get-object",
        "--bucket",
        &s.bucket,
        "--key",
        &key,
        back.to_str().unwrap(),
    ]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(file_sha256(&back), file_sha256(&f));
}

/// `tally md5` without `--state`, stopped: it says nothing is kept and how to keep it.
#[test]
fn md5_without_state_never_claims_a_saved_state() {
    let s = garage();
    let dir = s.temp_dir();
    let f = random_file(dir.path(), "src.mov", 64 * MIB, 72);
    let key = unique("stops/md5");
    s.put(&f, &key, "8MiB");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(["md5", &s.url(&key)]);
    seams.hold(&mut cmd, "chunk", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally");
    let reached = dir.path().join("seams/chunk-1.reached");
    child.wait_for("seam chunk #1", || reached.exists());
    child.interrupt();
    child.wait_for_stderr(STOPPING);
    seams.go("chunk", 1);
    let (code, out, err) = outcome(child.finish(TALLY_BOUND));
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(!out.contains("(none)"), "{out}");
    assert!(out.contains("no --state was given"), "{out}");
}
