//! README claims that nothing else tests: each test here fails when its claim breaks. Some run
//! the library against the in-memory fake (wrapped in a decorator that tampers with replies or
//! with the manifest's file), the others run the binary against Garage or LocalStack, through the
//! counting proxy where the claim is about what is sent.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use tally::config::UploadConfig;
use tally::error::Error;
use tally::s3::MultipartWrite;
use tally::s3::fake::FakeS3;
use tally::s3::tamper::Tamper;
use tally::vocab::ObjectUrl;
use tally::vocab::{ChecksumAlgorithm, ChecksumType};

use crate::proxy::{Fault, Force, Op, Plan, Proxy};
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// The fake, wrapped.

/// The fake, with one thing going wrong on purpose (hooks of the library's `Tamper`).
type Meddle = Tamper<FakeS3>;

/// A base64 value with its first character changed.
fn tampered(value: &str) -> String {
    let first = if value.starts_with('A') { "B" } else { "A" };
    format!("{first}{}", &value[1..])
}

unsafe extern "C" {
    fn dup2(oldfd: i32, newfd: i32) -> i32;
}

/// Points every descriptor of this process open on `path` at /dev/full; returns how many.
fn jam(path: &Path) -> usize {
    use std::os::fd::AsRawFd as _;
    let path = std::fs::canonicalize(path).unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if target == path {
            // SAFETY: `fd` is open (the manifest's journal holds it for the whole run, and this
            // runs inside one of its part uploads); dup2 only makes it refer to /dev/full.
            let r = unsafe { dup2(full.as_raw_fd(), fd) };
            assert_eq!(r, fd, "dup2 onto the manifest's descriptor");
            n += 1;
        }
    }
    n
}

fn fake_config(dir: &Path, len: u64, alg: ChecksumAlgorithm) -> UploadConfig {
    let file = random_file(dir, "src.bin", len, len ^ 0x5eed);
    let mut cfg = UploadConfig::new(file, "s3://bkt/obj", 5 * MIB, 1, alg).unwrap();
    cfg.resume.manifest = Some(dir.join("m.manifest"));
    cfg.resume.state_dir = tally::state::StateDir::at(dir.join("state"));
    cfg
}

async fn upload_with(
    s3: &Meddle,
    cfg: &UploadConfig,
) -> Result<tally::upload::UploadReport, Error> {
    let cancel = tokio_util::sync::CancellationToken::new();
    tally::upload::upload(s3, cfg, &tally::progress::Silent, &cancel).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_reply_with_another_checksum_is_an_integrity_error() {
    for alg in [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Crc64nvme] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake_config(dir.path(), 3 * 5 * MIB - 7, alg);
        let s3 = Tamper::new(FakeS3::default()).part_reply(|number, reply| {
            if number == 2 {
                reply.checksum = reply.checksum.as_deref().map(tampered);
            }
        });
        let e = upload_with(&s3, &cfg)
            .await
            .expect_err("a part reply with another checksum must fail the upload");
        let text = e.to_string();
        assert!(e.is_integrity(), "{alg}: {text}");
        assert_eq!(e.exit_code(), 1, "{alg}: {text}");
        assert!(
            text.contains("part 2") && text.contains("checksum"),
            "{alg}: {text}"
        );
        assert!(text.contains("kept for resuming"), "{alg}: {text}");
        assert_eq!(s3.inner().completes(), 0, "{alg}: nothing completed");
        assert_eq!(s3.inner().uploads_in_progress(), 1, "{alg}: kept");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_complete_reply_with_another_checksum_is_an_integrity_error() {
    for alg in [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Crc64nvme] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake_config(dir.path(), 2 * 5 * MIB + 3, alg);
        let s3 = Tamper::new(FakeS3::default()).complete_reply(|reply| {
            reply.checksum = reply.checksum.as_deref().map(tampered);
        });
        let e = upload_with(&s3, &cfg)
            .await
            .expect_err("a Complete reply with another checksum must fail the upload");
        let text = e.to_string();
        assert!(e.is_integrity(), "{alg}: {text}");
        assert_eq!(e.exit_code(), 1, "{alg}: {text}");
        assert!(text.contains("object checksum"), "{alg}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_cannot_be_written_after_create_aborts_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fake_config(dir.path(), 2 * 5 * MIB + 1, ChecksumAlgorithm::Sha256);
    // Before the first UploadPart, the manifest is made unwritable: its open file description is
    // swapped for /dev/full, so its next append fails (ENOSPC), as on a full disk.
    let manifest = cfg.resume.manifest.clone().unwrap();
    let jammed = std::sync::atomic::AtomicBool::new(false);
    let s3 = Tamper::new(FakeS3::default()).part_sent(move |_, _| {
        if !jammed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(
                jam(&manifest),
                1,
                "the manifest is open once, for appending"
            );
        }
    });
    let e = upload_with(&s3, &cfg)
        .await
        .expect_err("an upload whose manifest cannot be written must stop");
    let text = e.to_string();
    assert_eq!(
        s3.inner().creates(),
        1,
        "stopped after CreateMultipartUpload"
    );
    assert_eq!(
        s3.inner().uploads_in_progress(),
        0,
        "an upload that cannot be resumed is aborted: {text}"
    );
    assert_eq!(s3.inner().completes(), 0);
    assert!(text.contains("manifest"), "{text}");
    assert!(text.contains("was aborted"), "{text}");
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_all_older_than_aborts_only_the_old_uploads() {
    let fake = FakeS3::default();
    let alg = ChecksumAlgorithm::Sha256;
    let obj = |key: &str| ObjectUrl {
        bucket: "bkt".into(),
        key: key.into(),
    };
    let old = fake
        .create_multipart(
            &obj("p/old"),
            alg,
            ChecksumType::Composite,
            &Default::default(),
        )
        .await
        .unwrap();
    let new = fake
        .create_multipart(
            &obj("p/new"),
            alg,
            ChecksumType::Composite,
            &Default::default(),
        )
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(fake.set_initiated(&old, now - 2 * 3600));
    assert!(fake.set_initiated(&new, now - 60));
    let state = tally::state::StateDir::from_env();
    let aborted = tally::uploads::abort(
        &fake,
        &obj("p/"),
        None,
        Some(Duration::from_secs(3600)),
        &state,
    )
    .await
    .unwrap();
    let ids: Vec<&str> = aborted.iter().map(|a| a.upload_id.as_str()).collect();
    assert_eq!(ids, [old.as_str()], "only the upload older than an hour");
    let left = fake.list_uploads("bkt", "p/").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].upload_id, new);
}

// ---------------------------------------------------------------------------------------------
// The binary against real servers.

/// Intact part records in a manifest (lines after the header).
fn records(manifest: &Path) -> u64 {
    std::fs::read(manifest)
        .map(|b| b.iter().filter(|c| **c == b'\n').count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

#[test]
fn sigterm_keeps_the_upload_and_the_same_command_resumes_it() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 4 * 5 * MIB - 99, 81);
    let key = unique("claims/sigterm");
    let manifest = dir.path().join("m.manifest");
    let url = s.url(&key);
    let args = [
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--concurrency",
        "1",
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(args);
    seams.hold(&mut cmd, "part", &[3]);
    let mut child = Running::spawn(&mut cmd, "tally upload (held at part 3)");
    seams.reached(&mut child, "part", 3);
    child.signal("TERM");
    let out = child.finish(TALLY_BOUND);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tally: error: interrupted;"), "{err}");
    assert!(err.contains("kept for resuming"), "{err}");
    assert_eq!(
        s.uploads_in_progress(&key),
        1,
        "the upload is still in progress"
    );
    assert!(manifest.exists(), "the manifest is kept");
    assert!(records(&manifest) >= 2, "the parts sent are recorded");
    assert!(s.head(&key).is_none(), "nothing completed");

    let mut again = args.to_vec();
    again.push("--json");
    let out = s.tally(&again);
    let r = json_report(&out);
    assert_eq!(r["resumed"], true);
    assert!(r["parts_skipped"].as_u64().unwrap() >= 2, "{r}");
    assert!(stderr(&out).contains("resuming upload"), "{}", stderr(&out));
    assert_eq!(s.download_sha256(&key), file_sha256(&path));
    assert_eq!(s.uploads_in_progress(&key), 0);
    assert!(!manifest.exists());
}

fn via_proxy<'a>(
    proxy: &'a Proxy,
    path: &'a Path,
    url: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![
        "upload",
        path.to_str().unwrap(),
        url,
        "--endpoint-url",
        &proxy.url,
        "--part-size",
        "5MiB",
        "--timeout",
        "10s",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_complete_that_succeeded_with_its_reply_lost_is_confirmed_by_head() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 2 * 5 * MIB + 11, 82);
    let key = unique("claims/complete-lost");
    let url = s.url(&key);
    let manifest = dir.path().join("m.manifest");
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![Force {
                op: Op::Complete,
                nth: 1,
                fault: Fault::ResetAfter,
            }],
            ..Plan::default()
        },
    );
    let args = via_proxy(
        &proxy,
        &path,
        &url,
        &["--manifest", manifest.to_str().unwrap(), "--json"],
    );
    let r = json_report(&s.tally(&args));
    let events = proxy.stats.events();
    let completes = events.iter().filter(|e| e.op == Op::Complete).count();
    assert_eq!(
        completes, 1,
        "one Complete reached the server, and it was not sent again"
    );
    assert_eq!(
        proxy.stats.forced.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let after: Vec<Op> = events
        .iter()
        .skip_while(|e| e.op != Op::Complete)
        .map(|e| e.op)
        .collect();
    assert!(after.contains(&Op::Head), "confirmed with HEAD: {after:?}");
    assert_eq!(r["resumed"], false);
    assert_eq!(s.download_sha256(&key), file_sha256(&path));
    assert_eq!(
        s.head(&key).unwrap()["ChecksumSHA256"],
        r["checksum"]["value"]
    );
    assert_eq!(s.uploads_in_progress(&key), 0);
    assert!(!manifest.exists());
}

/// The `{"error": ..., "exit_code": ...}` object on stdout, checked against the exit code and
/// the one error line on stderr.
fn json_error(out: &std::process::Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON on failure ({e}): {:?}", out));
    assert!(v.is_object(), "a JSON object: {v}");
    assert_eq!(v["kind"], "error", "{v}");
    assert_eq!(v["exit_code"].as_i64().map(|c| c as i32), out.status.code());
    let msg = v["error"].as_str().expect("the error is a string");
    assert!(!msg.is_empty());
    assert!(
        stderr(out).contains(&format!("tally: error: {msg}")),
        "the same message on stderr: {}",
        stderr(out)
    );
    v
}

#[test]
fn json_on_failure_is_the_error_and_the_exit_code() {
    let s = garage();
    let dir = s.temp_dir();
    // Exit 2: a missing file.
    let missing = dir.path().join("no-such-file");
    let out = s.tally([
        "upload",
        missing.to_str().unwrap(),
        &s.url("claims/never"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let v = json_error(&out);
    assert!(v["error"].as_str().unwrap().contains("no-such-file"), "{v}");
    // Exit 1: a part whose bytes were changed on the way, rejected by the server.
    let path = random_file(dir.path(), "f", 6 * MIB, 83);
    let key = unique("claims/json-flip");
    let url = s.url(&key);
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![Force {
                op: Op::Part,
                nth: 1,
                fault: Fault::FlipBit,
            }],
            ..Plan::default()
        },
    );
    let manifest = dir.path().join("m.manifest");
    let out = s.tally(via_proxy(
        &proxy,
        &path,
        &url,
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--json",
            "--concurrency",
            "1",
        ],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    json_error(&out);
    s.abort_uploads(&key);
}

/// Requests the proxy saw after the (last) CompleteMultipartUpload.
fn after_complete(proxy: &Proxy) -> Vec<String> {
    let events = proxy.stats.events();
    let last = events
        .iter()
        .rposition(|e| e.op == Op::Complete)
        .expect("a CompleteMultipartUpload");
    events[last + 1..]
        .iter()
        .map(|e| e.target.clone())
        .collect()
}

#[test]
fn no_verify_reads_nothing_back() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 2 * 5 * MIB + 5, 84);
    let mut seen = Vec::new();
    for flag in [None, Some("--no-verify")] {
        let key = unique(&format!("claims/verify-{}", flag.is_some()));
        let url = s.url(&key);
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let mut extra = vec!["--json"];
        extra.extend(flag);
        let r = json_report(&s.tally(via_proxy(&proxy, &path, &url, &extra)));
        assert_eq!(s.download_sha256(&key), file_sha256(&path));
        seen.push((after_complete(&proxy), r));
    }
    let (default, no_verify) = (&seen[0], &seen[1]);
    assert!(
        !default.0.is_empty(),
        "by default the object is read back after Complete"
    );
    assert!(
        no_verify.0.is_empty(),
        "--no-verify: no request after Complete: {:?}",
        no_verify.0
    );
}

#[test]
fn abort_all_older_than_on_a_server() {
    let s = garage();
    let key = unique("claims/stale");
    let out = s.aws([
        "s3api",
        "create-multipart-upload",
        "--bucket",
        &s.bucket,
        "--key",
        &key,
    ]);
    let created = Instant::now();
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["UploadId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = s.url(&key);
    let young = s.tally(["abort", &url, "--all-older-than", "3650d"]);
    assert!(young.status.success(), "{}", stderr(&young));
    assert_eq!(
        s.uploads_in_progress(&key),
        1,
        "a young upload is left alone"
    );
    // The upload is at least 3 s old (by this machine's clock, which the server shares) before
    // a cut of 1 s is asked for: nothing races.
    while created.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let old = s.tally(["abort", &url, "--all-older-than", "1s"]);
    assert!(old.status.success(), "{}", stderr(&old));
    let text = String::from_utf8_lossy(&old.stdout);
    assert!(text.contains(&id), "{text}");
    assert_eq!(s.uploads_in_progress(&key), 0, "the old upload is aborted");
}

#[test]
fn trust_manifest_from_the_command_line_re_reads_no_part() {
    // Killed with two of three parts in S3; then part 2 changes in place outside the
    // fingerprint's samples (size and time kept). With --trust-manifest the resume does not
    // re-read it: the object gets the old part 2 (the documented trade-off).
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 3 * 5 * MIB, 85);
    let original = std::fs::read(&path).unwrap();
    let key = unique("claims/trust");
    let url = s.url(&key);
    let manifest = dir.path().join("m.manifest");
    let args = [
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--concurrency",
        "1",
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(args);
    seams.hold(&mut cmd, "part", &[3]);
    let mut child = Running::spawn(&mut cmd, "tally upload (held at part 3)");
    seams.reached(&mut child, "part", 3);
    child.wait_for("two part records", || records(&manifest) >= 2);
    child.kill9();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut changed = original.clone();
    changed[6 * MIB as usize] ^= 1; // part 2; the samples are 0..1, 7..8 and 14..15 MiB
    std::fs::write(&path, &changed).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);

    let mut again = args.to_vec();
    again.extend(["--trust-manifest", "--json"]);
    let r = json_report(&s.tally(&again));
    assert_eq!(r["resumed"], true);
    assert_eq!(r["parts_skipped"].as_u64(), Some(2), "{r}");
    let dl = dir.path().join("dl");
    std::fs::write(&dl, &original).unwrap();
    assert_eq!(
        s.download_sha256(&key),
        file_sha256(&dl),
        "the old part 2 was kept, not re-read"
    );
}

fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

#[test]
fn md5_tag_replaces_a_stale_value_and_says_so() {
    let s = localstack();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 7 * MIB + 3, 86);
    let key = unique("claims/retag");
    s.put(&path, &key, "5MiB");
    let stale = "0".repeat(32);
    let tagging =
        format!(r#"{{"TagSet":[{{"Key":"md5","Value":"{stale}"}},{{"Key":"reel","Value":"7"}}]}}"#);
    s.aws([
        "s3api",
        "put-object-tagging",
        "--bucket",
        &s.bucket,
        "--key",
        &key,
        "--tagging",
        &tagging,
    ]);
    let want = md5_hex(&std::fs::read(&path).unwrap());
    let out = s.tally(["md5", &s.url(&key), "--tag", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["md5"], want);
    assert_eq!(
        r["tag"],
        serde_json::json!(["md5", {"replaced": {"old": stale}}]),
        "{r}"
    );
    assert_eq!(
        s.tags(&key),
        vec![
            ("md5".to_owned(), want),
            ("reel".to_owned(), "7".to_owned())
        ]
    );
}

#[test]
fn an_object_replaced_while_md5_reads_it_is_caught() {
    // More pieces than the read-ahead window (16 x 8 MiB): pieces past it are requested after
    // the replacement, with If-Match of the old ETag.
    let s = garage();
    let dir = s.temp_dir();
    let len = 20 * 8 * MIB;
    let first = random_file(dir.path(), "first", len, 87);
    let second = random_file(dir.path(), "second", len, 88);
    let key = unique("claims/replaced");
    let url = s.url(&key);
    s.aws(["s3", "cp", "--quiet", first.to_str().unwrap(), &url]);
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(["md5", &url]);
    seams.hold(&mut cmd, "chunk", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally md5 (held at chunk 1)");
    seams.reached(&mut child, "chunk", 1);
    s.aws(["s3", "cp", "--quiet", second.to_str().unwrap(), &url]);
    seams.go("chunk", 1);
    let out = child.finish(TALLY_BOUND);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("was replaced while it was being read"),
        "{err}"
    );
}

#[test]
fn every_single_put_carries_content_md5() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "small", 100_000, 89);
    let key = unique("claims/single-md5");
    let url = s.url(&key);
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let out = s.tally(via_proxy(&proxy, &path, &url, &["--quiet"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let puts: Vec<_> = proxy
        .stats
        .events()
        .into_iter()
        .filter(|e| e.op == Op::Part)
        .collect();
    assert_eq!(puts.len(), 1, "one PutObject");
    let want = B64.encode(Md5::digest(std::fs::read(&path).unwrap()));
    assert_eq!(
        puts[0].header("content-md5"),
        Some(want.as_str()),
        "Content-MD5 of the body, without --content-md5: {:?}",
        puts[0].headers
    );
}
