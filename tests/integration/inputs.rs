//! Bad input met during an upload, and secrets: a file that changes while it is read, a state
//! directory that cannot be written, and credentials that must never be printed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

fn wait_for_records(manifest: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = std::fs::read(manifest)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if lines > n {
            return;
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A file that grows or shrinks while it is uploaded is detected and never completed.
#[test]
fn a_file_changing_during_the_upload_is_never_completed() {
    let s = garage();
    for (case, change) in [("grows", 1u64 << 20), ("shrinks", 0)] {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "f", 40 * MIB, 71);
        let manifest = dir.path().join("m.manifest");
        let key = format!("inputs/{case}");
        let url = s.url(&key);
        let mut cmd = s.command();
        let child = cmd
            .env("TALLY_TEST_PAUSE_PART_MS", "300")
            .args([
                "upload",
                path.to_str().unwrap(),
                &url,
                "--part-size",
                "5MiB",
                "--concurrency",
                "1",
            ])
            .args(["--manifest", manifest.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_records(&manifest, 1);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        if change > 0 {
            f.set_len(40 * MIB + change).unwrap();
        } else {
            f.set_len(30 * MIB).unwrap();
        }
        drop(f);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{case}");
        let err = stderr(&out);
        assert!(
            err.contains("changed while it was being uploaded"),
            "{case}: {err}"
        );
        assert!(s.head(&key).is_none(), "{case}: never completed");
        // The kept upload cannot be resumed with the changed file: it is refused, not mixed.
        let again = s.tally([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        assert_eq!(again.status.code(), Some(2), "{case}");
        assert!(
            stderr(&again).contains("changed since upload"),
            "{case}: {}",
            stderr(&again)
        );
        assert!(s.head(&key).is_none());
    }
}

#[test]
fn a_state_directory_that_cannot_be_written_stops_before_anything_is_sent() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 6 * MIB, 72);
    let mut cmd = s.command();
    // /proc is read-only for files even to root.
    let out = cmd
        .env("TALLY_STATE_DIR", "/proc/tally-state")
        .args([
            "upload",
            path.to_str().unwrap(),
            &s.url("inputs/ro"),
            "--part-size",
            "5MiB",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("manifest") && err.contains("TALLY_STATE_DIR"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        s.uploads_in_progress("inputs/ro"),
        0,
        "no upload was started"
    );
}

/// Credentials never appear in anything tally prints, even at trace level, nor in manifests.
#[test]
fn secrets_never_appear_in_logs_reports_errors_or_manifests() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 11 * MIB, 73);
    let manifest = dir.path().join("m.manifest");
    let url = s.url("inputs/secrets");
    let runs: [(&[&str], Option<&str>); 3] = [
        (&["-vv", "--keep-manifest", "--json"], Some("trace")),
        (&["-v"], Some("debug")),
        (&["-vv"], None),
    ];
    for (extra, rust_log) in runs {
        let mut cmd = s.command();
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        let out = cmd
            .args([
                "upload",
                path.to_str().unwrap(),
                &url,
                "--part-size",
                "5MiB",
            ])
            .args(["--manifest", manifest.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        if rust_log.is_some() {
            assert!(all.len() > 10_000, "the SDK's debug logs were printed");
        }
        assert!(
            !all.contains(s.secret()),
            "the secret key leaked ({rust_log:?})"
        );
        assert!(
            !all.contains(s.access_key()),
            "the access key id leaked ({rust_log:?})"
        );
        if extra.contains(&"--keep-manifest") {
            let text = std::fs::read_to_string(&manifest).unwrap();
            assert!(!text.contains(s.secret()) && !text.contains(s.access_key()));
        }
    }
    // A refused secret: the error names the problem, never the secret.
    let mut cmd = s.command();
    let wrong = "f".repeat(64);
    let out = cmd
        .env("AWS_SECRET_ACCESS_KEY", &wrong)
        .env("RUST_LOG", "trace")
        .args([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!all.contains(&wrong) && !all.contains(s.access_key()));
}
