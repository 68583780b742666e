//! One PutObject, for a file that fits in one part.

use crate::error::Error;
use crate::exec::on_pool;
use crate::hash::{self, ObjectChecksum};
use crate::plan::Part;
use crate::s3::S3Api;
use crate::vocab::ChecksumType;

use super::Run;
use super::report::{
    Check, Checks, Method, ObjectReport, UploadReport, compare_checksum, compare_etag,
};

/// Sends the whole file in one PutObject with its checksum and Content-MD5, and checks the reply.
pub(crate) async fn put<C: S3Api>(run: &Run<'_, C>) -> Result<UploadReport, Error> {
    let (cfg, src) = (run.cfg, &run.src);
    let alg = cfg.checksum;
    let part = Part {
        number: 1,
        offset: 0,
        len: src.len(),
    };
    run.progress.start(part.len, 1);
    let _held = run.engine.reserve(part.len).await;
    // One PutObject always carries Content-MD5: its ETag is then the MD5 `tally md5` can use.
    // Checksum and MD5 run on two threads: there is no other part to hash beside this one. The
    // whole-file hashes (`--file-hash`) ride with the MD5: the body is the whole file. The body
    // is read into memory (`pread`), not taken from the mapping: a file truncated meanwhile is a
    // short read ("file changed"), never a SIGBUS while hashing or sending it.
    let checked = src.clone();
    let formats = super::whole_file_formats(cfg);
    let range = part.range();
    let (body, hash, whole) = on_pool(move || {
        checked.check_unchanged()?;
        let body = checked.read_copy(range)?;
        checked.check_unchanged()?;
        let (hash, whole) = hash::hash_single(alg, &formats, &body);
        Ok::<_, Error>((body, hash, whole))
    })
    .await?;
    // The ASC MHL check, on the digests of this one read: a file that does not match its history
    // is not sent.
    if let Some(expected) = &cfg.mhl_check {
        expected.check(&whole.hashes).map_err(Error::from)?;
    }
    let seconds_to_first_send = Some(run.started.elapsed().as_secs_f64());
    let settings = cfg.object.for_file(&cfg.source);
    let reply = tokio::select! {
        r = run.s3.put_object(&cfg.target, alg, body, &hash, &settings) => r,
        () = run.cancel.cancelled() => return Err(Error::Interrupted),
    };
    let reply = match reply {
        Ok(r) => r,
        // A file cut short under the mapping fails the send: say what really happened.
        Err(e) => {
            let e = send::changed_or(src, Error::s3("PutObject", None, None)(e)).await;
            return Err(super::complete::not_replaced(e, &cfg.target));
        }
    };
    run.progress.part_done(part.len);
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
    let etag_check = compare_etag(
        "object ETag",
        etag.as_deref(),
        &reply,
        settings.sse.as_ref(),
        None,
    )?;
    // The reply proves the object when the server verified and echoed the checksum sent and
    // returned the file's MD5 as the ETag: a tree leaves the read-back to a listing of many files.
    let reply_proves = object_checksum == Check::Matched && etag_check == Check::Matched;
    let read_back_by_listing = cfg.verify && cfg.read_back_by_listing && reply_proves;
    let verified = if cfg.verify && !read_back_by_listing {
        Some(
            crate::verify::after_upload_or_bytes(
                run.s3,
                &cfg.target,
                alg,
                std::slice::from_ref(&hash),
                None,
                &cfg.source,
            )
            .await?,
        )
    } else {
        None
    };
    let object = ObjectReport::new(&settings, &reply, verified.as_ref().map(|v| &v.head));
    Ok(UploadReport {
        bucket: cfg.target.bucket.clone(),
        key: cfg.target.key.clone(),
        size: src.len(),
        part_size: src.len(),
        parts: 1,
        method: Method::SinglePut,
        checksum: local,
        etag,
        upload_id: None,
        stored_etag: reply.etag.as_ref().map(|e| e.as_str().to_owned()),
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
        file_hash_tags: Vec::new(),
        file_hash_tag_error: None,
        read_back_reads: None,
        read_back_by_listing,
        verified,
        object,
        file_hashes: whole.hashes,
        seconds_to_first_send,
        seconds: 0.0,
        mib_per_s: 0.0,
    })
}

use super::send;
