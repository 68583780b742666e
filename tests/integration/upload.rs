//! `tally upload` against Garage: byte-exact round trips, checksums and ETags confirmed with the
//! AWS CLI and computed independently here, rejected corrupt parts, and bad input.

use std::net::TcpListener;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tally::config::UploadConfig;
use tally::s3::Connection;
use tally::s3::SdkS3;
use tally::vocab::{ChecksumAlgorithm, Digest};

use crate::support::*;

/// The composite SHA-256 and multipart ETag of `path` cut into `part_size` parts, computed here
/// without tally's code: base64(SHA256(raw part digests))-N and hex(MD5(raw part MD5s))-N.
fn expected_sha256_multipart(path: &Path, part_size: u64) -> (String, String) {
    let data = std::fs::read(path).unwrap();
    let (mut shas, mut md5s) = (Vec::new(), Vec::new());
    let chunks: Vec<&[u8]> = data.chunks(part_size as usize).collect();
    for c in &chunks {
        shas.extend_from_slice(&Sha256::digest(c));
        md5s.extend_from_slice(&Md5::digest(c));
    }
    let n = chunks.len();
    (
        format!("{}-{n}", B64.encode(Sha256::digest(&shas))),
        format!("{}-{n}", hex(&Md5::digest(&md5s))),
    )
}

fn expected_single(path: &Path) -> (String, String) {
    let data = std::fs::read(path).unwrap();
    (B64.encode(Sha256::digest(&data)), hex(&Md5::digest(&data)))
}

/// Uploads with tally and checks, with the AWS CLI: the bytes, the size, and that the checksum and
/// ETag S3 stores are the ones tally reported.
fn round_trip(s: &Server, path: &Path, key: &str, alg: &str, part_size: &str) -> serde_json::Value {
    let out = s.tally([
        "upload",
        path.to_str().unwrap(),
        &s.url(key),
        "--json",
        "--part-size",
        part_size,
        "--checksum",
        alg,
        "--content-md5",
    ]);
    let r = json_report(&out);
    let len = std::fs::metadata(path).unwrap().len();
    assert_eq!(
        s.download_sha256(key),
        file_sha256(path),
        "{key}: bytes differ"
    );
    let head = s.head(key).expect("object exists");
    assert_eq!(head["ContentLength"].as_u64(), Some(len), "{key}");
    assert_eq!(
        head["ETag"].as_str().unwrap().trim_matches('"'),
        r["etag"],
        "{key}: ETag"
    );
    let field = format!("Checksum{}", alg.to_uppercase());
    assert_eq!(head[&field], r["checksum"]["value"], "{key}: {field}");
    assert_eq!(
        head["ChecksumType"], r["checksum"]["type"],
        "{key}: checksum type"
    );
    assert_eq!(r["size"].as_u64(), Some(len));
    assert_eq!(r["key"], key);
    r
}

/// On both servers: 0 B, 1 B, exactly one part, one part + 1 B (a 1-byte last part, which
/// LocalStack checks against EntityTooSmall as AWS does), and many parts.
#[test]
fn sizes_round_trip_byte_exact_with_sha256() {
    for (_, s) in servers() {
        sizes_round_trip_on(s);
    }
}

fn sizes_round_trip_on(s: &Server) {
    let dir = s.temp_dir();
    let part = 5 * MIB;
    for (i, len) in [0, 1, part, part + 1, 4 * part + 7 * 1024 + 3]
        .into_iter()
        .enumerate()
    {
        let path = random_file(dir.path(), &format!("f{i}"), len, 100 + i as u64);
        let key = format!("sizes/{len}");
        let r = round_trip(s, &path, &key, "sha256", "5MiB");
        let (checksum, etag) = if len <= part {
            assert_eq!(r["method"], "single_put");
            expected_single(&path)
        } else {
            assert_eq!(r["method"], "multipart");
            assert_eq!(r["parts"].as_u64(), Some(len.div_ceil(part)));
            assert!(r["upload_id"].is_string());
            expected_sha256_multipart(&path, part)
        };
        assert_eq!(r["checksum"]["value"], checksum, "{len} bytes");
        assert_eq!(r["etag"], etag, "{len} bytes");
        assert_eq!(r["checks"]["object_checksum"], "matched", "{len} bytes");
        assert_eq!(r["checks"]["etag"], "matched", "{len} bytes");
    }
}

/// On both servers: LocalStack checks what AWS checks (full-object CRCs, EntityTooSmall for every
/// part but the last), Garage is a production store.
#[test]
fn every_checksum_algorithm_round_trips() {
    for (_, s) in servers() {
        every_checksum_algorithm_round_trips_on(s);
    }
}

fn every_checksum_algorithm_round_trips_on(s: &Server) {
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "multi", 12 * MIB + 3, 7);
    let small = random_file(dir.path(), "small", 1000, 8);
    for alg in ["sha256", "sha1", "crc32", "crc32c", "crc64nvme"] {
        let r = round_trip(s, &path, &format!("algs/{alg}"), alg, "5MiB");
        assert_eq!(r["parts"].as_u64(), Some(3));
        let kind = if alg == "crc64nvme" {
            "FULL_OBJECT"
        } else {
            "COMPOSITE"
        };
        assert_eq!(r["checksum"]["type"], kind, "{alg}");
        assert_eq!(r["checks"]["object_checksum"], "matched", "{alg}");
        let r = round_trip(s, &small, &format!("algs/small-{alg}"), alg, "5MiB");
        assert_eq!(r["method"], "single_put");
    }
}

/// The real client, sending a corrupted checksum or MD5 with part `part`.
fn corrupt_part<C>(inner: C, part: u32, md5: bool) -> tally::s3::tamper::Tamper<C> {
    tally::s3::tamper::Tamper::new(inner).part_sent(move |number, hash| {
        if number == part {
            if md5 {
                hash.md5.as_mut().expect("--content-md5 computes it")[0] ^= 1;
            } else {
                let mut raw = hash.checksum.as_bytes().to_vec();
                raw[0] ^= 1;
                hash.checksum = Digest::from_bytes(raw);
            }
        }
    })
}

fn sdk_client(s: &Server) -> SdkS3 {
    use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};
    let shared = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            s.access_key(),
            s.secret(),
            None,
            None,
            "test",
        )))
        .build();
    let conn = Connection {
        endpoint_url: Some(s.endpoint.clone()),
        ..Connection::default()
    };
    SdkS3::from_shared_config(&shared, &conn).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_with_a_wrong_checksum_is_rejected_and_reported_as_integrity() {
    for (_, s) in servers() {
        wrong_checksum_rejected_on(s).await;
    }
}

async fn wrong_checksum_rejected_on(s: &Server) {
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 12 * MIB, 9);
    for (alg, md5) in [
        (ChecksumAlgorithm::Sha256, false),
        (ChecksumAlgorithm::Crc32c, false),
        (ChecksumAlgorithm::Crc32c, true),
    ] {
        let key = unique(&format!("corrupt/{alg}-{md5}"));
        let client = corrupt_part(sdk_client(s), 2, md5);
        let mut cfg = UploadConfig::new(path.clone(), &s.url(&key), 5 * MIB, 4, alg).unwrap();
        cfg.content_md5 = md5;
        cfg.resume.manifest = Some(dir.path().join(format!("{alg}-{md5}.manifest")));
        cfg.resume.state_dir = tally::state::StateDir::at(dir.path().join("state"));
        let cancel = tokio_util::sync::CancellationToken::new();
        let err = tally::upload::upload(&client, &cfg, &tally::progress::Silent, &cancel)
            .await
            .expect_err("S3 must reject the corrupted part");
        let text = err.to_string();
        assert!(
            err.is_integrity(),
            "{alg} md5={md5}: not reported as integrity: {text}"
        );
        assert_eq!(err.exit_code(), 1);
        assert!(text.contains("of part 2"), "{text}");
        assert!(text.contains("kept for resuming"), "{text}");
        assert!(s.head(&key).is_none(), "nothing may be completed");
        assert_eq!(
            s.uploads_in_progress(&key),
            1,
            "kept, and named in the error"
        );
        // The same command without the corruption resumes the kept upload and completes it.
        let r = tally::upload::upload(&sdk_client(s), &cfg, &tally::progress::Silent, &cancel)
            .await
            .expect("the resumed upload completes");
        assert!(r.resumed);
        assert_eq!(r.parts_sent + r.parts_skipped, 3);
        assert!(r.parts_sent >= 1, "part 2 was never stored");
        assert_eq!(s.download_sha256(&key), file_sha256(&path));
        assert_eq!(s.uploads_in_progress(&key), 0);
    }
}

/// A listener that no request should reach: proves that bad input is refused before sending.
struct NoTraffic(TcpListener);

impl NoTraffic {
    fn new() -> NoTraffic {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        NoTraffic(l)
    }
    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
    fn assert_untouched(&self) {
        assert!(
            matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "tally connected to S3 although the input was bad"
        );
    }
}

fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("tally: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "ok", 1000, 1);
    let file = file.to_str().unwrap();
    let missing = dir.path().join("missing");
    let d = dir.path().to_str().unwrap();
    let url = s.url("bad");
    let long_key = s.url(&"k".repeat(1025));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![missing.to_str().unwrap(), &url], "no such file"),
        (
            vec![d, &url, "--manifest", "m.manifest"],
            "--manifest names one file's manifest",
        ),
        (vec![file, &url, "--include", "*.mov"], "need a directory"),
        (vec!["/dev/null", &url], "not a regular file"),
        (vec![file, "tally/key"], "not an S3 URL"),
        (vec![file, "s3://"], "bucket name is missing"),
        (vec![file, "s3://UPPER/key"], "not a valid bucket name"),
        (vec![file, &url, "--part-size", "4MiB"], "5MiB to 5GiB"),
        (vec![file, &url, "--part-size", "6GiB"], "5MiB to 5GiB"),
        (
            vec![file, &url, "--part-size", "12parsecs"],
            "unknown size unit",
        ),
        (vec![file, &url, "--concurrency", "0"], "--concurrency"),
        (vec![file, &url, "--concurrency", "100000"], "--concurrency"),
        (vec![file, &url, "--checksum", "md4"], "md4"),
        (vec![file, &long_key], "1,024-byte limit"),
    ];
    for (args, needle) in cases {
        let trap = NoTraffic::new();
        let endpoint = trap.url();
        let mut all = vec!["upload", "--endpoint-url", &endpoint];
        all.extend(args);
        let out = s.tally(&all);
        assert_one_line_error(&out, needle);
        trap.assert_untouched();
    }
}

#[test]
fn an_unreadable_file_is_refused() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "secret", 1000, 2);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o000);
    std::fs::set_permissions(&path, perms).unwrap();
    // Root reads anything: run tally as nobody then (directories on the way are world-readable).
    let root = run_bounded(
        std::process::Command::new("id").arg("-u"),
        std::time::Duration::from_secs(30),
        "id -u",
    )
    .stdout
        == b"0\n";
    let mut parent = dir.path().to_owned();
    while parent.parent().is_some() {
        let mut p = std::fs::metadata(&parent).unwrap().permissions();
        if std::os::unix::fs::PermissionsExt::mode(&p) & 0o005 != 0o005
            && parent.starts_with(std::env::temp_dir())
        {
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
            std::fs::set_permissions(&parent, p).unwrap();
        }
        parent = parent.parent().unwrap().to_owned();
    }
    let trap = NoTraffic::new();
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_tally"),
        ]);
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
    };
    s.apply_env(&mut cmd);
    cmd.args([
        "upload",
        "--endpoint-url",
        &trap.url(),
        path.to_str().unwrap(),
        &s.url(&unique("unreadable")),
    ]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload (unreadable file)");
    assert_one_line_error(&out, "permission denied");
    trap.assert_untouched();
}

#[test]
fn missing_bucket_and_wrong_credentials_fail_clearly() {
    let s = garage();
    let dir = s.temp_dir();
    let small = random_file(dir.path(), "small", 1000, 3);
    let big = random_file(dir.path(), "big", 6 * MIB, 4);
    for f in [&small, &big] {
        let out = s.tally([
            "upload",
            f.to_str().unwrap(),
            "s3://no-such-bucket-here/k",
            "--part-size",
            "5MiB",
        ]);
        assert_one_line_error(&out, "bucket does not exist");
        assert!(stderr(&out).contains("NoSuchBucket"));
    }
    let mut cmd = s.command();
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    cmd.env("AWS_SECRET_ACCESS_KEY", wrong);
    let wrong_key = unique("wrong-creds");
    cmd.args([
        "upload",
        big.to_str().unwrap(),
        &s.url(&wrong_key),
        "--part-size",
        "5MiB",
        "-vv",
    ]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload (wrong credentials)");
    // -vv adds log lines (the identity used, the HEAD refused); the error is still one line.
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tally: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(errors[0].contains("credentials were refused"), "{err}");
    assert!(
        !stderr(&out).contains(wrong),
        "the secret leaked into the output"
    );
    assert!(s.head(&wrong_key).is_none());
}

#[test]
fn json_report_names_everything_a_user_needs() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "r", 11 * MIB, 5);
    let r = json_report(&s.tally([
        "upload",
        path.to_str().unwrap(),
        &s.url("report/"),
        "--json",
        "--part-size",
        "5MiB",
        "--concurrency",
        "2",
    ]));
    assert_eq!(r["key"], "report/r", "a key ending in / gets the file name");
    for field in [
        "bucket",
        "key",
        "size",
        "part_size",
        "parts",
        "checksum",
        "upload_id",
        "seconds",
        "mib_per_s",
    ] {
        assert!(!r[field].is_null(), "{field} missing from {r}");
    }
    assert_eq!(r["part_size"].as_u64(), Some(5 * MIB));
    assert_eq!(r["checksum"]["algorithm"], "SHA256");
    // By default no MD5 is computed for parts: the ETag is not predicted, and says so.
    assert!(r["etag"].is_null(), "{r}");
    assert_eq!(r["checks"]["etag"], "not_predicted");
    assert_eq!(r["after_upload"]["checksum_matches"], true);
    assert_eq!(r["checks"]["part_checksums_matched"].as_u64(), Some(3));
    // --quiet prints nothing on success.
    let out = s.tally([
        "upload",
        path.to_str().unwrap(),
        &s.url("report/q"),
        "--quiet",
    ]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
}
