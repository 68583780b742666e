//! `tally shard plan`: create the multipart upload and write PLAN, the document every worker and
//! the finisher read.
//!
//! PLAN is JSON. On a shared file system it is written with the one atomic write ([`crate::fsx`]),
//! so a worker reads the old plan or the new one, never a torn one. In S3 it is sent with
//! Content-MD5 (S3 refuses it if a byte changed on the way) and read back until the read returns
//! exactly what was written, with the one backoff policy for a bounded time, so no worker acts on
//! a stale plan. Either way an existing PLAN is never overwritten: it names an upload that would be
//! orphaned. If PLAN cannot be written, the upload just created is aborted: nothing is left billed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::UploadConfig;
use crate::error::Error;
use crate::exec::blocking;
use crate::hash;
use crate::plan::Plan;
use crate::retry::Policy;
use crate::s3::S3Api;
use crate::s3::S3ErrorKind;
use crate::source::Source;
use crate::upload::session;
use crate::vocab::ChecksumAlgorithm;
use crate::vocab::{ObjectSettings, ObjectUrl};

use super::ShardError;
use super::slice::parts_of;

/// Version of the PLAN format; a plan of another version is refused.
pub(crate) const FORMAT: u32 = 1;

/// The largest PLAN tally reads from S3 (a plan is a few hundred bytes).
const MAX_PLAN_BYTES: u64 = 1 << 20;

/// How long `plan` reads a PLAN written to S3 back before giving up.
const READ_BACK: Duration = Duration::from_secs(30);

/// The PLAN document: the upload every worker shares, and how its parts are cut into slices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardPlan {
    /// [`FORMAT`].
    pub format: u32,
    /// The file as planned (absolute); a worker that sees it elsewhere passes `--file`.
    pub source: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its fingerprint (SHA-256 of the size and 1 MiB at the start, middle and end, as the
    /// upload manifest's): every worker refuses a file with another size or fingerprint.
    pub fingerprint: String,
    /// Destination bucket.
    pub bucket: String,
    /// Destination key.
    pub key: String,
    /// The endpoint, or "aws" for AWS's own: a worker connected elsewhere is refused.
    pub endpoint: String,
    /// The multipart upload.
    pub upload_id: String,
    /// Part size in bytes (after growing to fit 10,000 parts).
    pub part_size: u64,
    /// Number of parts.
    pub parts: u32,
    /// Checksum algorithm (its S3 name).
    pub checksum: ChecksumAlgorithm,
    /// Number of slices, one per worker.
    pub shards: u32,
    /// Whether `finish` may replace an object already at the key (`--replace`).
    #[serde(default)]
    pub replace: bool,
}

impl ShardPlan {
    /// The destination.
    pub(crate) fn target(&self) -> ObjectUrl {
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        }
    }

    /// The parts, as `tally upload` cuts them; refuses a plan whose numbers do not agree.
    pub(crate) fn part_plan(&self, at: &PlanAt) -> Result<Plan, Error> {
        let bad = |why: String| ShardError::Plan {
            plan: at.to_string(),
            why,
        };
        if !(crate::vocab::MIN_PART_SIZE..=crate::vocab::MAX_PART_SIZE).contains(&self.part_size) {
            return Err(bad(format!(
                "part size {} is outside S3's limits",
                self.part_size
            ))
            .into());
        }
        let plan = Plan::new(self.size, self.part_size)?;
        if plan.count() != self.parts
            || plan.part_size() != self.part_size
            || !(1..=self.parts).contains(&self.shards)
        {
            return Err(bad(format!(
                "{} parts of {} bytes in {} shards do not fit a file of {} bytes: was it edited? plan again",
                self.parts, self.part_size, self.shards, self.size
            ))
            .into());
        }
        Ok(plan)
    }

    /// The part numbers of slice `index`.
    pub(crate) fn slice(&self, index: u32) -> std::ops::RangeInclusive<u32> {
        parts_of(index, self.shards, self.parts)
    }
}

/// Where PLAN lives: a path (on a file system every worker mounts) or an S3 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanAt {
    /// A file.
    File(PathBuf),
    /// `s3://BUCKET/KEY`.
    S3(ObjectUrl),
}

impl PlanAt {
    /// `s3://BUCKET/KEY`, else a path.
    pub(crate) fn parse(text: &str) -> Result<PlanAt, Error> {
        if text.starts_with("s3://") {
            let url = ObjectUrl::parse(text)?;
            if crate::vocab::is_prefix(&url.key) {
                return Err(Error::Usage(format!(
                    "--plan {text} names a prefix: give the plan's own key, e.g. {text}plan.json"
                )));
            }
            Ok(PlanAt::S3(url))
        } else if text.is_empty() {
            Err(Error::Usage("the plan path is empty".into()))
        } else {
            Ok(PlanAt::File(PathBuf::from(text)))
        }
    }
}

impl std::fmt::Display for PlanAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanAt::File(p) => write!(f, "{}", p.display()),
            PlanAt::S3(u) => write!(f, "{u}"),
        }
    }
}

/// What `tally shard plan` did (printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PlanReport {
    /// Where PLAN was written.
    pub plan_at: String,
    /// The plan.
    pub plan: ShardPlan,
    /// Each slice's first and last part number, by index.
    pub slices: Vec<(u32, u32)>,
    /// Reads of a PLAN in S3 until it returned what was written (none for a file).
    pub read_back_reads: Option<u32>,
}

impl PlanReport {
    /// The text report.
    pub(crate) fn text(&self) -> String {
        let p = &self.plan;
        let at = &self.plan_at;
        format!(
            "planned s3://{}/{}: {} bytes in {} parts of {} bytes ({}), {} shards of {}-{} parts; upload {}\nplan: {at}\nnext: tally shard run {at} --index I (I = 0 to {}; or under an array job, without --index), then tally shard finish {at}\n",
            p.bucket,
            p.key,
            p.size,
            p.parts,
            p.part_size,
            p.checksum,
            p.shards,
            self.slices
                .iter()
                .map(|(a, b)| b - a + 1)
                .min()
                .unwrap_or(0),
            self.slices
                .iter()
                .map(|(a, b)| b - a + 1)
                .max()
                .unwrap_or(0),
            p.upload_id,
            p.shards - 1,
        )
    }
}

/// `tally shard plan`: checks the file, the key and PLAN's place, creates the upload with `cfg`'s
/// part size and checksum (grown to fit 10,000 parts, as `tally upload` does), writes PLAN.
pub(crate) async fn plan<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    shards: u32,
    replace: bool,
    at: &PlanAt,
) -> Result<PlanReport, Error> {
    let target = &cfg.target;
    let path = cfg.source.clone();
    let src = blocking(move || Source::open(&path)).await?;
    let parts = shared_parts(cfg, src.len(), shards)?;
    refuse_taken(s3, at, target, replace).await?;
    let source = std::path::absolute(&cfg.source).map_err(|e| Error::Source {
        path: cfg.source.clone(),
        why: e.to_string(),
    })?;
    let src = std::sync::Arc::new(src);
    let fingerprint = {
        let src = src.clone();
        blocking(move || crate::manifest::fingerprint(src.bytes())).await
    };
    let alg = cfg.checksum;
    let settings = ObjectSettings::default().for_file(&cfg.source);
    let upload_id = session::create(s3, target, alg, &settings).await?;
    let plan = ShardPlan {
        format: FORMAT,
        source,
        size: src.len(),
        fingerprint,
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        endpoint: s3.endpoint_label(),
        upload_id: upload_id.clone(),
        part_size: parts.part_size(),
        parts: parts.count(),
        checksum: alg,
        shards,
        replace,
    };
    let read_back_reads = match write(s3, at, &plan).await {
        Ok(r) => r,
        Err(cause) => {
            return Err(session::abort(s3, target, upload_id, cause).await);
        }
    };
    Ok(PlanReport {
        plan_at: at.to_string(),
        slices: (0..shards)
            .map(|i| {
                let r = plan.slice(i);
                (*r.start(), *r.end())
            })
            .collect(),
        plan,
        read_back_reads,
    })
}

/// The file's parts of `cfg.part_size`: more than one, and at least one for each of `shards`.
fn shared_parts(cfg: &UploadConfig, len: u64, shards: u32) -> Result<Plan, Error> {
    let parts = match Plan::new(len, cfg.part_size)? {
        Plan::Single { len } => {
            return Err(Error::Usage(format!(
                "{} ({len} bytes) fits in one part of {} bytes: nothing to share between machines: use tally upload, or a smaller --part-size",
                cfg.source.display(),
                cfg.part_size
            )));
        }
        p => p,
    };
    if !(1..=parts.count()).contains(&shards) {
        return Err(Error::Usage(format!(
            "--shards {shards}: choose 1 to {} (the file has {} parts of {} bytes; each shard sends at least one)",
            parts.count(),
            parts.count(),
            parts.part_size()
        )));
    }
    Ok(parts)
}

/// Refuses when a plan is already at `at`, or (without `replace`) an object at the key.
async fn refuse_taken<C: S3Api>(
    s3: &C,
    at: &PlanAt,
    target: &ObjectUrl,
    replace: bool,
) -> Result<(), Error> {
    if let Some(old) = read_opt(s3, at).await? {
        return Err(ShardError::PlanExists {
            plan: at.to_string(),
            upload_id: old.upload_id,
            bucket: old.bucket,
            key: old.key,
        }
        .into());
    }
    if !replace {
        match s3.head_object(target, None).await {
            Ok(_) => {
                return Err(ShardError::ObjectExists {
                    bucket: target.bucket.clone(),
                    key: target.key.clone(),
                    consequence: "nothing was created".into(),
                }
                .into());
            }
            Err(e) if e.kind == S3ErrorKind::NotFound => {}
            Err(e) => return Err(Error::s3("HeadObject", None, None)(e)),
        }
    }
    Ok(())
}

/// Writes `plan` at `at`; for S3, returns the reads it took until one returned what was written.
async fn write<C: S3Api>(s3: &C, at: &PlanAt, plan: &ShardPlan) -> Result<Option<u32>, Error> {
    let mut text = serde_json::to_string_pretty(plan).expect("plans serialize");
    text.push('\n');
    match at {
        PlanAt::File(path) => {
            let (p, bytes) = (path.clone(), text.into_bytes());
            // Readable by the workers, who may run as other users: a plan holds no secrets.
            blocking(move || crate::fsx::write_atomic(&p, &bytes, 0o644))
                .await
                .map_err(|e| ShardError::Plan {
                    plan: at.to_string(),
                    why: format!("cannot write it ({e}): check the folder exists and is writable"),
                })?;
            Ok(None)
        }
        PlanAt::S3(url) => {
            let body = Bytes::from(text.into_bytes());
            // SHA-256 and Content-MD5: S3 verifies both on receipt.
            let hash = {
                let b = body.clone();
                crate::exec::on_pool(move || hash::hash_part(ChecksumAlgorithm::Sha256, true, &b))
                    .await
            };
            let settings = ObjectSettings {
                content_type: Some("application/json".into()),
                ..ObjectSettings::default()
            };
            s3.put_object(
                url,
                ChecksumAlgorithm::Sha256,
                body.clone().into(),
                &hash,
                &settings,
            )
            .await
            .map_err(Error::s3("PutObject", None, None))?;
            let mut backoff = Policy::WAIT.start().until(Instant::now() + READ_BACK);
            let mut reads = 0;
            loop {
                reads += 1;
                match read_raw(s3, url).await {
                    Ok(Some(got)) if got == body => return Ok(Some(reads)),
                    Ok(_) => {}
                    Err(e) if e.kind.is_retryable() => {}
                    Err(e) => return Err(Error::s3("GetObject", None, None)(e)),
                }
                if !backoff.wait().await {
                    return Err(ShardError::PlanNotReadBack {
                        plan: at.to_string(),
                        seconds: READ_BACK.as_secs(),
                    }
                    .into());
                }
            }
        }
    }
}

/// The bytes of the object at `url`, `None` when there is none.
async fn read_raw<C: S3Api>(s3: &C, url: &ObjectUrl) -> Result<Option<Bytes>, crate::s3::S3Error> {
    let head = match s3.head_object(url, None).await {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if head.size > MAX_PLAN_BYTES {
        // Not a plan; returned whole it would be refused by the parser anyway.
        return Ok(Some(Bytes::from_static(b"(larger than a plan)")));
    }
    match s3.get_range(url, 0..head.size, head.etag.as_ref()).await {
        Ok(b) => Ok(Some(b)),
        // Replaced or removed between HEAD and GET: the caller reads again.
        Err(e)
            if matches!(
                e.kind,
                S3ErrorKind::NotFound | S3ErrorKind::PreconditionFailed
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads PLAN at `at`.
pub(crate) async fn read<C: S3Api>(s3: &C, at: &PlanAt) -> Result<ShardPlan, Error> {
    read_opt(s3, at).await?.ok_or_else(|| {
        ShardError::Plan {
            plan: at.to_string(),
            why: "there is no plan there: run tally shard plan first, or check the path".into(),
        }
        .into()
    })
}

/// Reads PLAN at `at`, `None` when there is none.
async fn read_opt<C: S3Api>(s3: &C, at: &PlanAt) -> Result<Option<ShardPlan>, Error> {
    let bytes = match at {
        PlanAt::File(path) => {
            let p = path.clone();
            match blocking(move || std::fs::read(&p)).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(ShardError::Plan {
                        plan: at.to_string(),
                        why: format!("cannot read it: {e}"),
                    }
                    .into());
                }
            }
        }
        PlanAt::S3(url) => match read_raw(s3, url).await {
            Ok(Some(b)) => b.to_vec(),
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::s3("GetObject", None, None)(e)),
        },
    };
    parse(&bytes, at).map(Some)
}

fn parse(bytes: &[u8], at: &PlanAt) -> Result<ShardPlan, Error> {
    let bad = |why: String| -> Error {
        ShardError::Plan {
            plan: at.to_string(),
            why,
        }
        .into()
    };
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let v: Version = serde_json::from_slice(bytes)
        .map_err(|_| bad("not a tally shard plan (unreadable JSON)".into()))?;
    if v.format != FORMAT {
        return Err(bad(format!(
            "plan format {} is not the {FORMAT} this tally reads: use the tally that wrote it",
            v.format
        )));
    }
    let plan: ShardPlan =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a tally shard plan ({e})")))?;
    plan.part_plan(at)?;
    Ok(plan)
}

/// Refuses a file whose size or fingerprint is not the plan's (blocking: reads 3 MiB).
pub(crate) fn check_file(plan: &ShardPlan, src: &Source, path: &Path) -> Result<(), ShardError> {
    let differs = |why: String| ShardError::FileDiffers {
        path: path.to_owned(),
        why,
    };
    if src.len() != plan.size {
        return Err(differs(format!(
            "it has {} bytes, the plan {}",
            src.len(),
            plan.size
        )));
    }
    if crate::manifest::fingerprint(src.bytes()) != plan.fingerprint {
        return Err(differs(
            "its content differs from the plan's fingerprint (bytes at its start, middle or end changed)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::fake::FakeS3;
    use crate::vocab::MIB;

    fn sample() -> ShardPlan {
        ShardPlan {
            format: FORMAT,
            source: "/shared/master.mov".into(),
            size: 13 * 5 * MIB - 7,
            fingerprint: "ab".repeat(32),
            bucket: "bkt".into(),
            key: "master.mov".into(),
            endpoint: "aws".into(),
            upload_id: "up-1".into(),
            part_size: 5 * MIB,
            parts: 13,
            checksum: ChecksumAlgorithm::Sha256,
            shards: 4,
            replace: false,
        }
    }

    /// `len` bytes written to `dir/master.mov` and the settings to upload them to
    /// `s3://bkt/master.mov` in parts of 5 MiB, 2 at a time, with SHA-256.
    fn master(dir: &std::path::Path, len: u64, step: u64) -> (Vec<u8>, UploadConfig) {
        let file = dir.join("master.mov");
        let bytes: Vec<u8> = (0..len).map(|i| (i * step % 251) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let cfg = UploadConfig::new(
            file,
            "s3://bkt/master.mov",
            5 * MIB,
            2,
            ChecksumAlgorithm::Sha256,
        )
        .unwrap();
        (bytes, cfg)
    }

    /// Worker `index` of the plan `p` at `at`, 2 parts at a time.
    fn worker(at: &PlanAt, p: &ShardPlan, index: u32) -> super::super::run::Worker {
        super::super::run::Worker {
            at: at.clone(),
            plan: p.clone(),
            assigned: super::super::Assigned {
                index,
                from: "--index",
            },
            file: None,
            concurrency: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_in_s3_is_read_back_until_the_read_returns_what_was_written() {
        // The first two HEADs see a stale, empty object: the plan is read again, with backoff,
        // until the read returns the bytes written.
        use std::sync::atomic::{AtomicU32, Ordering};
        let heads = std::sync::Arc::new(AtomicU32::new(0));
        let seen = heads.clone();
        let s3 = crate::s3::tamper::Tamper::new(FakeS3::default()).head_reply(move |h| {
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                h.size = 0;
            }
        });
        let at = PlanAt::parse("s3://bkt/plans/master.json").unwrap();
        let reads = write(&s3, &at, &sample()).await.unwrap();
        assert_eq!(reads, Some(3), "two stale reads, then the plan");
        assert_eq!(read(&s3, &at).await.unwrap(), sample());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn slices_sent_in_any_order_complete_once_every_part_is_there() {
        use crate::progress::Silent;
        let dir = tempfile::tempdir().unwrap();
        let (bytes, cfg) = master(dir.path(), 13 * 5 * MIB - 7, 31);
        let fake = FakeS3::default();
        let at = PlanAt::File(dir.path().join("plan.json"));
        let report = plan(&fake, &cfg, 4, false, &at).await.unwrap();
        assert_eq!(report.slices, vec![(1, 3), (4, 6), (7, 9), (10, 13)]);
        let again = plan(&fake, &cfg, 4, false, &at).await.unwrap_err();
        assert!(
            matches!(
                again.domain::<ShardError>(),
                Some(ShardError::PlanExists { .. })
            ),
            "{again}"
        );
        assert_eq!(
            fake.uploads_in_progress(),
            1,
            "the second plan created nothing"
        );
        let p = read(&fake, &at).await.unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let worker = |index| worker(&at, &p, index);
        for i in [2, 0] {
            let r = super::super::run(&fake, &worker(i), &Silent, &cancel)
                .await
                .unwrap();
            assert_eq!(r.parts_sent, r.last_part - r.first_part + 1);
        }
        let e = super::super::finish(&fake, &at, &p, true, &Silent)
            .await
            .unwrap_err();
        assert!(
            matches!(e.domain::<ShardError>(), Some(ShardError::Incomplete { missing: 7, slices, .. }) if slices == "1, 3"),
            "{e}"
        );
        assert_eq!(fake.completes(), 0, "nothing completed");
        for i in [3, 1] {
            super::super::run(&fake, &worker(i), &Silent, &cancel)
                .await
                .unwrap();
        }
        let f = super::super::finish(&fake, &at, &p, true, &Silent)
            .await
            .unwrap();
        assert!(f.if_none_match);
        assert_eq!(fake.object("master.mov").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.completes(), 1);
    }

    /// A worker's part that went out twice, of which the server kept the dropped copy (Garage
    /// 2.5): the finisher completes from the listing and cannot know it, so the worker sends that
    /// part once more before it ends, and the finish completes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_part_a_worker_sent_twice_is_sent_once_more_before_the_worker_ends() {
        use crate::progress::Silent;
        let dir = tempfile::tempdir().unwrap();
        let (bytes, cfg) = master(dir.path(), 4 * 5 * MIB + 3, 7);
        let fake = FakeS3::default();
        let at = PlanAt::File(dir.path().join("plan.json"));
        plan(&fake, &cfg, 1, false, &at).await.unwrap();
        let p = read(&fake, &at).await.unwrap();
        fake.leave_dropped_copy(3);
        let cancel = tokio_util::sync::CancellationToken::new();
        let r = super::super::run(&fake, &worker(&at, &p, 0), &Silent, &cancel)
            .await
            .unwrap();
        assert_eq!(r.parts_sent, 5);
        assert_eq!(fake.part_uploads(), 5 + 1, "part 3 once more");
        super::super::finish(&fake, &at, &p, true, &Silent)
            .await
            .unwrap();
        assert_eq!(fake.object("master.mov").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.completes(), 1);
    }

    #[tokio::test]
    async fn a_plan_round_trips_through_a_file_and_s3_and_an_edited_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeS3::default();
        let p = sample();
        for at in [
            PlanAt::File(dir.path().join("plan.json")),
            PlanAt::parse("s3://bkt/plans/master.json").unwrap(),
        ] {
            assert_eq!(read_opt(&fake, &at).await.unwrap(), None, "{at}");
            let reads = write(&fake, &at, &p).await.unwrap();
            assert_eq!(reads.is_some(), matches!(at, PlanAt::S3(_)), "{at}");
            assert_eq!(read(&fake, &at).await.unwrap(), p, "{at}");
        }
        let at = PlanAt::File(dir.path().join("plan.json"));
        let mut edited = std::fs::read_to_string(dir.path().join("plan.json")).unwrap();
        edited = edited.replace("\"parts\": 13", "\"parts\": 12");
        std::fs::write(dir.path().join("plan.json"), edited).unwrap();
        let e = read(&fake, &at).await.unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        std::fs::write(dir.path().join("plan.json"), "{\"format\": 2}").unwrap();
        let e = read(&fake, &at).await.unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");
    }
}
