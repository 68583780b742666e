//! Object settings (`--storage-class`, `--metadata`, `--tag`, `--content-type`, `--sse`):
//! with the in-memory fake (they reach PutObject and CreateMultipartUpload; an SSE-KMS ETag is
//! never compared; a resume with other settings is refused), on LocalStack (read back with the
//! AWS CLI), and on Garage (what it keeps and what it silently drops).
//!
//! What the servers can show (probed): LocalStack stores and reports all five; its S3 runs
//! without the KMS service (`scripts/localstack` sets SERVICES=s3), so `--sse aws:kms` without a
//! key id fails there (it would create a default key), while `--sse-kms-key-id` is accepted
//! unchecked and reported back; its ETag then stays an MD5, which tally must not compare anyway.
//! Garage 2.5 keeps Content-Type and metadata, accepts the storage class, tags and SSE headers
//! and drops them (HEAD reports none of them; GetObjectTagging is not implemented).

use tally::config::UploadConfig;
use tally::error::Error;
use tally::progress::Silent;
use tally::s3::fake::FakeS3;
use tally::upload::{Check, UploadReport, upload};
use tally::vocab::ChecksumAlgorithm;
use tally::vocab::{ObjectSettings, Sse, StorageClass};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The settings of a film scan: every kind of setting, the content type left to the guess.
fn scan_settings(sse: Option<&str>, key_id: Option<&str>) -> ObjectSettings {
    ObjectSettings::new(
        Some(StorageClass::StandardIa),
        None,
        &strings(&["Camera=A", "reel=R001"]),
        &strings(&["project=night shoot", "stage=raw"]),
        sse,
        key_id.map(str::to_owned),
        None,
    )
    .unwrap()
}

fn config(dir: &std::path::Path, file: &std::path::Path, key: &str) -> UploadConfig {
    let mut cfg = UploadConfig::new(
        file.to_owned(),
        &format!("s3://bkt/{key}"),
        5 * MIB,
        2,
        ChecksumAlgorithm::Sha256,
    )
    .unwrap();
    cfg.resume.manifest = Some(dir.join(format!("{key}.manifest")));
    cfg.resume.state_dir = tally::state::StateDir::at(dir.join("state"));
    cfg
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs an upload until it ends, or until the fake crashes (then the upload is dropped with
/// everything in flight, as a kill -9 would).
async fn run(fake: &FakeS3, cfg: &UploadConfig) -> Option<Result<UploadReport, Error>> {
    let cancel = CancellationToken::new();
    tokio::select! {
        r = upload(fake, cfg, &Silent, &cancel) => Some(r),
        () = fake.crashed() => None,
    }
}

#[test]
fn settings_reach_put_object_and_create_multipart() {
    let dir = tempfile::tempdir().unwrap();
    // One PutObject (a .mov) and one multipart upload (a .dpx of three parts).
    for (name, len, content_type, method) in [
        ("clip.mov", 1000, "video/quicktime", "single_put"),
        ("frame.dpx", 11 * MIB, "image/dpx", "multipart"),
    ] {
        let file = random_file(dir.path(), name, len, 301);
        let mut cfg = config(dir.path(), &file, name);
        cfg.content_md5 = true;
        cfg.object = scan_settings(Some("AES256"), None);
        let fake = FakeS3::default();
        let r = block_on(run(&fake, &cfg)).unwrap().unwrap();
        assert_eq!(r.method.to_string(), method);
        // Written out here, not derived with tally's code: keys lower-case and sorted, tags in
        // the order given, the content type guessed from the extension.
        let want = ObjectSettings {
            storage_class: Some(StorageClass::StandardIa),
            content_type: Some(content_type.to_owned()),
            metadata: vec![
                ("camera".into(), "A".into()),
                ("reel".into(), "R001".into()),
            ],
            tags: vec![
                ("project".into(), "night shoot".into()),
                ("stage".into(), "raw".into()),
            ],
            sse: Some(Sse::Aes256),
            if_absent: false,
        };
        assert_eq!(fake.settings(name), Some(want.clone()), "{name}");
        assert_eq!(fake.tags(name), Some(want.tags.clone()), "{name}");
        // The report: what was sent, and what HEAD (the fake's) said back.
        let o = &r.object;
        assert_eq!(o.storage_class_requested, Some(StorageClass::StandardIa));
        assert_eq!(o.storage_class_reported.as_deref(), Some("STANDARD_IA"));
        assert_eq!(o.content_type_reported.as_deref(), Some(content_type));
        assert_eq!((o.metadata_requested, o.metadata_reported), (2, Some(2)));
        assert_eq!((o.tags_requested, o.tags_reported), (2, Some(2)));
        assert_eq!(o.sse_reported.as_deref(), Some("AES256"));
        // SSE-S3 keeps the ETag an MD5: it is compared.
        assert_eq!(r.checks.etag, Check::Matched, "{name}");
    }
}

#[test]
fn an_sse_kms_etag_is_never_compared() {
    // The fake gives SSE-KMS objects and parts an ETag that is no MD5 of anything, as AWS does:
    // comparing it (with --content-md5, every part's too) would fail the upload as a mismatch.
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("kms.mov", 1000), ("kms.exr", 11 * MIB)] {
        let file = random_file(dir.path(), name, len, 302);
        let mut cfg = config(dir.path(), &file, name);
        cfg.content_md5 = true;
        cfg.object = scan_settings(Some("aws:kms"), Some("key-1"));
        let fake = FakeS3::default();
        let r = block_on(run(&fake, &cfg))
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.checks.etag, Check::NotComparableKms, "{name}");
        assert_eq!(
            r.checks.part_etags_matched, 0,
            "{name}: no part ETag compared"
        );
        let v = r.verified.as_ref().unwrap();
        assert_eq!(v.etag, Check::NotComparableKms, "{name}: read back");
        assert_eq!(v.etag_matches, None);
        assert_eq!(
            r.checks.object_checksum,
            Check::Matched,
            "the checksum still is"
        );
        assert_eq!(r.object.sse_reported.as_deref(), Some("aws:kms"));
        assert_eq!(
            fake.settings(name).unwrap().sse,
            Some(Sse::Kms {
                key_id: Some("key-1".into())
            })
        );
    }
}

#[test]
fn a_kms_request_keeps_the_etag_uncompared_when_the_reply_does_not_say() {
    // A server whose Complete reply omits x-amz-server-side-encryption: the --sse aws:kms sent
    // still says the ETag is no MD5.
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "quiet.mxf", 11 * MIB, 303);
    let mut cfg = config(dir.path(), &file, "quiet.mxf");
    cfg.content_md5 = true;
    cfg.verify = false;
    cfg.object = scan_settings(Some("aws:kms"), None);
    let fake = tally::s3::tamper::Tamper::new(FakeS3::default())
        .complete_reply(|r| r.sse = None)
        .part_reply(|_, r| r.sse = None);
    let cancel = CancellationToken::new();
    let r = block_on(upload(&fake, &cfg, &Silent, &cancel)).unwrap();
    assert_eq!(r.checks.etag, Check::NotComparableKms);
    assert_eq!(r.object.sse_reported, None, "nothing claimed");
    assert_eq!(r.object.sse_requested.as_deref(), Some("aws:kms"));
}

#[test]
fn md5_tag_is_merged_with_the_tags_set_at_upload() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "tagged.mov", 11 * MIB, 304);
    let mut cfg = config(dir.path(), &file, "tagged.mov");
    cfg.md5_tag = Some("md5".into());
    cfg.object = scan_settings(None, None);
    let fake = FakeS3::default();
    let r = block_on(run(&fake, &cfg)).unwrap().unwrap();
    let md5 = hex(&<md5::Md5 as md5::Digest>::digest(
        std::fs::read(&file).unwrap(),
    ));
    assert_eq!(r.md5.as_deref(), Some(md5.as_str()));
    assert_eq!(
        fake.tags("tagged.mov").unwrap(),
        vec![
            ("project".to_owned(), "night shoot".to_owned()),
            ("stage".to_owned(), "raw".to_owned()),
            ("md5".to_owned(), md5),
        ]
    );
}

#[test]
fn a_resume_with_other_settings_is_refused_and_the_same_settings_finish_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "roll.mov", 4 * 5 * MIB, 305);
    let mut cfg = config(dir.path(), &file, "roll.mov");
    cfg.object = scan_settings(None, None);
    let fake = FakeS3::default();
    fake.crash_after(1, true);
    assert!(block_on(run(&fake, &cfg)).is_none(), "interrupted");
    fake.disarm();
    let sent = fake.part_uploads();

    let mut other = cfg.clone();
    other.object.storage_class = Some(StorageClass::Glacier);
    other.object.tags.pop();
    let e = block_on(run(&fake, &other))
        .unwrap()
        .expect_err("a resume with another storage class must be refused");
    let msg = e.to_string();
    assert!(matches!(e, Error::ResumeRefused { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "the interrupted upload of {} was started with other object settings (storage class STANDARD_IA, now GLACIER; 2 tags, now 1",
            file.display()
        )) && msg.contains("run the same command with the same settings, or add --restart"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), 2);
    assert_eq!(fake.part_uploads(), sent, "nothing sent");
    assert_eq!(fake.completes(), 0, "nothing completed");
    assert_eq!(fake.uploads_in_progress(), 1, "the upload is kept");

    // A KMS key id differs without being named.
    let mut kms = cfg.clone();
    kms.object.sse = Some(Sse::Kms {
        key_id: Some("secret-looking-key".into()),
    });
    let msg = block_on(run(&fake, &kms)).unwrap().unwrap_err().to_string();
    assert!(
        msg.contains("encryption none, now aws:kms with a key id"),
        "{msg}"
    );
    assert!(!msg.contains("secret-looking-key"), "{msg}");

    // The same settings finish it, and the object has them.
    let r = block_on(run(&fake, &cfg)).unwrap().unwrap();
    assert!(r.resumed, "{r:?}");
    assert_eq!(fake.completes(), 1);
    let stored = fake.settings("roll.mov").unwrap();
    assert_eq!(stored.storage_class, Some(StorageClass::StandardIa));
    assert_eq!(stored.tags.len(), 2);
}

#[test]
fn a_restart_with_other_settings_starts_over_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "redo.mov", 3 * 5 * MIB, 306);
    let mut cfg = config(dir.path(), &file, "redo.mov");
    cfg.object = scan_settings(None, None);
    let fake = FakeS3::default();
    fake.crash_after(1, true);
    assert!(block_on(run(&fake, &cfg)).is_none(), "interrupted");
    fake.disarm();
    let mut other = cfg.clone();
    other.object.storage_class = Some(StorageClass::DeepArchive);
    other.resume.restart = true;
    let r = block_on(run(&fake, &other)).unwrap().unwrap();
    assert!(!r.resumed);
    assert_eq!(fake.uploads_in_progress(), 0, "the old upload was aborted");
    assert_eq!(
        fake.settings("redo.mov").unwrap().storage_class,
        Some(StorageClass::DeepArchive)
    );
}

#[test]
fn bad_settings_are_one_line_usage_errors() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f.mov", 1000, 307);
    let file = path.to_str().unwrap();
    let key = unique("settings/bad");
    let url = s.url(&key);
    let many: Vec<String> = (0..11).map(|i| format!("--tag=t{i}=v")).collect();
    let big = format!("--metadata=notes={}", "x".repeat(2045));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--metadata", "bad key=1"],
            "--metadata key 'bad key' is not allowed",
        ),
        (
            vec!["--metadata", "novalue"],
            "write it as --metadata KEY=VALUE",
        ),
        (vec!["--metadata", "k=caf\u{e9}"], "printable ASCII"),
        (vec![&big], "S3 allows 2048"),
        (
            many.iter().map(String::as_str).collect(),
            "S3 allows 10 per object",
        ),
        (
            vec![
                "--tag",
                "a=1",
                "--tag",
                "b=2",
                "--tag",
                "c=3",
                "--tag",
                "d=4",
                "--tag",
                "e=5",
                "--tag",
                "f=6",
                "--tag",
                "g=7",
                "--tag",
                "h=8",
                "--tag",
                "i=9",
                "--tag",
                "j=10",
                "--md5-tag",
            ],
            "11 tags (--tag and --md5-tag)",
        ),
        (
            vec!["--tag", "md5=x", "--md5-tag"],
            "tag 'md5' is given twice",
        ),
        (vec!["--tag", "aws:x=1"], "reserved by AWS"),
        (
            vec!["--sse", "AES256", "--sse-kms-key-id", "k"],
            "goes with --sse aws:kms only",
        ),
        (vec!["--sse-kms-key-id", "k"], "--sse"),
        (vec!["--storage-class", "COLD"], "COLD"),
    ];
    for (args, want) in cases {
        let mut all = vec!["upload", file, &url];
        all.extend(&args);
        let out = s.tally(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
    }
    assert!(s.head(&key).is_none(), "nothing uploaded");
}

/// `tally upload --json` with every setting; the report.
fn upload_with_settings(
    s: &Server,
    path: &std::path::Path,
    key: &str,
    extra: &[&str],
) -> serde_json::Value {
    let url = s.url(key);
    let mut args = vec![
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--storage-class",
        "standard_ia",
        "--metadata",
        "Camera=A",
        "--metadata",
        "reel=R001",
        "--tag",
        "project=night shoot",
        "--tag",
        "stage=raw",
        "--json",
    ];
    args.extend(extra);
    json_report(&s.tally(&args))
}

#[test]
fn localstack_stores_every_setting_single_and_multipart() {
    let s = localstack();
    let dir = s.temp_dir();
    for (name, len, extra, content_type) in [
        ("clip.mov", 1000, vec![], "video/quicktime"),
        ("frame.dpx", 11 * MIB, vec![], "image/dpx"),
        (
            "take.braw",
            11 * MIB,
            vec!["--content-type", "video/x-braw"],
            "video/x-braw",
        ),
    ] {
        let path = random_file(dir.path(), name, len, 310);
        let key = unique(&format!("settings/{name}"));
        let mut extra = extra.clone();
        extra.push("--md5-tag");
        let r = upload_with_settings(s, &path, &key, &extra);
        let head = s.head(&key).expect("the object exists");
        assert_eq!(head["StorageClass"], "STANDARD_IA", "{name}: {head}");
        assert_eq!(head["ContentType"], content_type, "{name}: {head}");
        assert_eq!(
            head["Metadata"],
            serde_json::json!({"camera": "A", "reel": "R001"}),
            "{name}"
        );
        let md5 = hex(&<md5::Md5 as md5::Digest>::digest(
            std::fs::read(&path).unwrap(),
        ));
        assert_eq!(
            s.tags(&key),
            vec![
                ("md5".to_owned(), md5),
                ("project".to_owned(), "night shoot".to_owned()),
                ("stage".to_owned(), "raw".to_owned()),
            ],
            "{name}: the tags set at upload kept beside the MD5 tag"
        );
        let o = &r["object"];
        assert_eq!(o["storage_class_reported"], "STANDARD_IA", "{r}");
        assert_eq!(o["content_type_reported"], content_type, "{r}");
        assert_eq!(o["metadata_reported"], 2, "{r}");
        assert_eq!(
            o["tags_reported"], 2,
            "{r}: read before the MD5 tag is added"
        );
    }
}

#[test]
fn localstack_sse_kms_with_a_key_id_is_stored_and_its_etag_not_compared() {
    // LocalStack runs without its KMS service: --sse aws:kms alone fails there (500, "Service
    // 'kms' is not enabled"); with a key id it stores and reports aws:kms and the key.
    let s = localstack();
    let dir = s.temp_dir();
    let key_id = "arn:aws:kms:us-east-1:000000000000:key/tally-test";
    for (name, len) in [("kms.mov", 1000), ("kms.dpx", 11 * MIB)] {
        let path = random_file(dir.path(), name, len, 311);
        let key = unique(&format!("settings/{name}"));
        let r = upload_with_settings(
            s,
            &path,
            &key,
            &[
                "--sse",
                "aws:kms",
                "--sse-kms-key-id",
                key_id,
                "--content-md5",
            ],
        );
        let head = s.head(&key).unwrap();
        assert_eq!(head["ServerSideEncryption"], "aws:kms", "{head}");
        assert_eq!(head["SSEKMSKeyId"], key_id, "{head}");
        assert_eq!(r["checks"]["etag"], "not_comparable_kms", "{r}");
        assert_eq!(r["after_upload"]["etag"], "not_comparable_kms", "{r}");
        assert_eq!(r["object"]["sse_reported"], "aws:kms", "{r}");
    }
}

#[test]
fn garage_keeps_content_type_and_metadata_and_drops_the_rest() {
    // Garage 2.5 accepts --storage-class, --tag and --sse and stores none of them: the report
    // must say they were requested and not reported back, never that S3 confirmed them.
    let s = garage();
    let dir = s.temp_dir();
    for (name, len) in [("g.mov", 1000), ("g.exr", 11 * MIB)] {
        let path = random_file(dir.path(), name, len, 312);
        let key = unique(&format!("settings/{name}"));
        let r = upload_with_settings(s, &path, &key, &["--sse", "AES256"]);
        let head = s.head(&key).unwrap();
        let want_type = if name.ends_with(".mov") {
            "video/quicktime"
        } else {
            "image/x-exr"
        };
        assert_eq!(head["ContentType"], want_type, "{head}");
        assert_eq!(
            head["Metadata"],
            serde_json::json!({"camera": "A", "reel": "R001"})
        );
        assert!(head.get("StorageClass").is_none(), "{head}");
        assert!(head.get("ServerSideEncryption").is_none(), "{head}");
        let o = &r["object"];
        assert_eq!(o["storage_class_requested"], "STANDARD_IA", "{r}");
        assert!(o["storage_class_reported"].is_null(), "{r}");
        assert!(o["tags_reported"].is_null(), "{r}");
        assert!(o["sse_reported"].is_null(), "{r}");
        assert_eq!(o["sse_requested"], "AES256", "{r}");
        assert_eq!(o["content_type_reported"], want_type, "{r}");
    }
}
