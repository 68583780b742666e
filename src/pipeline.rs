//! The one place the stages meet: plan -> source -> hash -> upload -> complete -> check.
//!
//! Backpressure is explicit: part bodies are hashed on the rayon pool at most `hash_ahead` parts
//! ahead of the uploads, and at most `concurrency` parts are in flight. A 1 TB file is never hashed
//! in full before its first part is sent, and memory does not grow with the file.

use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ObjectUrl, UploadConfig};
use crate::error::{Error, S3Error};
use crate::hash::{self, ChecksumAlgorithm, ChecksumType, ObjectChecksum, PartHash};
use crate::plan::{Part, Plan};
use crate::progress::Progress;
use crate::s3::{CompletedPart, S3Api, WriteReply};
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
    /// The ETag computed locally (unquoted).
    pub etag: String,
    /// The multipart upload id (none for a single PUT).
    pub upload_id: Option<String>,
    /// The object version, on versioned buckets.
    pub version_id: Option<String>,
    /// What S3's replies confirmed.
    pub checks: Checks,
    /// Wall time in seconds, from opening the file to the last check.
    pub seconds: f64,
    /// Throughput in MiB/s.
    pub mib_per_s: f64,
}

/// How far hashing may run ahead of the uploads, in parts: enough to keep every hashing thread busy.
fn hash_ahead() -> usize {
    rayon::current_num_threads().max(1) * 2
}

/// Hashes `body` on the rayon pool; the async task only waits.
async fn hash_on_pool(alg: ChecksumAlgorithm, body: Bytes) -> PartHash {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(hash::hash_part(alg, &body));
    });
    rx.await.expect("a hashing task never drops its reply")
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
    let src = tokio::task::spawn_blocking(move || Source::open(&path))
        .await
        .expect("opening the source does not panic")?;
    let plan = Plan::new(src.len(), cfg.part_size)?;
    progress.start(plan.len(), plan.count());
    let result = match plan {
        Plan::Single { .. } => single_put(s3, cfg, &src, progress, cancel).await,
        Plan::Multipart { .. } => multipart(s3, cfg, &src, &plan, progress, cancel).await,
    };
    progress.finish();
    let mut report = result?;
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
) -> Result<UploadReport, Error> {
    let alg = cfg.checksum;
    let part = Part {
        number: 1,
        offset: 0,
        len: src.len(),
    };
    let body = src.part(&part);
    let hash = hash_on_pool(alg, body.clone()).await;
    let reply = tokio::select! {
        r = s3.put_object(&cfg.target, alg, body, &hash) => r.map_err(|source| Error::S3 {
            op: "PutObject",
            part: None,
            upload_id: None,
            source,
        })?,
        () = cancel.cancelled() => return Err(Error::Interrupted),
    };
    progress.part_done(part.len);
    let local = ObjectChecksum {
        algorithm: alg,
        kind: ChecksumType::FullObject,
        value: hash.checksum.base64(),
    };
    let etag = hash::hex(&hash.md5);
    let object_checksum = compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        None,
    )?;
    let etag_check = compare_etag("object ETag", &etag, &reply, None)?;
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
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

async fn multipart<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Source,
    plan: &Plan,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<UploadReport, Error> {
    let alg = cfg.checksum;
    let kind = alg.multipart_type();
    let target = &cfg.target;
    let upload_id = tokio::select! {
        r = s3.create_multipart(target, alg, kind) => r.map_err(|source| Error::S3 {
            op: "CreateMultipartUpload",
            part: None,
            upload_id: None,
            source,
        })?,
        () = cancel.cancelled() => return Err(Error::Interrupted),
    };
    tracing::info!(upload_id = %upload_id, "created multipart upload");
    let sent = tokio::select! {
        r = send_parts(s3, cfg, src, plan, &upload_id, progress) => r,
        () = cancel.cancelled() => Err(Error::Interrupted),
    };
    let done = match sent {
        Ok(done) => done,
        Err(e) => return Err(abort(s3, target, upload_id, e).await),
    };
    let hashes: Vec<PartHash> = done.iter().map(|(_, h, _)| h.clone()).collect();
    let local = hash::multipart_checksum(alg, kind, &hashes);
    // Once CompleteMultipartUpload is sent it is not cancelled: its outcome must be known.
    let reply = match complete(s3, cfg, src, &upload_id, &done, &local).await {
        Ok(reply) => reply,
        Err(e) => return Err(abort(s3, target, upload_id, e).await),
    };
    // The object exists from here on: a mismatch is reported, there is nothing to abort.
    let etag = hash::multipart_etag(&hashes).trim_matches('"').to_owned();
    let uid = Some(upload_id.as_str());
    let object_checksum = compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        uid,
    )?;
    let etag_check = compare_etag("object ETag", &etag, &reply, uid)?;
    Ok(UploadReport {
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        size: plan.len(),
        part_size: plan.part_size(),
        parts: plan.count(),
        method: "multipart",
        checksum: local,
        etag,
        upload_id: Some(upload_id.clone()),
        version_id: reply.version_id,
        checks: Checks {
            part_checksums_matched: count_matched(&done, |r| r.checksum.is_some()),
            part_etags_matched: count_matched(&done, WriteReply::etag_is_md5),
            object_checksum,
            etag: etag_check,
        },
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

fn count_matched(
    done: &[(Part, PartHash, WriteReply)],
    compared: impl Fn(&WriteReply) -> bool,
) -> u32 {
    done.iter().filter(|(_, _, r)| compared(r)).count() as u32
}

/// Aborts `upload_id` after `cause` stopped it, and says in the error whether that worked.
async fn abort<C: S3Api>(s3: &C, target: &ObjectUrl, upload_id: String, cause: Error) -> Error {
    let abort_error = s3
        .abort_multipart(target, &upload_id)
        .await
        .err()
        .map(Box::new);
    Error::UploadFailed {
        source: Box::new(cause),
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        upload_id,
        abort_error,
    }
}

/// Hashes and uploads every part, with at most `hash_ahead()` hashed parts waiting and
/// `cfg.concurrency` in flight, checking each reply. Returns the parts in part-number order.
async fn send_parts<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Source,
    plan: &Plan,
    upload_id: &str,
    progress: &dyn Progress,
) -> Result<Vec<(Part, PartHash, WriteReply)>, Error> {
    let alg = cfg.checksum;
    let target = &cfg.target;
    let mut done: Vec<(Part, PartHash, WriteReply)> = stream::iter(plan.parts())
        .map(|part| {
            let body = src.part(&part);
            async move { (part, body.clone(), hash_on_pool(alg, body).await) }
        })
        .buffered(hash_ahead())
        .map(|(part, body, hash)| async move {
            let reply = s3
                .upload_part(target, upload_id, part.number, alg, body, &hash)
                .await
                .map_err(|source| Error::S3 {
                    op: "UploadPart",
                    part: Some(part.number),
                    upload_id: Some(upload_id.to_owned()),
                    source,
                })?;
            check_part(&part, &hash, &reply, upload_id)?;
            progress.part_done(part.len);
            Ok::<_, Error>((part, hash, reply))
        })
        .buffer_unordered(cfg.concurrency)
        .try_collect()
        .await?;
    done.sort_by_key(|(p, _, _)| p.number);
    Ok(done)
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
            expected: hash::hex(&hash.md5),
            actual: "no ETag".into(),
            upload_id: uid.map(str::to_owned),
        });
    }
    compare_etag(&format!("{what} ETag"), &hash::hex(&hash.md5), reply, uid)?;
    Ok(())
}

/// Sends CompleteMultipartUpload listing every part with its checksum, after making sure the file
/// was not rewritten while it was being sent.
async fn complete<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    src: &Source,
    upload_id: &str,
    done: &[(Part, PartHash, WriteReply)],
    local: &ObjectChecksum,
) -> Result<WriteReply, Error> {
    src.check_unchanged()?;
    let parts: Vec<CompletedPart> = done
        .iter()
        .map(|(part, hash, reply)| CompletedPart {
            number: part.number,
            etag: reply.etag.clone().unwrap_or_default(),
            checksum: hash.checksum.base64(),
        })
        .collect();
    let full = (local.kind == ChecksumType::FullObject).then_some(local.value.as_str());
    s3.complete_multipart(&cfg.target, upload_id, cfg.checksum, &parts, full)
        .await
        .map_err(|source: S3Error| Error::S3 {
            op: "CompleteMultipartUpload",
            part: None,
            upload_id: Some(upload_id.to_owned()),
            source,
        })
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
    local: &str,
    reply: &WriteReply,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    if !reply.etag_is_md5() {
        return Ok(Check::NotComparableKms);
    }
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
