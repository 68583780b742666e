//! `tally verify` and `tally hash`: objects uploaded by tally and by the AWS CLI verify; a changed
//! byte names its part; a truncated copy is a size difference; what cannot be verified exits 2.

use std::path::Path;

use crate::proxy::{Op, Plan, Proxy};
use crate::support::*;

fn verify(s: &Server, file: &Path, key: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let url = s.url(key);
    let mut args = vec!["verify", file.to_str().unwrap(), &url, "--json"];
    args.extend(extra);
    let out = s.tally(&args);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("JSON expected; stderr: {}", stderr(&out)));
    (out.status.code(), v)
}

fn flip_byte(src: &Path, dst: &Path, at: u64) {
    let mut data = std::fs::read(src).unwrap();
    data[at as usize] ^= 0x5a;
    std::fs::write(dst, data).unwrap();
}

/// The AWS CLI's default multipart threshold and part size.
const CLI_PART: u64 = 8 * MIB;

#[test]
fn objects_from_tally_and_the_aws_cli_verify_and_a_changed_byte_names_its_part() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "f", 3 * CLI_PART + 12345, 31);
        let changed = dir.path().join("changed");
        let at = 2 * CLI_PART + 777; // in part 3 of the CLI's 8 MiB parts
        flip_byte(&path, &changed, at);
        let p = path.to_str().unwrap();
        s.aws(["s3", "cp", "--quiet", p, &s.url("v/cli-default")]);
        s.aws([
            "s3",
            "cp",
            "--quiet",
            "--checksum-algorithm",
            "SHA256",
            p,
            &s.url("v/cli-sha256"),
        ]);
        s.put(&path, "v/tally", "5MiB");
        for key in ["v/cli-default", "v/cli-sha256", "v/tally"] {
            let (code, r) = verify(s, &path, key, &[]);
            assert_eq!(code, Some(0), "{name} {key}: {r}");
            assert_eq!(r["verdict"], "identical");
            assert!(
                r["checksum_check"]["matches"] == true || r["etag_check"]["matches"] == true,
                "{r}"
            );
            let (code, r) = verify(s, &changed, key, &[]);
            assert_eq!(code, Some(1), "{name} {key}: {r}");
            assert_eq!(r["verdict"], "differs");
            let parts = r["differing_parts"].as_array().unwrap();
            assert_eq!(
                parts.len(),
                1,
                "{name} {key}: exactly one part differs: {r}"
            );
            let range = &parts[0]["range"];
            let (start, end) = (
                range["start"].as_u64().unwrap(),
                range["end"].as_u64().unwrap(),
            );
            assert!(
                start <= at && at < end,
                "{name} {key}: part {range} does not hold byte {at}"
            );
            let want = if key == "v/tally" {
                at / (5 * MIB) + 1
            } else {
                at / CLI_PART + 1
            };
            assert_eq!(parts[0]["number"].as_u64(), Some(want), "{name} {key}");
        }
        // --download compares bytes, and agrees.
        let (code, r) = verify(s, &changed, "v/cli-sha256", &["--download"]);
        assert_eq!(
            (code, r["method"].as_str()),
            (Some(1), Some("download")),
            "{name}: {r}"
        );
        assert_eq!(r["differing_parts"][0]["number"].as_u64(), Some(3));
        let (code, _) = verify(s, &path, "v/cli-sha256", &["--download"]);
        assert_eq!(code, Some(0));
    }
}

#[test]
fn the_method_follows_what_the_server_offers() {
    let dir = garage().temp_dir();
    let path = random_file(dir.path(), "f", 11 * MIB, 32);
    for (name, s) in servers() {
        s.put(&path, "v/method", "5MiB");
        let (code, r) = verify(s, &path, "v/method", &[]);
        assert_eq!(code, Some(0));
        // Garage lacks GetObjectAttributes: tally says so and uses HEAD; LocalStack has it.
        let want = if name == "garage" {
            "head_layout"
        } else {
            "object_attributes"
        };
        assert_eq!(r["method"], want, "{name}: {r}");
        if name == "garage" {
            assert!(
                r["why"]
                    .as_str()
                    .unwrap()
                    .contains("does not implement GetObjectAttributes")
            );
        } else {
            assert_eq!(r["parts_compared"].as_u64(), Some(3));
        }
    }
}

#[test]
fn single_part_objects_verify_by_checksum_and_md5_etag() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "small", 100_000, 33);
        s.aws([
            "s3",
            "cp",
            "--quiet",
            path.to_str().unwrap(),
            &s.url("v/single"),
        ]);
        let (code, r) = verify(s, &path, "v/single", &[]);
        assert_eq!(code, Some(0), "{name}: {r}");
        assert_eq!(r["parts"].as_u64(), Some(1));
        assert_eq!(
            r["etag_check"]["matches"], true,
            "{name}: a single-part ETag is the MD5: {r}"
        );
        let changed = dir.path().join("changed");
        flip_byte(&path, &changed, 5);
        let (code, r) = verify(s, &changed, "v/single", &[]);
        assert_eq!(code, Some(1), "{name}: {r}");
    }
}

#[test]
fn a_truncated_copy_is_a_size_difference() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 6 * MIB, 34);
    s.put(&path, "v/trunc", "5MiB");
    let short = dir.path().join("short");
    std::fs::write(&short, &std::fs::read(&path).unwrap()[..5 * MIB as usize]).unwrap();
    let (code, r) = verify(s, &short, "v/trunc", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(r["size_matches"], false, "{r}");
    assert_eq!(r["size"], 5 * MIB);
}

#[test]
fn what_cannot_be_verified_exits_2_with_a_reason() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 1000, 35);
    let p = path.to_str().unwrap();
    assert!(
        s.tally(["upload", p, &s.url("v/exists"), "--quiet"])
            .status
            .success()
    );
    let cases: [(&str, String, &str); 4] = [
        (p, s.url(&unique("v/missing")), "NotFound"),
        (p, "s3://no-such-bucket-tally/k".into(), "404"),
        (p, "s3://tally-denied/k".into(), "403"),
        ("/dev/null", s.url("v/exists"), "not a regular file"),
    ];
    for (file, url, needle) in cases {
        let out = s.tally(["verify", file, &url]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{url}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1);
    }
}

#[test]
fn hash_predicts_what_s3_reports() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 12 * MIB + 1, 36);
    let p = path.to_str().unwrap();
    for alg in ["sha256", "crc64nvme"] {
        let out = s.tally([
            "hash",
            p,
            "--part-size",
            "5MiB",
            "--checksum",
            alg,
            "--json",
        ]);
        let h = json_report(&out);
        assert_eq!(h["parts"].as_array().unwrap().len(), 3);
        let key = format!("v/hash-{alg}");
        assert!(
            s.tally([
                "upload",
                p,
                &s.url(&key),
                "--part-size",
                "5MiB",
                "--checksum",
                alg,
                "--quiet"
            ])
            .status
            .success()
        );
        let head = s.head(&key).unwrap();
        assert_eq!(head["ETag"].as_str().unwrap().trim_matches('"'), h["etag"]);
        assert_eq!(
            head[format!("Checksum{}", alg.to_uppercase())],
            h["checksum"]["value"]
        );
    }
    // The whole-file MD5 is md5sum's.
    let md5sum = run_bounded(
        std::process::Command::new("md5sum").arg(p),
        std::time::Duration::from_secs(60),
        "md5sum",
    );
    let want = String::from_utf8(md5sum.stdout).unwrap();
    let h = json_report(&s.tally(["hash", p, "--json"]));
    assert_eq!(
        h["md5"].as_str().unwrap(),
        want.split_whitespace().next().unwrap()
    );
}

/// More than 1,000 parts: GetObjectAttributes pages (LocalStack: 1,000 a page, as AWS). The file is
/// sparse (zeros but for a random stretch in part 1001), so it costs no local disk; LocalStack
/// enforces 5 MiB parts, so the object is ~5 GB on its side for the length of the test.
#[test]
fn more_than_a_thousand_parts_are_read_over_several_pages() {
    let s = localstack();
    let dir = s.temp_dir();
    let path = dir.path().join("sparse");
    let len = 1001 * 5 * MIB;
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    let tail = random_file(dir.path(), "tail", 4096, 37);
    let mut data = std::fs::read(&tail).unwrap();
    {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(len - 4096)).unwrap();
        f.write_all(&data).unwrap();
    }
    let p = path.to_str().unwrap();
    let r = json_report(&s.tally([
        "upload",
        p,
        &s.url("v/1001"),
        "--part-size",
        "5MiB",
        "--json",
    ]));
    assert_eq!(r["parts"].as_u64(), Some(1001));
    assert_eq!(r["after_upload"]["method"], "object_attributes");
    assert_eq!(r["after_upload"]["parts_compared"].as_u64(), Some(1001));
    let (code, v) = verify(s, &path, "v/1001", &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["parts_compared"].as_u64(),
        Some(1001),
        "every page was read"
    );
    // A byte changed in the last part, which only the second page describes.
    data[100] ^= 1;
    {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(len - 4096)).unwrap();
        f.write_all(&data).unwrap();
    }
    let (code, v) = verify(s, &path, "v/1001", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        v["differing_parts"][0]["number"].as_u64(),
        Some(1001),
        "{v}"
    );
    s.aws(["s3", "rm", "--quiet", &s.url("v/1001")]);
}

/// An object whose parts carry no checksum (uploaded with the CLI's checksums turned off):
/// GetObjectAttributes gives only the part count, so the layout comes from HEAD and the ETag decides.
#[test]
fn an_object_without_part_checksums_verifies_by_layout_and_etag() {
    let s = localstack();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 2 * CLI_PART + 99, 38);
    let off = [("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")];
    let out = s.aws_output_env(
        &off,
        [
            "s3",
            "cp",
            "--quiet",
            path.to_str().unwrap(),
            &s.url("v/nochecksum"),
        ],
    );
    assert!(out.status.success());
    assert!(
        s.head("v/nochecksum")
            .unwrap()
            .get("ChecksumCRC32")
            .is_none(),
        "no checksum was stored"
    );
    let (code, r) = verify(s, &path, "v/nochecksum", &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["method"], "head_layout");
    assert!(
        r["why"].as_str().unwrap().contains("no per-part checksums"),
        "{r}"
    );
    // Like AWS today, LocalStack gives such an object a full-object CRC64NVME of its own.
    assert_eq!(
        (&r["checksum"]["algorithm"], &r["checksum"]["type"]),
        (&"CRC64NVME".into(), &"FULL_OBJECT".into()),
        "{r}"
    );
    assert_eq!(r["checksum_check"]["matches"], true, "{r}");
    let (_, r) = verify(s, &path, "v/nochecksum", &["--etag"]);
    assert_eq!(r["etag_check"]["matches"], true, "{r}");
    let changed = dir.path().join("changed");
    flip_byte(&path, &changed, CLI_PART + 3);
    let (code, r) = verify(s, &changed, "v/nochecksum", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        r["differing_parts"][0]["number"].as_u64(),
        Some(2),
        "found by download: {r}"
    );
}

/// `--wait`: an object that appears late (delayed visibility, replication) verifies once it is there.
#[test]
fn wait_retries_until_the_object_appears() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 6 * MIB, 39);
    let key = unique("v/late");
    let url = s.url(&key);
    // Through a proxy, to see tally's first look answered (the object is absent then) before the
    // object is written behind its back.
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let mut cmd = s.command();
    cmd.args([
        "verify",
        path.to_str().unwrap(),
        &url,
        "--wait",
        "60s",
        "--json",
        "--endpoint-url",
        &proxy.url,
    ]);
    let mut child = Running::spawn(&mut cmd, "tally verify --wait");
    let until = std::time::Instant::now() + EVENT_BOUND;
    while proxy.stats.get(&proxy.stats.answered) == 0 {
        child.assert_running("its first request to be answered");
        assert!(
            std::time::Instant::now() < until,
            "tally verify sent nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let first = proxy.stats.events()[0].op;
    assert_eq!(first, Op::Head, "the first look is a HEAD, answered 404");
    s.aws(["s3", "cp", "--quiet", path.to_str().unwrap(), &url]);
    let out = child.finish(TALLY_BOUND);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["attempts"].as_u64().unwrap() > 1, "{r}");
    // Without the object ever appearing, --wait gives up after its time and exits 2.
    let out = s.tally([
        "verify",
        path.to_str().unwrap(),
        &s.url(&unique("v/never")),
        "--wait",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
