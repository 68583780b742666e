//! Under faults: through the fault-injecting proxy, uploads end byte-identical or stop resumable
//! (the upload kept, the next run resuming it) and finish on a later run; never an object with
//! wrong bytes. Each test forces the faults it is about at exact requests; random ones come on
//! top from a printed seed that replays exactly (`TALLY_FAULT_SEED` sets it).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::proxy::{Event, Fault, Force, Op, Plan, Proxy};
use crate::support::*;

/// Runs of the same command allowed before the upload must have finished.
const MAX_RUNS: usize = 8;

/// tally's `--timeout` in these tests, in seconds: the attempt timeout of a request without a
/// body (a part's also allows for its body at 64 KiB/s).
const TIMEOUT_S: u64 = 3;

/// One run through the proxy may take this long before it counts as hung.
const RUN_BOUND: Duration = Duration::from_secs(600);

fn upload_via(
    s: &Server,
    proxy: &Proxy,
    path: &Path,
    key: &str,
    manifest: &Path,
    bound: Duration,
) -> Output {
    let timeout = format!("{TIMEOUT_S}s");
    s.tally_within(
        bound,
        [
            "upload",
            path.to_str().unwrap(),
            &s.url(key),
            "--endpoint-url",
            &proxy.url,
            "--part-size",
            "8MiB",
            "--concurrency",
            "8",
            "--timeout",
            &timeout,
            "--manifest",
            manifest.to_str().unwrap(),
            "--json",
        ],
    )
}

fn force(op: Op, nth: u32, fault: Fault) -> Force {
    Force { op, nth, fault }
}

/// How an upload under faults went.
struct Survived {
    runs: usize,
    /// The last run's report.
    report: serde_json::Value,
    /// Exit codes of the runs that stopped.
    stops: Vec<i32>,
    proxy: Proxy,
}

/// Uploads `len` bytes through a proxy following `plan`, running the same command again while it
/// stops (at most [`MAX_RUNS`] times). After every stop: nothing was completed, and the upload
/// was kept for resuming (still in progress on the server, its manifest in place), unless the
/// run stopped before any upload was created. At the end: the object is the file, nothing is
/// left in progress, every forced fault happened, and a run after a kept upload resumed it.
fn survive(name: &str, plan: Plan, len: u64) -> Survived {
    survive_within(name, plan, len, RUN_BOUND)
}

/// [`survive`], each run bounded by `bound`.
fn survive_within(name: &str, plan: Plan, len: u64, bound: Duration) -> Survived {
    let s = garage();
    let seed = plan.seed;
    println!("plan {name}: seed {seed}: {plan:?}");
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", len, seed);
    let key = unique(&format!("faults/{name}-{seed}"));
    let manifest = dir.path().join("m.manifest");
    let forced = plan.forced.len() as u32;
    let proxy = Proxy::start(&s.endpoint, plan);
    let mut kept = false;
    let mut stops = Vec::new();
    for run in 1..=MAX_RUNS {
        let out = upload_via(s, &proxy, &path, &key, &manifest, bound);
        let st = &proxy.stats;
        if out.status.success() {
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                s.download_sha256(&key),
                file_sha256(&path),
                "plan {name} seed {seed}: bytes"
            );
            let head = s.head(&key).unwrap();
            assert_eq!(
                head["ChecksumSHA256"], r["checksum"]["value"],
                "plan {name} seed {seed}"
            );
            assert_eq!(
                head["ContentLength"].as_u64(),
                Some(len),
                "plan {name} seed {seed}: no part missing or twice"
            );
            assert_eq!(s.uploads_in_progress(&key), 0, "plan {name} seed {seed}");
            assert_eq!(
                st.get(&st.forced),
                forced,
                "plan {name} seed {seed}: every forced fault was injected"
            );
            if kept {
                assert_eq!(
                    r["resumed"], true,
                    "plan {name} seed {seed}: run {run} resumed the kept upload"
                );
            }
            println!(
                "plan {name}: finished on run {run}; proxy saw {} requests, {} faults",
                st.get(&st.requests),
                st.get(&st.faults)
            );
            return Survived {
                runs: run,
                report: r,
                stops,
                proxy,
            };
        }
        let err = stderr(&out);
        let code = out.status.code();
        assert!(
            matches!(code, Some(1 | 2)),
            "plan {name} seed {seed}: run {run}: {code:?}: {err}"
        );
        stops.push(code.unwrap());
        let exists = s.head(&key).is_some();
        if exists && completed_unproven(&err) {
            // The Complete went through, then the read-back's requests failed (throttled past
            // the retries: seed 1796607941101606745 of the mixed plan, whose 5% SlowDown hit
            // every attempt of a GetObjectAttributes). The run said so and kept the manifest;
            // the next run must find the upload completed and prove the object.
            assert!(
                manifest.exists(),
                "plan {name} seed {seed}: run {run}: the manifest of a completed, unproven upload is kept"
            );
            assert_eq!(s.uploads_in_progress(&key), 0, "plan {name} seed {seed}");
            println!(
                "plan {name}: run {run} stopped after the Complete: {}",
                err.trim()
            );
            continue;
        }
        if exists {
            // Seen once before the case above was allowed for (seed 1796586450749353262, its
            // requests not recorded then): the requests that could explain it, in arrival order.
            let seen: Vec<String> = st
                .events()
                .iter()
                .filter(|e| e.fault.is_some() || e.op == Op::Complete)
                .map(|e| format!("{:?} {:?} {}", e.op, e.fault, e.target))
                .collect();
            panic!(
                "plan {name} seed {seed}: run {run}: completed although it failed: {err}\n\
                 faults and Completes the proxy saw:\n{}",
                seen.join("\n")
            );
        }
        let in_progress = s.uploads_in_progress(&key);
        if err.contains("kept for resuming") {
            assert_eq!(
                in_progress, 1,
                "plan {name} seed {seed}: run {run}: the kept upload is still in progress: {err}"
            );
            assert!(
                manifest.exists(),
                "plan {name} seed {seed}: run {run}: its manifest is kept"
            );
            kept = true;
        } else {
            assert!(
                err.contains("CreateMultipartUpload") && in_progress == 0 && !kept,
                "plan {name} seed {seed}: run {run}: a stop must keep the upload for resuming \
                 ({in_progress} in progress): {err}"
            );
        }
        println!("plan {name}: run {run} stopped: {}", err.trim());
    }
    panic!("plan {name} seed {seed}: not finished after {MAX_RUNS} runs");
}

/// The plan seed: `TALLY_FAULT_SEED` to replay a printed one, else from the clock.
fn seed() -> u64 {
    if let Some(s) = std::env::var("TALLY_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return s;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn connection_resets_before_during_and_after_bodies() {
    survive(
        "resets",
        Plan {
            seed: seed(),
            reset_before_body: 0.05,
            reset_during_body: 0.05,
            reset_after_body: 0.05,
            forced: vec![
                force(Op::Part, 1, Fault::ResetBefore),
                force(Op::Part, 2, Fault::ResetDuring),
                force(Op::Part, 3, Fault::ResetAfter),
            ],
            ..Plan::default()
        },
        96 * MIB,
    );
}

#[test]
fn slowdown_and_internal_errors() {
    survive(
        "throttled",
        Plan {
            seed: seed(),
            slowdown: 0.15,
            internal_error: 0.05,
            forced: vec![
                force(Op::Part, 1, Fault::SlowDown),
                force(Op::Part, 2, Fault::Internal),
            ],
            ..Plan::default()
        },
        96 * MIB,
    );
}

/// Stalled requests are held open, silent, until the proxy stops: only tally's own timeout gets
/// it out: without a working timeout a run hangs and its bound fails the test. The first
/// CreateMultipartUpload and the first CompleteMultipartUpload stall (nothing else is in flight
/// then); the next request comes only after about `--timeout` (measured at the proxy, which sees
/// the request a little after tally started its clock: the bound allows 1 s for that).
#[test]
fn stalled_responses_past_the_timeout() {
    let done = survive_within(
        "stalls",
        Plan {
            seed: seed(),
            stall: 0.04,
            forced: vec![
                force(Op::Create, 1, Fault::Stall),
                force(Op::Complete, 1, Fault::Stall),
            ],
            ..Plan::default()
        },
        64 * MIB,
        Duration::from_secs(180),
    );
    let events = done.proxy.stats.events();
    let stalled: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.forced && e.fault == Some(Fault::Stall))
        .collect();
    assert_eq!(stalled.len(), 2, "{events:?}");
    for (i, e) in stalled {
        let next = events
            .get(i + 1)
            .unwrap_or_else(|| panic!("nothing came after the stalled {:?}", e.op));
        let waited = next.at.duration_since(e.at);
        println!(
            "stalled {:?}: next request ({:?}) after {waited:?}",
            e.op, next.op
        );
        assert!(
            waited >= Duration::from_secs(TIMEOUT_S - 1),
            "the stalled {:?} was given up after {waited:?}, before the {TIMEOUT_S} s timeout",
            e.op
        );
    }
}

#[test]
fn complete_answered_200_with_an_error_inside() {
    let done = survive(
        "complete-200-error",
        Plan {
            seed: seed(),
            forced: vec![force(Op::Complete, 1, Fault::Complete200Error)],
            ..Plan::default()
        },
        32 * MIB,
    );
    assert_eq!(
        done.runs, 1,
        "the upload is still open: Complete is sent again in the same run"
    );
    assert_eq!(done.report["checks"]["object_checksum"], "matched");
}

#[test]
fn a_flipped_bit_is_rejected_then_resumed() {
    let done = survive(
        "bit-flip",
        Plan {
            seed: seed(),
            forced: vec![force(Op::Part, 1, Fault::FlipBit)],
            ..Plan::default()
        },
        32 * MIB,
    );
    assert_eq!(
        (done.runs, done.stops),
        (2, vec![1]),
        "the corrupted part stops the first run as an integrity failure (exit 1), the second finishes"
    );
    assert_eq!(done.report["resumed"], true);
}

/// Whether a run's error says its upload was completed but the object not read back to prove it
/// (`Outcome::Completed`).
/// The run's stderr, once its exit code says an error (2), not a mismatch (1).
fn failed(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an error, not a mismatch: {err}"
    );
    err
}

fn completed_unproven(err: &str) -> bool {
    err.contains("was completed, but") && err.contains("run the same command again to prove it")
}

/// The Complete goes through, then every request of the read-back is throttled past tally's
/// retries (what two random runs of the mixed plan hit): the run fails saying the upload was
/// completed but not proven, with its manifest kept and nothing in progress; the same command
/// then finds the upload completed, proves the object and exits 0.
#[test]
fn a_read_back_throttled_after_the_complete_says_so_and_the_next_run_proves_it() {
    let s = garage();
    let dir = s.temp_dir();
    let len = 24 * MIB;
    let path = random_file(dir.path(), "f", len, 83);
    let key = unique("faults/read-back-throttled");
    let manifest = dir.path().join("m.manifest");
    // The first request of kind Other is the ListMultipartUploads before the upload; every later
    // one (the read-back's GetObjectAttributes and its retries) is throttled.
    let forced = (2..=64)
        .map(|nth| force(Op::Other, nth, Fault::SlowDown))
        .collect();
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced,
            ..Plan::default()
        },
    );
    let out = upload_via(s, &proxy, &path, &key, &manifest, RUN_BOUND);
    let err = failed(&out);
    assert!(
        completed_unproven(&err),
        "the error says what became of it: {err}"
    );
    assert!(
        err.contains("GetObjectAttributes") && err.contains("SlowDown"),
        "and why: {err}"
    );
    let events = proxy.stats.events();
    let completes = events.iter().filter(|e| e.op == Op::Complete).count();
    assert_eq!(completes, 1, "completed once");
    assert!(s.head(&key).is_some(), "the object exists: {err}");
    assert_eq!(s.uploads_in_progress(&key), 0);
    assert!(manifest.exists(), "the manifest is kept for the next run");

    // The same command (the same endpoint: the manifest names it), no more faults.
    proxy.disarm();
    let before = events.len();
    let out = upload_via(s, &proxy, &path, &key, &manifest, RUN_BOUND);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("had already completed"), "{err}");
    assert_eq!(s.download_sha256(&key), file_sha256(&path));
    let events = proxy.stats.events();
    assert!(
        events[before..]
            .iter()
            .all(|e| e.op != Op::Part && e.op != Op::Complete && e.fault.is_none()),
        "nothing sent again, no fault"
    );
    assert!(!manifest.exists(), "the manifest is settled");
}

/// A file sent in one PutObject whose read-back is refused: the run fails saying the object was
/// written but not proven (exit 2, nothing else to clean up: one PutObject leaves no upload in
/// progress); the same command proves the object by its HEAD and sends nothing. The read-back's
/// HEAD is answered 501, which no retry follows: a throttled one ends the same way after the
/// SDK's backoff (the multipart test above waits that out).
#[test]
fn a_put_whose_read_back_fails_says_the_object_was_written_and_the_next_run_proves_it() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 3 * MIB, 84);
    let key = unique("faults/put-read-back-refused");
    // HEAD 1 is the question before the upload (no object yet); HEAD 2 is the read-back.
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![force(Op::Head, 2, Fault::NotImplemented)],
            ..Plan::default()
        },
    );
    let run = || {
        s.tally_within(
            RUN_BOUND,
            [
                "upload",
                path.to_str().unwrap(),
                &s.url(&key),
                "--endpoint-url",
                &proxy.url,
                "--timeout",
                &format!("{TIMEOUT_S}s"),
            ],
        )
    };
    let out = run();
    let err = failed(&out);
    assert!(
        err.contains(&format!(
            "{} was written (S3 answered the PutObject), but not read back to prove it",
            s.url(&key)
        )) && err.contains("run the same command again to prove it"),
        "the error says what became of the object: {err}"
    );
    assert!(
        err.contains("HeadObject"),
        "and which request failed: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let events = proxy.stats.events();
    let puts = events.iter().filter(|e| e.op == Op::Part).count();
    assert_eq!(puts, 1, "sent once");
    assert!(
        events
            .iter()
            .any(|e| e.fault == Some(Fault::NotImplemented)),
        "the read-back was refused"
    );
    assert_eq!(
        s.download_sha256(&key),
        file_sha256(&path),
        "the object is written"
    );

    // The same command, no more faults: the object is proven, nothing is sent.
    let before = events.len();
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("is already this file"), "{text}");
    let events = proxy.stats.events();
    assert!(
        events[before..]
            .iter()
            .all(|e| e.op != Op::Part && e.fault.is_none()),
        "nothing sent again, no fault"
    );
}

/// The mixed plan of the issue on a 1 GiB upload.
#[test]
fn a_mixed_plan_on_a_gibibyte() {
    survive(
        "mixed",
        Plan {
            seed: seed(),
            reset_before_body: 0.02,
            reset_during_body: 0.02,
            reset_after_body: 0.01,
            slowdown: 0.05,
            forced: vec![
                force(Op::Part, 1, Fault::FlipBit),
                force(Op::Complete, 1, Fault::Complete200Error),
            ],
            ..Plan::default()
        },
        1024 * MIB,
    );
}

#[test]
fn downloads_cut_short_are_read_again() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 40 * MIB, 61);
    let p = path.to_str().unwrap();
    let key = unique("faults/cut");
    s.put(&path, &key, "8MiB");
    let url = s.url(&key);
    // The first GET of each command is cut; random cuts on top hit a range at most twice more.
    let plan = Plan {
        seed: seed(),
        cut_get: 0.3,
        forced: vec![force(Op::Get, 1, Fault::CutGet)],
        ..Plan::default()
    };
    println!("plan cut-get: seed {}", plan.seed);
    let timeout = format!("{TIMEOUT_S}s");
    let proxy = Proxy::start(&s.endpoint, plan.clone());
    let out = s.tally([
        "verify",
        p,
        &url,
        "--download",
        "--endpoint-url",
        &proxy.url,
        "--timeout",
        &timeout,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        proxy.stats.get(&proxy.stats.forced),
        1,
        "verify's first GET was cut"
    );
    let proxy = Proxy::start(&s.endpoint, plan);
    let out = s.tally([
        "md5",
        &url,
        "--json",
        "--endpoint-url",
        &proxy.url,
        "--timeout",
        &timeout,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        proxy.stats.get(&proxy.stats.forced),
        1,
        "md5's first GET was cut"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = run_bounded(
        std::process::Command::new("md5sum").arg(p),
        Duration::from_secs(60),
        "md5sum",
    );
    let want = String::from_utf8(want.stdout).unwrap();
    assert_eq!(r["md5"].as_str(), want.split_whitespace().next());
}

/// Runs many seeded mixed plans for a bounded time (`TALLY_SOAK_SECS`, default 300) and prints how
/// many uploads finished at once, finished after resuming, and failed. `scripts/soak` runs it.
#[test]
#[ignore]
fn soak() {
    let secs: u64 = std::env::var("TALLY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    let (mut first, mut resumed, mut failed) = (0, 0, 0);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n += 1;
        let plan = Plan {
            seed: seed().wrapping_add(n),
            reset_before_body: 0.03,
            reset_during_body: 0.03,
            reset_after_body: 0.02,
            slowdown: 0.05,
            internal_error: 0.02,
            stall: 0.01,
            cut_get: 0.0,
            forced: [
                n.is_multiple_of(3)
                    .then_some(force(Op::Part, 1, Fault::FlipBit)),
                n.is_multiple_of(2)
                    .then_some(force(Op::Complete, 1, Fault::Complete200Error)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        let seed = plan.seed;
        match std::panic::catch_unwind(|| survive("soak", plan, 64 * MIB)) {
            Ok(d) if d.runs == 1 => first += 1,
            Ok(_) => resumed += 1,
            Err(_) => {
                failed += 1;
                println!("soak: FAILED seed {seed}");
            }
        }
    }
    println!(
        "soak: {n} uploads in {secs} s: {first} finished at once, {resumed} after resuming, {failed} failed"
    );
    assert_eq!(failed, 0);
}
