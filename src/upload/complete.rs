//! CompleteMultipartUpload, sent once and confirmed before any resend; then the report.

use crate::error::Error;
use crate::exec::blocking;
use crate::hash::{self, ObjectChecksum};
use crate::manifest::CompletedRecord;
use crate::retry::Policy;
use crate::s3::S3ErrorKind;
use crate::s3::{CompletedPart, S3Api, WriteReply};
use crate::vocab::ObjectUrl;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};

use super::report::{
    Check, Checks, Method, ObjectReport, UploadReport, compare_checksum, compare_etag,
};
use super::session::{DonePart, Session};
use super::{Run, forget};

/// The object checksum these parts make (composite `-N`, or the combined full-object CRC).
pub(crate) fn local_checksum(alg: ChecksumAlgorithm, done: &[DonePart]) -> ObjectChecksum {
    let hashes: Vec<PartHash> = done.iter().map(|d| d.hash.clone()).collect();
    hash::multipart_checksum(alg, alg.multipart_type(), &hashes)
}

/// Sends CompleteMultipartUpload listing every part with its checksum, after making sure the file
/// was not rewritten while it was being sent. When the outcome is unknown (a reset, a timeout, a
/// 5xx, a 200 with an error inside), ListParts says whether the upload is still open (then it is
/// sent again, with backoff) or closed (then HEAD says whether the object is ours).
pub(crate) async fn complete<C: S3Api>(
    run: &Run<'_, C>,
    upload_id: &str,
    alg: ChecksumAlgorithm,
    done: &[DonePart],
    local: &ObjectChecksum,
) -> Result<WriteReply, Error> {
    let s = run.src.clone();
    blocking(move || s.check_unchanged()).await?;
    let parts: Vec<CompletedPart> = done
        .iter()
        .map(|d| CompletedPart {
            number: d.part.number,
            etag: d.etag.clone(),
            checksum: d.hash.checksum.base64(),
        })
        .collect();
    confirmed(
        run.s3,
        &run.cfg.target,
        upload_id,
        alg,
        &parts,
        local,
        run.cfg.object.if_absent,
    )
    .await
    .map_err(|e| not_replaced(e, &run.cfg.target))
}

/// A conditional write (`--no-overwrite`) that S3 refused because an object exists at the key:
/// said as such (the error otherwise reads as an object that changed while being read).
pub(crate) fn not_replaced(e: Error, target: &ObjectUrl) -> Error {
    match e {
        Error::S3 { source, .. } if source.kind == S3ErrorKind::PreconditionFailed => {
            Error::NotReplaced {
                url: target.to_string(),
                why: "an object appeared at the key during the upload (the server refused the conditional write, 412)".into(),
            }
        }
        e => e,
    }
}

/// Sends CompleteMultipartUpload of `parts` (in order, each with its checksum) until its outcome
/// is known, as [`complete`] describes; with `if_absent`, only if no object exists at the key
/// (`If-None-Match: *`: a key that is taken answers PreconditionFailed, nothing is replaced).
pub(crate) async fn confirmed<C: S3Api>(
    s3: &C,
    target: &ObjectUrl,
    upload_id: &str,
    alg: ChecksumAlgorithm,
    parts: &[CompletedPart],
    local: &ObjectChecksum,
    if_absent: bool,
) -> Result<WriteReply, Error> {
    let full = (local.kind == ChecksumType::FullObject).then_some(local.value.as_str());
    let failed = |e| Error::s3("CompleteMultipartUpload", None, Some(upload_id))(e);
    let mut backoff = Policy::CONFIRMED.start();
    loop {
        let sent = if if_absent {
            s3.complete_multipart_if_absent(target, upload_id, alg, parts, full)
                .await
        } else {
            s3.complete_multipart(target, upload_id, alg, parts, full)
                .await
        };
        let err = match sent {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        match s3.list_parts(target, upload_id, alg).await {
            Ok(_) if err.kind.is_retryable() => {
                tracing::warn!(attempt = backoff.attempt(), error = %err, "CompleteMultipartUpload failed; the upload is still open, sending it again");
                if !backoff.wait().await {
                    return Err(failed(err));
                }
            }
            Err(gone) if gone.kind == S3ErrorKind::NotFound => {
                // The upload is closed: an earlier attempt completed it if the object is ours.
                let head = s3.head_object(target, None).await.map_err(Error::s3(
                    "HeadObject",
                    None,
                    Some(upload_id),
                ))?;
                let ours = head.checksum.as_ref().is_some_and(|c| {
                    crate::compare::checksum(&local.value, Some(&c.value)).matched()
                });
                if ours {
                    tracing::info!("CompleteMultipartUpload had succeeded; confirmed with HEAD");
                    return Ok(reply_from_head(head));
                }
                return Err(failed(err));
            }
            _ => return Err(failed(err)),
        }
    }
}

/// What HEAD says of a completed object, in the shape of Complete's reply.
pub(crate) fn reply_from_head(head: crate::s3::HeadInfo) -> WriteReply {
    WriteReply {
        etag: head.etag,
        checksum: head.checksum.map(|c| c.value),
        checksum_type: None,
        sse: head.sse,
        version_id: head.version_id,
    }
}

/// Checks the completed object (Complete's reply, then the stored attributes read back), settles
/// the manifest (removed, or kept as a record with `--keep-manifest`) and builds the report.
pub(crate) async fn finish<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    done: &[DonePart],
    local: ObjectChecksum,
    reply: WriteReply,
    file_hashes: crate::hash::FileHashes,
) -> Result<UploadReport, Error> {
    let cfg = run.cfg;
    let target = &cfg.target;
    let upload_id = start.upload_id.as_str();
    let hashes: Vec<PartHash> = done.iter().map(|d| d.hash.clone()).collect();
    // The object exists from here on: a mismatch is reported, there is nothing to abort.
    let etag = hash::multipart_etag(&hashes);
    let uid = Some(upload_id);
    let object_checksum = compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        uid,
    )?;
    let settings = cfg.object.for_file(&cfg.source);
    let etag_check = compare_etag(
        "object ETag",
        etag.as_deref(),
        &reply,
        settings.sse.as_ref(),
        uid,
    )?;
    let verified = if cfg.verify {
        // Not read back (throttled, say): the manifest stays for the same command to prove it.
        let unproven = |e| {
            let manifest = start.manifest.clone();
            let outcome = crate::error::Outcome::Completed { manifest };
            super::session::stopped(target, upload_id, outcome, e)
        };
        Some(super::read_back(run, start.alg, &hashes, uid, unproven).await?)
    } else {
        None
    };
    let object = ObjectReport::new(&settings, &reply, verified.as_ref().map(|v| &v.head));
    settle_manifest(run, start, &reply, &file_hashes).await?;
    let keep_manifest = cfg.resume.keep_manifest;
    let parts_skipped = start.done.len() as u32;
    Ok(UploadReport {
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        size: start.plan.len(),
        part_size: start.plan.part_size(),
        parts: start.plan.count(),
        method: Method::Multipart,
        checksum: local,
        etag,
        upload_id: Some(upload_id.to_owned()),
        stored_etag: reply.etag.as_ref().map(|e| e.as_str().to_owned()),
        version_id: reply.version_id,
        checks: checks(done, object_checksum, etag_check),
        parts_sent: done.len() as u32 - parts_skipped,
        parts_skipped,
        resumed: start.resumed,
        manifest: keep_manifest.then(|| start.manifest.clone()),
        md5: None,
        md5_tag: None,
        md5_tag_error: None,
        file_hashes,
        file_hash_tags: Vec::new(),
        file_hash_tag_error: None,
        read_back_reads: None,
        read_back_by_listing: false,
        verified,
        object,
        seconds_to_first_send: None,
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

/// Settles the manifest of the completed upload: records the completion in it under
/// `--keep-manifest`, otherwise removes it (and its lock).
async fn settle_manifest<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    reply: &WriteReply,
    file_hashes: &crate::hash::FileHashes,
) -> Result<(), Error> {
    let cfg = run.cfg;
    let (journal, manifest) = (start.journal.clone(), start.manifest.clone());
    let record = CompletedRecord {
        checksum: reply.checksum.clone().unwrap_or_default(),
        etag: reply.etag.clone(),
        file_hashes: file_hashes.clone(),
    };
    // The object is complete; a kill from here on leaves a manifest whose upload no longer
    // exists, which the next run recognises as done (resume::already_complete).
    crate::seam::pause("completed").await;
    let keep_manifest = cfg.resume.keep_manifest;
    let settle_cfg = cfg.clone();
    blocking(move || match journal {
        Some(journal) if keep_manifest => journal.record_completed(&record),
        _ => {
            // The lock is still held; its file goes with the manifest it guarded.
            forget(&settle_cfg, &manifest);
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// What was checked of the parts and the object.
fn checks(done: &[DonePart], object_checksum: Check, etag_check: Check) -> Checks {
    Checks {
        part_checksums_matched: done.iter().filter(|d| d.checksum_echoed).count() as u32,
        // Under SSE-KMS (or SSE-C) no part ETag is an MD5: none was compared.
        part_etags_matched: if matches!(
            etag_check,
            Check::NotComparableKms | Check::NotComparableSseC
        ) {
            0
        } else {
            done.iter().filter(|d| d.hash.md5.is_some()).count() as u32
        },
        object_checksum,
        etag: etag_check,
    }
}
