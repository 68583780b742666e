//! Bad input met during an upload, and secrets: a file that changes while it is read, a state
//! directory that cannot be written, and credentials that must never be printed.

use crate::proxy::{Plan, Proxy};
use crate::support::*;

/// A file that grows or shrinks while it is uploaded is detected and never completed.
#[test]
fn a_file_changing_during_the_upload_is_never_completed() {
    let s = garage();
    // Hashing runs ahead of the sends by 2 x the pool's threads (exec::hash_ahead). No part is
    // being hashed when the file changes: hashing reads the mapping, and a read past a new end is
    // SIGBUS, the process killed as by kill -9 (a narrow window that source.rs documents; with 8
    // threads hashing parts 3-8 it raced the change here on a busy machine). So the third part
    // and those after it are held before their hashing (and its check): part 2 is hashed before
    // the change and only the check before its send (and, had the kernel's copy of a lost page
    // failed, the check after it) can see it; the parts after it see it before their hashing.
    for threads in ["1", "2", "8"] {
        for (case, change) in [("grows", 1u64 << 20), ("shrinks", 0)] {
            let case = &format!("{case}, {threads} hashing threads");
            let dir = s.temp_dir();
            let path = random_file(dir.path(), "f", 40 * MIB, 71);
            let manifest = dir.path().join("m.manifest");
            let key = unique(&format!("inputs/change-{threads}-{change}"));
            let url = s.url(&key);
            // One part at a time; tally holds before sending part 2 (part 1 is sent and recorded),
            // the file changes, then it goes on.
            let seams = Seams::new(&dir.path().join("seams"));
            let mut cmd = s.command();
            cmd.env("RAYON_NUM_THREADS", threads)
                .args([
                    "upload",
                    path.to_str().unwrap(),
                    &url,
                    "--part-size",
                    "5MiB",
                    "--concurrency",
                    "1",
                ])
                .args(["--manifest", manifest.to_str().unwrap()]);
            seams.hold(&mut cmd, "part", &[2]);
            seams.hold(&mut cmd, "hash", &[3]);
            let mut child = Running::spawn(&mut cmd, &format!("tally upload ({case})"));
            seams.reached(&mut child, "part", 2);
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            if change > 0 {
                f.set_len(40 * MIB + change).unwrap();
            } else {
                f.set_len(30 * MIB).unwrap();
            }
            drop(f);
            seams.go("part", 2);
            seams.go("hash", 3);
            let out = child.finish(TALLY_BOUND);
            assert_eq!(out.status.code(), Some(2), "{case}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains("changed while it was being uploaded"),
                "{case}: {err}"
            );
            let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
            assert_eq!(errors.len(), 1, "{case}: one line: {err}");
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
            s.abort_uploads(&key);
        }
    }
}

#[test]
fn a_state_directory_that_cannot_be_written_stops_before_anything_is_sent() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 6 * MIB, 72);
    let key = unique("inputs/ro");
    // Through a proxy that counts requests: nothing may reach the server.
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let mut cmd = s.command();
    // /proc is read-only for files even to root.
    cmd.env("TALLY_STATE_DIR", "/proc/tally-state").args([
        "upload",
        path.to_str().unwrap(),
        &s.url(&key),
        "--endpoint-url",
        &proxy.url,
        "--part-size",
        "5MiB",
    ]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload (state dir in /proc)");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("manifest") && err.contains("TALLY_STATE_DIR"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        proxy
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request was sent"
    );
    assert_eq!(s.uploads_in_progress(&key), 0, "no upload was started");
}

/// Credentials never appear in anything tally prints, even at trace level, nor in manifests.
#[test]
fn secrets_never_appear_in_logs_reports_errors_or_manifests() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 11 * MIB, 73);
    let manifest = dir.path().join("m.manifest");
    let url = s.url(&unique("inputs/secrets"));
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
        cmd.args([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
        ])
        .args(["--manifest", manifest.to_str().unwrap()])
        .args(extra);
        let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload (secrets)");
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
    cmd.env("AWS_SECRET_ACCESS_KEY", &wrong)
        .env("RUST_LOG", "trace")
        .args([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--json",
        ]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload (wrong secret)");
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!all.contains(&wrong) && !all.contains(s.access_key()));
}
