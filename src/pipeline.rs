//! The one place the stages meet: plan -> source -> hash -> upload -> complete -> check.
//!
//! Backpressure is explicit: part bodies are hashed on the rayon pool at most `hash_ahead` parts
//! ahead of the uploads, and at most `concurrency` parts are in flight. A 1 TB file is never hashed
//! in full before its first part is sent, and memory does not grow with the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ObjectUrl, UploadConfig};
use crate::error::{Error, Outcome, S3ErrorKind};
use crate::exec::{blocking, hash_ahead, on_pool};
use crate::hash::{self, ChecksumAlgorithm, ChecksumType, ObjectChecksum, PartHash};
use crate::manifest::{self, CompletedRecord, Header, Journal, Lock, PartRecord};
use crate::plan::{Part, Plan};
use crate::progress::Progress;
use crate::s3::{CompletedPart, HeldPart, S3Api, WriteReply};
use crate::seam;
use crate::source::Source;

/// The outcome of one comparison between a local value and what S3 reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// S3 reported the value tally computed.
    Matched,
    /// S3 did not report the value, so it could not be compared.
    NotReported,
    /// The ETag is not an MD5 under SSE-KMS, so it was not compared.
    NotComparableKms,
    /// No MD5 was computed (`--content-md5` computes it), so the ETag was not predicted.
    NotPredicted,
}

/// What tally confirmed against S3's replies during the upload.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// Parts whose checksum S3 echoed back equal to the local one (the rest were not echoed).
    pub part_checksums_matched: u32,
    /// Parts whose ETag S3 returned equal to the local MD5.
    pub part_etags_matched: u32,
    /// The object checksum S3 reported against the one derived locally.
    pub object_checksum: Check,
    /// The object ETag against the one derived locally.
    pub etag: Check,
}

/// The report of a finished upload (printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Bytes uploaded.
    pub size: u64,
    /// Part size used (after growing to fit 10,000 parts); the size for a single PUT.
    pub part_size: u64,
    /// Number of parts (1 for a single PUT).
    pub parts: u32,
    /// `multipart` or `single_put`.
    pub method: &'static str,
    /// The object checksum computed locally, as S3 prints it.
    pub checksum: ObjectChecksum,
    /// The ETag computed locally (unquoted); None when no MD5 was computed.
    pub etag: Option<String>,
    /// The multipart upload id (none for a single PUT).
    pub upload_id: Option<String>,
    /// The object version, on versioned buckets.
    pub version_id: Option<String>,
    /// What S3's replies confirmed.
    pub checks: Checks,
    /// Parts sent by this run.
    pub parts_sent: u32,
    /// Parts already in S3 from an interrupted run, not sent again.
    pub parts_skipped: u32,
    /// Whether this run resumed an interrupted upload.
    pub resumed: bool,
    /// The manifest kept as an audit record (`--keep-manifest`).
    pub manifest: Option<PathBuf>,
    /// The whole file's MD5 (hex), when computed (`--md5-tag`, `--read-back`, or a single PUT).
    pub md5: Option<String>,
    /// The MD5 tag written (`--md5-tag`).
    pub md5_tag: Option<(String, crate::remote_md5::TagOutcome)>,
    /// Why the MD5 tag could not be written (the upload itself succeeded).
    pub md5_tag_error: Option<String>,
    /// Reads it took until the object read back equal (`--read-back`).
    pub read_back_reads: Option<u32>,
    /// What reading the stored object back confirmed (absent with `--no-verify`).
    pub verified: Option<crate::verify::AfterUpload>,
    /// Seconds from the start of the command to the first part's first byte being sent: the cost
    /// of getting going (for a resume: reading the manifest, ListParts, re-hashing).
    pub seconds_to_first_send: Option<f64>,
    /// Wall time in seconds, from opening the file to the last check.
    pub seconds: f64,
    /// Throughput in MiB/s.
    pub mib_per_s: f64,
}

/// CompleteMultipartUpload attempts, each sent only after ListParts shows the upload still open.
const COMPLETE_ATTEMPTS: u32 = 5;

/// Read-back and the MD5 tag, once the object exists.
async fn after_completion<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    report: &mut UploadReport,
) -> Result<(), Error> {
    let Some(md5) = report.md5.clone() else {
        return Ok(());
    };
    if let Some(budget) = cfg.read_back {
        report.read_back_reads =
            Some(crate::remote_md5::read_back(s3, &cfg.target, &md5, budget).await?);
    }
    if let Some(name) = &cfg.md5_tag {
        let version = report.version_id.clone();
        match crate::remote_md5::tag_md5(s3, &cfg.target, version.as_deref(), name, &md5).await {
            Ok(outcome) => report.md5_tag = Some((name.clone(), outcome)),
            Err(e) => report.md5_tag_error = Some(e.to_string()),
        }
    }
    Ok(())
}

/// Hashes `body` on the rayon pool.
async fn hash_on_pool(alg: ChecksumAlgorithm, md5: bool, body: Bytes) -> PartHash {
    on_pool(move || hash::hash_part(alg, md5, &body)).await
}

/// Uploads `cfg.source` to `cfg.target` and checks S3's replies against the local hashes.
///
/// On failure after CreateMultipartUpload the upload is aborted (nothing half-written is left
/// billed) and the error says so. `cancel` stops the upload the same way.
pub async fn upload<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<UploadReport, Error> {
    let started = Instant::now();
    let path = cfg.source.clone();
    let src = Arc::new(blocking(move || Source::open(&path)).await?);
    let plan = Plan::new(src.len(), cfg.part_size)?;
    progress.start(plan.len(), plan.count());
    let result = match plan {
        Plan::Single { .. } => single_put(s3, cfg, &src, progress, cancel, started).await,
        Plan::Multipart { .. } => multipart(s3, cfg, &src, progress, cancel, started).await,
    };
    progress.finish();
    let mut report = result?;
    after_completion(s3, cfg, &mut report).await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.mib_per_s = report.size as f64 / (1024.0 * 1024.0) / report.seconds.max(1e-9);
    Ok(report)
}

async fn single_put<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Source,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<UploadReport, Error> {
    let alg = cfg.checksum;
    let part = Part {
        number: 1,
        offset: 0,
        len: src.len(),
    };
    let body = src.part(&part);
    // One PutObject always carries Content-MD5: its ETag is then the MD5 `tally md5` can use.
    // Checksum and MD5 run on two threads: there is no other part to hash beside this one.
    let data = body.clone();
    let hash = on_pool(move || hash::hash_part_joined(alg, &data)).await;
    let seconds_to_first_send = Some(started.elapsed().as_secs_f64());
    let reply = tokio::select! {
        r = s3.put_object(&cfg.target, alg, body, &hash) => r.map_err(Error::s3("PutObject", None, None))?,
        () = cancel.cancelled() => return Err(Error::Interrupted),
    };
    progress.part_done(part.len);
    let local = ObjectChecksum {
        algorithm: alg,
        kind: ChecksumType::FullObject,
        value: hash.checksum.base64(),
    };
    let etag = hash.md5_hex();
    let object_checksum = compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        None,
    )?;
    let etag_check = compare_etag("object ETag", etag.as_deref(), &reply, None)?;
    let verified = if cfg.verify {
        Some(crate::verify::after_upload(s3, &cfg.target, std::slice::from_ref(&hash), None).await?)
    } else {
        None
    };
    Ok(UploadReport {
        bucket: cfg.target.bucket.clone(),
        key: cfg.target.key.clone(),
        size: src.len(),
        part_size: src.len(),
        parts: 1,
        method: "single_put",
        checksum: local,
        etag,
        upload_id: None,
        version_id: reply.version_id,
        checks: Checks {
            part_checksums_matched: u32::from(object_checksum == Check::Matched),
            part_etags_matched: u32::from(etag_check == Check::Matched),
            object_checksum,
            etag: etag_check,
        },
        parts_sent: 1,
        parts_skipped: 0,
        resumed: false,
        manifest: None,
        md5: hash.md5_hex(),
        md5_tag: None,
        md5_tag_error: None,
        read_back_reads: None,
        verified,
        seconds_to_first_send,
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

/// A part known to be in S3 and equal to the local bytes: what Complete and the report need.
#[derive(Debug, Clone)]
struct DonePart {
    part: Part,
    hash: PartHash,
    etag: String,
    checksum_echoed: bool,
}

/// What a run starts from: a fresh upload, or one found in a manifest and confirmed by ListParts.
struct Start {
    upload_id: String,
    journal: Arc<Journal>,
    alg: ChecksumAlgorithm,
    plan: Plan,
    done: Vec<DonePart>,
    resumed: bool,
}

async fn multipart<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Arc<Source>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<UploadReport, Error> {
    let target = &cfg.target;
    let abs = src.path().to_owned();
    let endpoint = s3.endpoint_label();
    let manifest_path = match &cfg.resume.manifest {
        Some(p) => p.clone(),
        None => {
            let (t, e) = (target.clone(), endpoint.clone());
            let abs = abs.clone();
            blocking(move || {
                manifest::state_dir()
                    .map(|d| manifest::default_path(&d, &abs, &e, &t.bucket, &t.key))
            })
            .await?
        }
    };
    let _lock = {
        let p = manifest_path.clone();
        blocking(move || Lock::acquire(&p)).await?
    };
    let start = tokio::select! {
        r = begin(s3, cfg, src, &manifest_path, &endpoint, progress) => r?,
        () = cancel.cancelled() => return Err(Error::Interrupted),
    };
    let upload_id = start.upload_id.clone();
    let parts_skipped = start.done.len() as u32;
    for d in &start.done {
        progress.part_done(d.part.len);
    }
    let first_send = std::sync::OnceLock::new();
    let whole = (cfg.md5_tag.is_some() || cfg.read_back.is_some())
        .then(|| hash::SequentialMd5::start(2 * hash_ahead()));
    let sent = tokio::select! {
        r = send_parts(s3, cfg, src, &start, progress, &first_send, whole.as_ref()) => r,
        () = cancel.cancelled() => Err(Error::Interrupted),
    };
    let keep = |cause: Error| Error::UploadFailed {
        source: Box::new(cause),
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        upload_id: upload_id.clone(),
        outcome: Box::new(Outcome::Kept {
            manifest: manifest_path.clone(),
        }),
    };
    let mut done = match sent {
        Ok(new) => {
            let mut all = start.done.clone();
            all.extend(new);
            all
        }
        Err(e @ Error::Manifest { .. }) => {
            // Without a journal the upload cannot be resumed: do not leave it billed.
            return Err(abort(s3, target, upload_id.clone(), e).await);
        }
        Err(e) => return Err(keep(e)),
    };
    done.sort_by_key(|d| d.part.number);
    let whole_md5 = match whole {
        Some(w) => Some(hash::hex(&blocking(move || w.finish()).await)),
        None => None,
    };
    let parts_sent = done.len() as u32 - parts_skipped;
    let hashes: Vec<PartHash> = done.iter().map(|d| d.hash.clone()).collect();
    let kind = start.alg.multipart_type();
    let local = hash::multipart_checksum(start.alg, kind, &hashes);
    seam::pause("complete").await;
    // Once CompleteMultipartUpload is sent it is not cancelled: its outcome must be known.
    let reply = complete(s3, target, src, &upload_id, start.alg, &done, &local)
        .await
        .map_err(keep)?;
    // The object exists from here on: a mismatch is reported, there is nothing to abort.
    let etag = hash::multipart_etag(&hashes);
    let uid = Some(upload_id.as_str());
    let object_checksum = compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        uid,
    )?;
    let etag_check = compare_etag("object ETag", etag.as_deref(), &reply, uid)?;
    let verified = if cfg.verify {
        Some(crate::verify::after_upload(s3, target, &hashes, uid).await?)
    } else {
        None
    };
    let journal = start.journal.clone();
    let record = CompletedRecord {
        checksum: reply.checksum.clone().unwrap_or_default(),
        etag: reply.etag.clone().unwrap_or_default(),
    };
    let keep_manifest = cfg.resume.keep_manifest;
    let resume = cfg.resume.clone();
    blocking(move || {
        if keep_manifest {
            journal.record_completed(&record)
        } else {
            // The lock is still held; its file goes with the manifest it guarded.
            manifest::remove(resume.state_dir().ok().as_deref(), journal.path());
            Ok(())
        }
    })
    .await?;
    Ok(UploadReport {
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        size: start.plan.len(),
        part_size: start.plan.part_size(),
        parts: start.plan.count(),
        method: "multipart",
        checksum: local,
        etag,
        upload_id: Some(upload_id.clone()),
        version_id: reply.version_id,
        checks: Checks {
            part_checksums_matched: done.iter().filter(|d| d.checksum_echoed).count() as u32,
            part_etags_matched: done.iter().filter(|d| d.hash.md5.is_some()).count() as u32,
            object_checksum,
            etag: etag_check,
        },
        parts_sent,
        parts_skipped,
        resumed: start.resumed,
        manifest: keep_manifest.then(|| manifest_path.clone()),
        md5: whole_md5,
        md5_tag: None,
        md5_tag_error: None,
        read_back_reads: None,
        verified,
        seconds_to_first_send: first_send
            .get()
            .map(|t: &Instant| t.duration_since(started).as_secs_f64()),
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

/// Finds where to start: resumes the upload in a matching manifest (after checking the file and
/// asking S3 what it holds), or creates a new upload and its manifest.
async fn begin<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Arc<Source>,
    manifest_path: &Path,
    endpoint: &str,
    progress: &dyn Progress,
) -> Result<Start, Error> {
    let target = &cfg.target;
    let path = manifest_path.to_owned();
    let mut loaded = blocking(move || manifest::load(&path)).await?;
    if cfg.resume.restart
        && let Some(old) = loaded.take()
    {
        let id = old.header.upload_id;
        match s3.abort_multipart(target, &id).await {
            Ok(()) => {}
            Err(e) if e.kind == S3ErrorKind::NotFound => {}
            Err(e) => return Err(Error::s3("AbortMultipartUpload", None, Some(&id))(e)),
        }
        let path = manifest_path.to_owned();
        blocking(move || std::fs::remove_file(&path))
            .await
            .map_err(|e| Error::Manifest {
                path: manifest_path.to_owned(),
                why: e.to_string(),
            })?;
        progress.note(&format!(
            "--restart: aborted upload {id} and discarded its manifest"
        ));
    }
    let fingerprint = {
        let src = src.clone();
        blocking(move || manifest::fingerprint(src.bytes())).await
    };
    if let Some(old) = loaded {
        check_header(&old.header, cfg, src, &fingerprint, endpoint, manifest_path)?;
        let alg = parse_alg(&old.header.checksum, manifest_path)?;
        let id = old.header.upload_id.clone();
        match s3.list_parts(target, &id, alg).await {
            Ok(held) => {
                let plan = Plan::new(src.len(), old.header.part_size)?;
                let journal = {
                    let p = manifest_path.to_owned();
                    Arc::new(blocking(move || Journal::open(&p)).await?)
                };
                let done = reconcile(cfg, src, &plan, alg, &old, &held, &journal, progress).await?;
                progress.note(&format!(
                    "resuming upload {id}: {} of {} parts already in S3{} (manifest {})",
                    done.len(),
                    plan.count(),
                    if old.damaged_lines > 0 {
                        format!(", {} damaged manifest lines skipped", old.damaged_lines)
                    } else {
                        String::new()
                    },
                    manifest_path.display()
                ));
                return Ok(Start {
                    upload_id: id,
                    journal,
                    alg,
                    plan,
                    done,
                    resumed: true,
                });
            }
            Err(e) if e.kind == S3ErrorKind::NotFound => {
                progress.note(&format!(
                    "upload {id} from the manifest no longer exists in S3 (aborted, or expired by a lifecycle rule): starting a new upload"
                ));
            }
            Err(e) => return Err(Error::s3("ListParts", None, Some(&id))(e)),
        }
    }
    let alg = cfg.checksum;
    let plan = Plan::new(src.len(), cfg.part_size)?;
    let upload_id = s3
        .create_multipart(target, alg, alg.multipart_type())
        .await
        .map_err(Error::s3("CreateMultipartUpload", None, None))?;
    tracing::info!(upload_id = %upload_id, "created multipart upload");
    let header = Header {
        format: manifest::FORMAT,
        source: src.path().to_owned(),
        size: src.len(),
        mtime_ns: mtime_ns(src),
        fingerprint,
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        endpoint: endpoint.to_owned(),
        upload_id: upload_id.clone(),
        part_size: plan.part_size(),
        checksum: alg.s3_name().to_owned(),
    };
    let path = manifest_path.to_owned();
    let custom = cfg.resume.manifest.is_some();
    let resume = cfg.resume.clone();
    let created = blocking(move || {
        let journal = Journal::create(&path, &header)?;
        if custom {
            manifest::register(&resume.state_dir()?, &path)?;
        }
        Ok(journal)
    });
    let journal = match created.await {
        Ok(j) => Arc::new(j),
        Err(e) => return Err(abort(s3, target, upload_id, e).await),
    };
    progress.note(&format!(
        "upload {upload_id} started; manifest {} (run the same command to resume if interrupted)",
        manifest_path.display()
    ));
    Ok(Start {
        upload_id,
        journal,
        alg,
        plan,
        done: Vec::new(),
        resumed: false,
    })
}

fn mtime_ns(src: &Source) -> i64 {
    src.fingerprint()
        .mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn parse_alg(name: &str, manifest: &Path) -> Result<ChecksumAlgorithm, Error> {
    use clap::ValueEnum as _;
    ChecksumAlgorithm::from_str(name, true).map_err(|_| {
        Error::Usage(format!(
            "manifest {} names an unknown checksum '{name}': run with --restart",
            manifest.display()
        ))
    })
}

/// Refuses to resume from a manifest that belongs to another file or destination, or whose file
/// changed since: completing would mix old and new bytes.
fn check_header(
    h: &Header,
    cfg: &UploadConfig,
    src: &Source,
    fingerprint: &str,
    endpoint: &str,
    manifest: &Path,
) -> Result<(), Error> {
    let target = &cfg.target;
    if h.bucket != target.bucket
        || h.key != target.key
        || h.endpoint != endpoint
        || h.source != src.path()
    {
        return Err(Error::Usage(format!(
            "manifest {} belongs to another upload ({} to s3://{}/{} at {}): pass the right --manifest, or --restart to discard it",
            manifest.display(),
            h.source.display(),
            h.bucket,
            h.key,
            h.endpoint
        )));
    }
    if h.size != src.len() || h.mtime_ns != mtime_ns(src) || h.fingerprint != fingerprint {
        return Err(Error::Usage(format!(
            "{} changed since upload {} was interrupted (size, modification time or content); nothing was completed: run with --restart to upload it again from the start",
            src.path().display(),
            h.upload_id
        )));
    }
    Ok(())
}

/// Decides, part by part, what S3 already holds that equals the local file. S3 is the truth: a
/// recorded part it lacks is sent again; a part it holds that was not recorded (a crash between
/// send and record) is adopted when its checksum matches the local bytes; a part whose checksum
/// differs is sent again. Unless `--trust-manifest`, recorded parts are re-hashed from the file.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    cfg: &UploadConfig,
    src: &Arc<Source>,
    plan: &Plan,
    alg: ChecksumAlgorithm,
    old: &manifest::Loaded,
    held: &[HeldPart],
    journal: &Arc<Journal>,
    progress: &dyn Progress,
) -> Result<Vec<DonePart>, Error> {
    let held: HashMap<u32, &HeldPart> = held.iter().map(|p| (p.number, p)).collect();
    let records: HashMap<u32, &PartRecord> = old.parts.iter().map(|r| (r.number, r)).collect();
    let mut done = Vec::new();
    let mut to_hash = Vec::new();
    for part in plan.parts() {
        let Some(h) = held.get(&part.number).filter(|h| h.size == part.len) else {
            continue;
        };
        let record = records.get(&part.number).filter(|r| {
            let md5 = Some(r.md5.as_str()).filter(|m| !m.is_empty());
            r.offset == part.offset && r.len == part.len && held_matches(h, &r.checksum, md5)
        });
        match record.and_then(|r| record_hash(r, alg)) {
            Some(hash) if cfg.resume.trust_manifest => done.push(DonePart {
                part,
                hash,
                etag: h.etag.clone(),
                checksum_echoed: h.checksum.is_some(),
            }),
            _ => to_hash.push((part, (*h).clone(), record.is_some())),
        }
    }
    let checked: Vec<(Part, HeldPart, bool, PartHash)> = stream::iter(to_hash)
        .map(|(part, h, recorded)| {
            let body = src.part(&part);
            let md5 = h.checksum.is_none();
            async move { (part, h, recorded, hash_on_pool(alg, md5, body).await) }
        })
        .buffered(hash_ahead())
        .collect()
        .await;
    for (part, h, recorded, hash) in checked {
        if !held_matches(&h, &hash.checksum.base64(), hash.md5_hex().as_deref()) {
            progress.note(&format!(
                "part {} in S3 differs from the local bytes {}..{}: sending it again",
                part.number,
                part.offset,
                part.offset + part.len
            ));
            continue;
        }
        if !recorded {
            let rec = part_record(&part, &hash, &h.etag);
            let j = journal.clone();
            blocking(move || j.record_part(&rec)).await?;
        }
        done.push(DonePart {
            part,
            hash,
            etag: h.etag.clone(),
            checksum_echoed: h.checksum.is_some(),
        });
    }
    Ok(done)
}

/// Whether a part S3 holds has this checksum (or, when S3 does not list checksums, this MD5 as ETag).
fn held_matches(h: &HeldPart, checksum_b64: &str, md5_hex: Option<&str>) -> bool {
    match (&h.checksum, md5_hex) {
        (Some(c), _) => c == checksum_b64,
        (None, Some(m)) => h.etag.trim_matches('"') == m,
        (None, None) => false,
    }
}

fn record_hash(r: &PartRecord, alg: ChecksumAlgorithm) -> Option<PartHash> {
    use base64::Engine as _;
    let checksum = base64::engine::general_purpose::STANDARD
        .decode(&r.checksum)
        .ok()?;
    if checksum.len() != alg.digest_len() {
        return None;
    }
    // An empty MD5 means none was computed (the default); anything else must be one.
    let md5 = if r.md5.is_empty() {
        None
    } else {
        let mut m = [0u8; 16];
        if r.md5.len() != 32 {
            return None;
        }
        for (i, b) in m.iter_mut().enumerate() {
            *b = u8::from_str_radix(r.md5.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(m)
    };
    Some(PartHash {
        checksum: hash::Digest::from_bytes(checksum),
        md5,
        len: r.len,
    })
}

fn part_record(part: &Part, hash: &PartHash, etag: &str) -> PartRecord {
    PartRecord {
        number: part.number,
        offset: part.offset,
        len: part.len,
        checksum: hash.checksum.base64(),
        md5: hash.md5_hex().unwrap_or_default(),
        etag: etag.to_owned(),
    }
}

/// Aborts `upload_id` after `cause` stopped it, and says in the error whether that worked.
async fn abort<C: S3Api>(s3: &C, target: &ObjectUrl, upload_id: String, cause: Error) -> Error {
    let outcome = match s3.abort_multipart(target, &upload_id).await {
        Ok(()) => Outcome::Aborted,
        Err(e) => Outcome::AbortFailed(e),
    };
    Error::UploadFailed {
        source: Box::new(cause),
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        upload_id,
        outcome: Box::new(outcome),
    }
}

/// Hashes and uploads every part not yet done, with at most `hash_ahead()` hashed parts waiting
/// and `cfg.concurrency` in flight; checks each reply and records it durably before counting it.
async fn send_parts<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Arc<Source>,
    start: &Start,
    progress: &dyn Progress,
    first_send: &std::sync::OnceLock<Instant>,
    whole_md5: Option<&hash::SequentialMd5>,
) -> Result<Vec<DonePart>, Error> {
    let alg = start.alg;
    let target = &cfg.target;
    let upload_id = start.upload_id.as_str();
    let have: std::collections::HashSet<u32> = start.done.iter().map(|d| d.part.number).collect();
    let md5 = cfg.content_md5;
    // Every part, in order: the ones S3 already holds are only fed to the whole-file MD5, if any.
    stream::iter(start.plan.parts())
        .filter(|p| std::future::ready(whole_md5.is_some() || !have.contains(&p.number)))
        .map(|part| {
            let body = src.part(&part);
            let send = !have.contains(&part.number);
            let (src, data) = (src.clone(), body.clone());
            async move {
                // A file that shrank would fault (SIGBUS) when its lost pages are read: look
                // first. The stat and the hashing both run on the pool, off the async threads.
                let hash = on_pool(move || {
                    src.check_unchanged()?;
                    Ok::<_, Error>(send.then(|| hash::hash_part(alg, md5, &data)))
                })
                .await?;
                Ok::<_, Error>((part, body, hash))
            }
        })
        .buffered(hash_ahead())
        .and_then(|(part, body, hash)| async move {
            if let Some(m) = whole_md5 {
                m.feed(body.clone()).await;
            }
            Ok((part, body, hash))
        })
        .try_filter_map(|(part, body, hash)| std::future::ready(Ok(hash.map(|h| (part, body, h)))))
        .map_ok(|(part, body, hash)| async move {
            seam::pause("part").await;
            first_send.get_or_init(Instant::now);
            let reply = s3
                .upload_part(target, upload_id, part.number, alg, body, &hash)
                .await
                .map_err(Error::s3("UploadPart", Some(part.number), Some(upload_id)))?;
            check_part(&part, &hash, &reply, upload_id)?;
            let etag = reply.etag.clone().unwrap_or_default();
            let rec = part_record(&part, &hash, &etag);
            let journal = start.journal.clone();
            blocking(move || journal.record_part(&rec)).await?;
            progress.part_done(part.len);
            Ok::<_, Error>(DonePart {
                part,
                hash,
                etag,
                checksum_echoed: reply.checksum.is_some(),
            })
        })
        .try_buffer_unordered(cfg.concurrency)
        .try_collect()
        .await
}

/// A part's reply must carry an ETag (CompleteMultipartUpload needs it), equal to the part's MD5
/// unless SSE-KMS is in force, and any checksum S3 echoes must be the one sent.
fn check_part(
    part: &Part,
    hash: &PartHash,
    reply: &WriteReply,
    upload_id: &str,
) -> Result<(), Error> {
    let what = format!(
        "part {} (bytes {}..{})",
        part.number,
        part.offset,
        part.offset + part.len
    );
    let uid = Some(upload_id);
    compare_checksum(
        &format!("{what} checksum"),
        &hash.checksum.base64(),
        reply.checksum.as_deref(),
        uid,
    )?;
    if reply.etag.is_none() {
        return Err(Error::Mismatch {
            what: format!("{what} ETag"),
            expected: hash.md5_hex().unwrap_or_else(|| "an ETag".into()),
            actual: "no ETag".into(),
            upload_id: uid.map(str::to_owned),
        });
    }
    compare_etag(
        &format!("{what} ETag"),
        hash.md5_hex().as_deref(),
        reply,
        uid,
    )?;
    Ok(())
}

/// Sends CompleteMultipartUpload listing every part with its checksum, after making sure the file
/// was not rewritten while it was being sent.
async fn complete<C: S3Api>(
    s3: &C,
    target: &ObjectUrl,
    src: &Arc<Source>,
    upload_id: &str,
    alg: ChecksumAlgorithm,
    done: &[DonePart],
    local: &ObjectChecksum,
) -> Result<WriteReply, Error> {
    let s = src.clone();
    blocking(move || s.check_unchanged()).await?;
    let parts: Vec<CompletedPart> = done
        .iter()
        .map(|d| CompletedPart {
            number: d.part.number,
            etag: d.etag.clone(),
            checksum: d.hash.checksum.base64(),
        })
        .collect();
    let full = (local.kind == ChecksumType::FullObject).then_some(local.value.as_str());
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let err = match s3
            .complete_multipart(target, upload_id, alg, &parts, full)
            .await
        {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        // The outcome is unknown (a reset, a timeout, a 5xx, a 200 with an error inside): find
        // out what S3 did before ever sending another CompleteMultipartUpload.
        match s3.list_parts(target, upload_id, alg).await {
            Ok(_) if err.kind.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                tracing::warn!(attempt, error = %err, "CompleteMultipartUpload failed; the upload is still open, sending it again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(gone) if gone.kind == S3ErrorKind::NotFound => {
                // The upload is closed: an earlier attempt completed it if the object is ours.
                let head = s3.head_object(target, None).await.map_err(Error::s3(
                    "HeadObject",
                    None,
                    Some(upload_id),
                ))?;
                let ours = head.checksum.as_ref().is_some_and(|c| {
                    c.value == local.value
                        || (!c.value.contains('-')
                            && local.value.split('-').next() == Some(c.value.as_str()))
                });
                if ours {
                    tracing::info!("CompleteMultipartUpload had succeeded; confirmed with HEAD");
                    return Ok(WriteReply {
                        etag: head.etag.map(|e| format!("\"{e}\"")),
                        checksum: head.checksum.map(|c| c.value),
                        checksum_type: None,
                        sse: head.sse,
                        version_id: head.version_id,
                    });
                }
                return Err(Error::s3("CompleteMultipartUpload", None, Some(upload_id))(
                    err,
                ));
            }
            _ => {
                return Err(Error::s3("CompleteMultipartUpload", None, Some(upload_id))(
                    err,
                ));
            }
        }
    }
}

/// Compares a checksum S3 reported with the local one. Servers that report a composite without
/// its `-N` suffix (as GetObjectAttributes does) are compared on the value alone.
fn compare_checksum(
    what: &str,
    local: &str,
    reported: Option<&str>,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    let Some(reported) = reported else {
        return Ok(Check::NotReported);
    };
    let local_value = local.split_once('-').map_or(local, |(v, _)| v);
    if reported == local || (!reported.contains('-') && reported == local_value) {
        Ok(Check::Matched)
    } else {
        Err(mismatch(what, local, reported, upload_id))
    }
}

/// Compares an ETag (unquoted hex, with `-N` for multipart) with S3's, unless SSE-KMS makes the
/// ETag something other than an MD5.
fn compare_etag(
    what: &str,
    local: Option<&str>,
    reply: &WriteReply,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    if !reply.etag_is_md5() {
        return Ok(Check::NotComparableKms);
    }
    let Some(local) = local else {
        return Ok(Check::NotPredicted);
    };
    match reply.etag.as_deref().map(|e| e.trim_matches('"')) {
        None => Ok(Check::NotReported),
        Some(e) if e == local => Ok(Check::Matched),
        Some(e) => Err(mismatch(what, local, e, upload_id)),
    }
}

fn mismatch(what: &str, expected: &str, actual: &str, upload_id: Option<&str>) -> Error {
    Error::Mismatch {
        what: what.to_owned(),
        expected: expected.to_owned(),
        actual: actual.to_owned(),
        upload_id: upload_id.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::MIB;
    use crate::progress::Silent;
    use crate::s3::fake::FakeS3;
    use proptest::prelude::*;

    fn data(len: u64, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn config(dir: &Path, file: PathBuf, concurrency: usize, trust: bool) -> UploadConfig {
        let mut cfg = UploadConfig::new(
            file,
            "s3://bkt/obj",
            5 * MIB,
            concurrency,
            ChecksumAlgorithm::Sha256,
        )
        .unwrap();
        cfg.resume.manifest = Some(dir.join("m.manifest"));
        cfg.resume.state_dir = Some(dir.join("state"));
        cfg.resume.trust_manifest = trust;
        cfg
    }

    /// Runs an upload until it ends or the fake crashes; a crash drops the upload future with
    /// everything in flight, as a kill -9 would (no cleanup code runs).
    async fn run(fake: &FakeS3, cfg: &UploadConfig) -> Option<Result<UploadReport, Error>> {
        let cancel = CancellationToken::new();
        tokio::select! {
            r = upload(fake, cfg, &Silent, &cancel) => Some(r),
            () = fake.crashed() => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Reference model: whatever the sequence of "send parts / crash (with the part in flight
        /// stored or not) / resume", the object ends equal to the file, completed once, with every
        /// part exactly once, and no more parts re-sent than were in flight at each crash.
        #[test]
        fn resume_after_crashes_ends_with_every_part_exactly_once(
            parts in 2u64..7,
            short in 0u64..5000,
            concurrency in 1usize..4,
            crashes in proptest::collection::vec((0u32..8, any::<bool>()), 0..4),
            trust in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("src.bin");
                let bytes = data(parts * 5 * MIB - short, seed);
                std::fs::write(&file, &bytes).unwrap();
                let cfg = config(dir.path(), file, concurrency, trust);
                let fake = FakeS3::default();
                let mut crashed = 0;
                let mut finished = false;
                for (after, store) in crashes {
                    fake.crash_after(after, store);
                    match run(&fake, &cfg).await {
                        None => crashed += 1,
                        Some(r) => {
                            r.unwrap();
                            finished = true;
                            break;
                        }
                    }
                    // Let the dropped run's last journal write land or not, like a killed process's.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                fake.disarm();
                if !finished {
                    let r = run(&fake, &cfg).await.unwrap().unwrap();
                    assert_eq!(u64::from(r.parts_sent + r.parts_skipped), parts);
                    assert_eq!(r.resumed, crashed > 0);
                }
                assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
                assert_eq!(fake.completes(), 1);
                assert_eq!(fake.uploads_in_progress(), 0);
                let bound = parts + crashed * concurrency as u64;
                assert!(
                    u64::from(fake.part_uploads()) <= bound,
                    "{} part uploads for {parts} parts and {crashed} crashes at concurrency {concurrency}",
                    fake.part_uploads()
                );
                assert!(!dir.path().join("m.manifest").exists());
            });
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resume_re_hashes_skipped_parts_unless_trusted() {
        // Part 2 changes on disk after the crash, keeping size and time, outside the fingerprint's
        // samples. The default resume re-hashes it and sends it again; --trust-manifest does not
        // look, and keeps S3's old part 2: the documented trade-off.
        for trust in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("src.bin");
            let mut bytes = data(3 * 5 * MIB, 9);
            std::fs::write(&file, &bytes).unwrap();
            let cfg = config(dir.path(), file.clone(), 1, trust);
            let fake = FakeS3::default();
            fake.crash_after(2, false);
            assert!(run(&fake, &cfg).await.is_none());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
            bytes[6 * MIB as usize] ^= 1;
            std::fs::write(&file, &bytes).unwrap();
            let f = std::fs::File::options().write(true).open(&file).unwrap();
            f.set_modified(mtime).unwrap();
            drop(f);
            fake.disarm();
            let r = run(&fake, &cfg)
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("trust={trust}: {e}"));
            if trust {
                assert_eq!(
                    r.parts_skipped, 2,
                    "trusted: parts 1 and 2 taken from the manifest"
                );
                assert_ne!(fake.object("obj").as_deref(), Some(&bytes[..]));
            } else {
                assert_eq!(r.parts_skipped, 1, "part 1 verified, part 2 sent again");
                assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
            }
        }
    }
}
