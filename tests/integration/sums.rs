//! Every S3 checksum algorithm (the five S3 added in 2026 included) and whole-file hashes in the
//! upload's one read (`--file-hash`): values against digests computed here with the hash crates'
//! one-shot functions (never tally's hash module), the fake S3 echoing them or ignoring them as
//! Garage and LocalStack do, and the real servers' behaviour: a single PUT's checksum ignored
//! ("not verified by the server", never "verified"), CreateMultipartUpload refused (one line).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Digest as _;
use tally::config::UploadConfig;
use tally::error::Error;
use tally::hash::FileHashFormat;
use tally::s3::fake::FakeS3;
use tally::upload::{Check, UploadReport};
use tally::vocab::ChecksumAlgorithm;
use tally::vocab::ObjectSettings;

use crate::support::*;

const RECENT: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Sha512,
    ChecksumAlgorithm::Md5,
    ChecksumAlgorithm::Xxhash64,
    ChecksumAlgorithm::Xxhash3,
    ChecksumAlgorithm::Xxhash128,
];

/// The raw digest of `data` with `alg`, with the crates' one-shot functions.
fn digest(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
    match alg {
        ChecksumAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        ChecksumAlgorithm::Md5 => md5::Md5::digest(data).to_vec(),
        ChecksumAlgorithm::Xxhash64 => xxhash_rust::xxh64::xxh64(data, 0).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Xxhash3 => xxhash_rust::xxh3::xxh3_64(data).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Xxhash128 => xxhash_rust::xxh3::xxh3_128(data).to_be_bytes().to_vec(),
        other => panic!("not one of the 2026 algorithms: {other}"),
    }
}

/// S3's composite: base64(H(d1 || ... || dN)) + "-N", over parts of `part` bytes.
fn composite(alg: ChecksumAlgorithm, data: &[u8], part: usize) -> String {
    let raw: Vec<u8> = data.chunks(part).flat_map(|c| digest(alg, c)).collect();
    format!(
        "{}-{}",
        B64.encode(digest(alg, &raw)),
        data.len().div_ceil(part)
    )
}

fn fake_cfg(dir: &Path, len: u64, alg: ChecksumAlgorithm) -> (UploadConfig, Vec<u8>) {
    let file = random_file(dir, "src.bin", len, len ^ 0x51);
    let data = std::fs::read(&file).unwrap();
    let mut cfg = UploadConfig::new(file, "s3://bkt/obj", 5 * MIB, 2, alg).unwrap();
    cfg.resume.manifest = Some(dir.join("m.manifest"));
    cfg.resume.state_dir = tally::state::StateDir::at(dir.join("state"));
    (cfg, data)
}

async fn upload(fake: &FakeS3, cfg: &UploadConfig) -> Result<UploadReport, Error> {
    let cancel = tokio_util::sync::CancellationToken::new();
    tally::upload::upload(fake, cfg, &tally::progress::Silent, &cancel).await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_2026_algorithm_round_trips_through_a_server_that_echoes_it() {
    for alg in RECENT {
        for len in [MIB + 3, 12 * MIB + 7] {
            let dir = tempfile::tempdir().unwrap();
            let (mut cfg, data) = fake_cfg(dir.path(), len, alg);
            cfg.file_hashes = vec![FileHashFormat::Xxh64, FileHashFormat::Md5];
            let fake = FakeS3::default();
            fake.answer_attributes();
            let r = upload(&fake, &cfg).await.unwrap();
            let want = if len < 5 * MIB {
                B64.encode(digest(alg, &data))
            } else {
                composite(alg, &data, 5 * MIB as usize)
            };
            assert_eq!(r.checksum.value, want, "{alg} {len}");
            assert_eq!(r.checksum.algorithm, alg);
            assert_eq!(r.checks.object_checksum, Check::Matched, "{alg} {len}");
            assert_eq!(r.checks.part_checksums_matched, r.parts, "{alg} {len}");
            let v = r.verified.as_ref().expect("read back");
            assert_eq!(v.checksum_matches, Some(true), "{alg} {len}");
            assert_eq!(fake.object("obj").unwrap(), data);
            assert_eq!(
                r.file_hashes.get(FileHashFormat::Xxh64),
                Some(hex(&xxhash_rust::xxh64::xxh64(&data, 0).to_be_bytes()).as_str())
            );
            assert_eq!(
                r.file_hashes.get(FileHashFormat::Md5),
                Some(hex(&md5::Md5::digest(&data)).as_str())
            );
            // `tally hash` predicts the same object checksum without any network.
            let h = tally::hashfile::hash_file(&cfg.source, 5 * MIB, alg, &[]).unwrap();
            assert_eq!(h.checksum.value, want, "{alg} {len}");
            // And `tally verify` compares with it.
            let vr = tally::verify::verify(&fake, &cfg.source, &cfg.target, &Default::default())
                .await
                .unwrap();
            assert_eq!(vr.verdict, tally::verify::Verdict::Identical, "{alg} {len}");
            assert!(vr.checksum.as_ref().is_some_and(|c| c.matches), "{vr:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_put_whose_checksum_the_server_ignores_is_not_verified_by_the_server() {
    for alg in RECENT {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, data) = fake_cfg(dir.path(), MIB + 1, alg);
        let fake = FakeS3::default();
        fake.without_recent_algorithms();
        let r = upload(&fake, &cfg).await.unwrap();
        assert_eq!(fake.object("obj").unwrap(), data);
        assert_eq!(r.checks.object_checksum, Check::NotReported, "{alg}");
        assert_eq!(r.checks.part_checksums_matched, 0, "{alg}");
        let v = r.verified.as_ref().expect("read back");
        assert_eq!(v.checksum_matches, None, "{alg}: nothing to compare");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"]["object_checksum"], "not_reported", "{json}");
        assert!(!json.to_string().contains("verified by"), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_algorithm_is_one_line_naming_it_and_leaves_nothing_behind() {
    for alg in RECENT {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, _) = fake_cfg(dir.path(), 12 * MIB, alg);
        let fake = FakeS3::default();
        fake.without_recent_algorithms();
        let e = upload(&fake, &cfg).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::ChecksumRefused { .. }), "{alg}: {text}");
        assert!(
            text.starts_with(&format!("the server does not accept {alg} checksums")),
            "{text}"
        );
        assert!(
            text.contains("use --checksum sha256 or crc64nvme"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(fake.uploads_in_progress(), 0);
        assert!(fake.object("obj").is_none());
        assert!(!dir.path().join("m.manifest").exists(), "no manifest left");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_file_hashes_are_complete_after_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, data) = fake_cfg(dir.path(), 17 * MIB + 5, ChecksumAlgorithm::Sha256);
    cfg.file_hashes = FileHashFormat::ALL.to_vec();
    cfg.md5_tag = Some("md5".into());
    let fake = FakeS3::default();
    fake.crash_after(2, true);
    let cancel = tokio_util::sync::CancellationToken::new();
    let crashed = tokio::select! {
        r = tally::upload::upload(&fake, &cfg, &tally::progress::Silent, &cancel) => Some(r),
        () = fake.crashed() => None,
    };
    assert!(crashed.is_none(), "the first run must be cut off");
    fake.disarm();
    let r = upload(&fake, &cfg).await.unwrap();
    assert!(r.resumed && r.parts_skipped >= 2, "{r:?}");
    let h = &r.file_hashes;
    assert_eq!(h.len(), 7);
    assert_eq!(
        h.get(FileHashFormat::Xxh64),
        Some(hex(&xxhash_rust::xxh64::xxh64(&data, 0).to_be_bytes()).as_str())
    );
    assert_eq!(
        h.get(FileHashFormat::Xxh128),
        Some(hex(&xxhash_rust::xxh3::xxh3_128(&data).to_be_bytes()).as_str())
    );
    assert_eq!(
        h.get(FileHashFormat::Xxh3),
        Some(hex(&xxhash_rust::xxh3::xxh3_64(&data).to_be_bytes()).as_str())
    );
    let md5 = hex(&md5::Md5::digest(&data));
    assert_eq!(h.get(FileHashFormat::Md5), Some(md5.as_str()));
    assert_eq!(r.md5.as_deref(), Some(md5.as_str()));
    assert_eq!(
        h.get(FileHashFormat::Sha1),
        Some(hex(&sha1::Sha1::digest(&data)).as_str())
    );
    assert_eq!(
        h.get(FileHashFormat::Sha256),
        Some(hex(&sha2::Sha256::digest(&data)).as_str())
    );
    assert_eq!(h.get(FileHashFormat::C4).map(str::len), Some(90));
}

#[tokio::test(flavor = "multi_thread")]
async fn file_hash_tags_are_merged_with_the_objects_tags() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, data) = fake_cfg(dir.path(), 6 * MIB, ChecksumAlgorithm::Crc64nvme);
    cfg.file_hashes = vec![FileHashFormat::Xxh64, FileHashFormat::Xxh128];
    cfg.file_hash_tag = true;
    cfg.object =
        ObjectSettings::new(None, None, &[], &["project=x".into()], None, None, None).unwrap();
    cfg.check_file_hash_tags().unwrap();
    let fake = FakeS3::default();
    let r = upload(&fake, &cfg).await.unwrap();
    assert_eq!(r.file_hash_tag_error, None);
    let mut tags = fake.tags("obj").unwrap();
    tags.sort();
    let mut want = vec![
        ("project".to_owned(), "x".to_owned()),
        (
            "xxh128".to_owned(),
            hex(&xxhash_rust::xxh3::xxh3_128(&data).to_be_bytes()),
        ),
        (
            "xxh64".to_owned(),
            hex(&xxhash_rust::xxh64::xxh64(&data, 0).to_be_bytes()),
        ),
    ];
    want.sort();
    assert_eq!(tags, want);
    // Ten tags in all is S3's limit: one more is refused before anything is sent.
    let many: Vec<String> = (0..9).map(|i| format!("t{i}=v")).collect();
    cfg.object = ObjectSettings::new(None, None, &[], &many, None, None, None).unwrap();
    let e = cfg.check_file_hash_tags().unwrap_err().to_string();
    assert!(e.contains("11 tags") && e.contains("allows 10"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The binary: `tally hash --file-hash`, and the local servers' treatment of the 2026 algorithms.

fn tally_offline(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args);
    run_bounded(
        &mut cmd,
        Duration::from_secs(120),
        &format!("tally {args:?}"),
    )
}

#[test]
fn tally_hash_prints_the_file_hashes_as_ascmhl_does() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hello.txt");
    std::fs::write(&f, b"hello world").unwrap();
    let p = f.to_str().unwrap();
    let out = tally_offline(&[
        "hash",
        p,
        "--checksum",
        "xxhash64",
        "--file-hash",
        "xxh64,xxh3,xxh128,md5,sha1,c4",
        "--json",
    ]);
    let r = json_report(&out);
    // MEDIA-FACTS §1.2 (ascmhl-debug hash) and §4 (S3's base64 for XXHASH64).
    assert_eq!(r["file_hashes"]["xxh64"], "45ab6734b21e6968");
    assert_eq!(r["file_hashes"]["xxh3"], "d447b1ea40e6988b");
    assert_eq!(
        r["file_hashes"]["xxh128"],
        "df8d09e93f874900a99b8775cc15b6c7"
    );
    assert_eq!(r["file_hashes"]["md5"], "5eb63bbbe01eeed093cb22bb8f5acdc3");
    assert_eq!(
        r["file_hashes"]["sha1"],
        "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"
    );
    assert_eq!(
        r["file_hashes"]["c4"],
        "c41yP4cqy7jmaRDzC2bmcGNZkuQb3VdftMk6YH7ynQ2Qw4zktKsyA9fk52xghNQNAdkpF9iFmFkKh2bNVG4kDWhsok"
    );
    assert_eq!(r["checksum"]["value"], "RatnNLIeaWg=");
    assert_eq!(r["checksum"]["algorithm"], "XXHASH64");
    let text = tally_offline(&["hash", p, "--file-hash", "xxh64"]);
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("xxh64     45ab6734b21e6968"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let bad = tally_offline(&["hash", p, "--file-hash", "xxh64,crc32"]);
    assert_eq!(bad.status.code(), Some(2));
    let e = stderr(&bad);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("unknown file hash format 'crc32'"), "{e}");
}

#[test]
fn local_servers_ignore_a_single_puts_2026_checksum_and_refuse_it_for_multipart() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let small = random_file(dir.path(), "small", MIB + 11, 71);
        let big = random_file(dir.path(), "big", 11 * MIB, 72);
        let data = std::fs::read(&small).unwrap();
        for alg in ["xxhash64", "sha512"] {
            // One PutObject: the server stores the bytes and says nothing of the checksum.
            let key = unique(&format!("sums/{alg}-single"));
            let args = |json: bool| {
                let mut a = vec![
                    "upload".to_owned(),
                    small.to_str().unwrap().to_owned(),
                    s.url(&key),
                    "--checksum".into(),
                    alg.into(),
                    "--file-hash".into(),
                    "xxh64".into(),
                    // Sent again on the second run, not skipped as proven identical.
                    "--force".into(),
                ];
                if json {
                    a.push("--json".into());
                }
                a
            };
            let text = s.tally(args(false));
            assert!(text.status.success(), "{name} {alg}: {}", stderr(&text));
            let text = String::from_utf8_lossy(&text.stdout).into_owned();
            assert!(
                text.contains("not verified by the server"),
                "{name} {alg}: {text}"
            );
            assert!(
                !text.contains("verified on receipt") && !text.contains("verified by S3"),
                "{name} {alg}: {text}"
            );
            let r = json_report(&s.tally(args(true)));
            assert_eq!(r["checks"]["object_checksum"], "not_reported", "{name} {r}");
            assert_eq!(r["checks"]["part_checksums_matched"], 0, "{name} {r}");
            assert_eq!(
                r["file_hashes"]["xxh64"],
                hex(&xxhash_rust::xxh64::xxh64(&data, 0).to_be_bytes()),
                "{name} {r}"
            );
            assert_eq!(s.download_sha256(&key), file_sha256(&small));
        }
        // Multipart: CreateMultipartUpload is refused; one line, nothing left open.
        let key = unique("sums/xxhash128-multipart");
        let out = s.tally([
            "upload",
            big.to_str().unwrap(),
            &s.url(&key),
            "--part-size",
            "5MiB",
            "--checksum",
            "xxhash128",
        ]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let e = stderr(&out);
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        assert!(
            e.contains("the server does not accept XXHASH128 checksums")
                && e.contains("use --checksum sha256 or crc64nvme"),
            "{name}: {e}"
        );
        assert_eq!(s.uploads_in_progress(&key), 0, "{name}");
        assert!(s.head(&key).is_none(), "{name}");
    }
}
