//! The S3 boundary under network trouble: a lost CreateMultipartUpload reply leaves no second
//! upload behind; a wrong or silent endpoint ends in one readable line, in bounded time.

use std::sync::atomic::Ordering;

use crate::proxy::{Fault, Force, Op, Plan, Proxy};
use crate::support::*;

#[test]
fn a_lost_create_reply_leaves_exactly_one_upload_and_none_open() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "f", 12 * MIB, 7);
        let key = unique("network/lost-create");
        // The first CreateMultipartUpload reaches the server, and its reply is lost.
        let proxy = Proxy::start(
            &s.endpoint,
            Plan {
                forced: vec![Force {
                    op: Op::Create,
                    nth: 1,
                    fault: Fault::ResetAfter,
                }],
                ..Plan::default()
            },
        );
        let out = s.tally([
            "upload",
            path.to_str().unwrap(),
            &s.url(&key),
            "--endpoint-url",
            &proxy.url,
            "--part-size",
            "5MiB",
            "--quiet",
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            proxy.stats.forced.load(Ordering::SeqCst),
            1,
            "{name}: the Create reply was dropped"
        );
        let creates = proxy
            .stats
            .events()
            .iter()
            .filter(|e| e.op == Op::Create)
            .count();
        assert_eq!(
            creates, 1,
            "{name}: the upload the lost reply created was adopted, not created again"
        );
        assert_eq!(s.uploads_in_progress(&key), 0, "{name}: nothing left open");
        assert_eq!(
            s.download_sha256(&key),
            file_sha256(&path),
            "{name}: the object is the file"
        );
    }
}

/// Runs `tally upload` of a small file to `endpoint` with dummy credentials and no AWS config,
/// killing it if it runs past a generous bound. Returns (exit code, stderr, seconds taken).
fn upload_to(endpoint: &str) -> (Option<i32>, String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = random_file(dir.path(), "f", 3 * MIB, 11);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["upload", path.to_str().unwrap(), "s3://bkt/key"])
        .args(["--endpoint-url", endpoint])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("TALLY_STATE_DIR", dir.path().join("state"))
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTNETWORK")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tally");
    let start = std::time::Instant::now();
    let bound = std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tally was still running after {bound:?} against {endpoint}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err, start.elapsed().as_secs_f64())
}

fn one_error_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        !err.contains("DispatchFailure") && !err.contains(" { "),
        "{err}"
    );
    lines[0]
}

#[test]
fn a_refused_connection_is_one_line_at_once() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (code, err, secs) = upload_to(&endpoint);
    assert_eq!(code, Some(2), "{err}");
    let line = one_error_line(&err);
    assert!(
        line.contains(&endpoint) && line.contains("refused") && line.contains("--endpoint-url"),
        "{line}"
    );
    assert!(
        secs < 20.0,
        "a refused connection is not retried for {secs} s"
    );
}

#[test]
fn an_endpoint_that_never_answers_gives_up_within_the_documented_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        // Accepts connections and holds them open, never answering; bounded by the stop flag and
        // a time limit.
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(200);
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                if let Ok((c, _)) = listener.accept() {
                    held.push(c);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            held.len()
        })
    };
    let (code, err, secs) = upload_to(&endpoint);
    stop.store(true, Ordering::SeqCst);
    let connections = holder.join().unwrap();
    assert!(connections > 0, "tally connected");
    assert_eq!(code, Some(2), "{err}");
    let line = one_error_line(&err);
    assert!(
        line.contains(&endpoint) && line.contains("has not answered any request in 30 s"),
        "{line}"
    );
    // 30 s documented; the margin is for a busy machine, far below 8 attempts x the timeout.
    assert!((29.0..90.0).contains(&secs), "gave up after {secs} s");
}
