//! One PutObject, for a file that fits in one part.

use crate::error::Error;
use crate::exec::on_pool;
use crate::hash::{self, ObjectChecksum, WholeFile};
use crate::plan::Part;
use crate::s3::{FileRange, PutBody, S3Api, WriteReply};
use crate::vocab::{ChecksumType, ObjectSettings, PartHash};

use super::Run;
use super::report::{
    Check, Checks, Method, ObjectReport, UploadReport, compare_checksum, compare_etag,
};

/// Sends the whole file in one PutObject with its checksum and Content-MD5, and checks the reply.
pub(crate) async fn put<C: S3Api>(run: &Run<'_, C>) -> Result<UploadReport, Error> {
    let (cfg, src) = (run.cfg, &run.src);
    let part = Part {
        number: 1,
        offset: 0,
        len: src.len(),
    };
    run.progress.start(part.len, 1);
    // A small file's bytes were read whole and hashed when it was opened (`source::HELD_MAX`),
    // and are counted in the engine's byte budget as long as its upload runs (`upload::Held`):
    // they are sent from there. A larger one is read and hashed piece by piece into one buffer,
    // counted here, and read again as it is sent, piece by piece (`PutBody::File`), holding
    // nothing.
    let held = match run.held {
        Some(_) => None,
        None => Some(run.engine.reserve(part.len.min(READ_PIECE as u64)).await),
    };
    let (hash, whole, kept) = read_and_hash(run, &part).await?;
    // The caller's check (a tree's ASC MHL check), on the digests of this one read: a file that
    // fails it is not sent.
    if let Some(check) = run.check {
        check.check(&whole.hashes)?;
    }
    let seconds_to_first_send = Some(run.started.elapsed().as_secs_f64());
    let settings = cfg.object.for_file(&cfg.source);
    let (body, _held) = match kept {
        Some(bytes) => (PutBody::Memory(bytes), held),
        None => {
            // Released before the send (an arm that does not move `held` would keep it alive
            // to the end of the function).
            drop(held);
            let range = FileRange::new(src.file(), part.offset, part.len);
            (PutBody::File(range), None)
        }
    };
    let reply = send_one(run, body, &hash, &settings).await?;
    run.progress.part_done(part.len);
    let sent = Sent {
        local: ObjectChecksum {
            algorithm: cfg.checksum,
            kind: ChecksumType::FullObject,
            value: hash.checksum.base64(),
        },
        etag: hash.md5_hex(),
        hash,
        reply,
        settings,
    };
    let checks = check_reply(&sent)?;
    // The reply proves the object when the server verified and echoed the checksum sent and
    // returned the file's MD5 as the ETag: a tree leaves the read-back to a listing of many files.
    let reply_proves = checks.object_checksum == Check::Matched && checks.etag == Check::Matched;
    let read_back_by_listing = cfg.verify && cfg.read_back_by_listing && reply_proves;
    let verified = if cfg.verify && !read_back_by_listing {
        // Not read back: nothing is kept (one PutObject has nothing to resume); the same command
        // proves the object.
        let unproven = |e| Error::WrittenUnproven {
            source: Box::new(e),
            url: cfg.target.to_string(),
        };
        let hashes = std::slice::from_ref(&sent.hash);
        Some(Box::pin(super::read_back(run, cfg.checksum, hashes, None, unproven)).await?)
    } else {
        None
    };
    let mut report = report(run, sent, checks, verified, whole);
    report.read_back_by_listing = read_back_by_listing;
    report.seconds_to_first_send = seconds_to_first_send;
    Ok(report)
}

/// The bytes read and hashed at a time.
const READ_PIECE: usize = 1024 * 1024;

/// The file hashed: its part hash, the whole-file hashes, and, for a small file, the bytes to
/// send (those read whole when it was opened, `source::HELD_MAX`: one read of each byte, and no
/// blocking step for the send; the 4 KiB frames of `scripts/bench-many` go this way). A larger
/// file is read piece by piece and hashed.
///
/// One PutObject always carries Content-MD5: its ETag is then the MD5 `tally md5` can use.
/// A larger file's checksum and MD5 run on two threads: there is no other part beside it. The
/// whole-file hashes (`--file-hash`) ride with the MD5: the body is the whole file. A larger
/// file's bytes are read (`pread`) into one buffer of [`READ_PIECE`], not taken from the mapping:
/// a file truncated meanwhile is a short read ("file changed"), never a SIGBUS while hashing it.
/// The send reads them again the same way.
async fn read_and_hash<C: S3Api>(
    run: &Run<'_, C>,
    part: &Part,
) -> Result<(PartHash, WholeFile, Option<bytes::Bytes>), Error> {
    // A small file was hashed in the step that read it whole (`Run::open`), and is sent from
    // those bytes: they are the version of the file that was hashed.
    if let Some(h) = &run.held {
        let body = run.src.range(part.range());
        return Ok((h.part.clone(), h.whole.clone(), Some(body)));
    }
    let checked = run.src.clone();
    let alg = run.cfg.checksum;
    let formats = super::whole_file_formats(run.cfg, run.check);
    let range = part.range();
    on_pool(move || {
        checked.check_unchanged()?;
        let mut h = hash::SingleHasher::new(alg, &formats);
        let mut buf = vec![0u8; (range.end - range.start).min(READ_PIECE as u64) as usize];
        let mut at = range.start;
        while at < range.end {
            let piece = &mut buf[..(range.end - at).min(READ_PIECE as u64) as usize];
            checked.read_into(at, piece)?;
            h.update(piece);
            at += piece.len() as u64;
        }
        checked.check_unchanged()?;
        let (hash, whole) = h.finish();
        Ok::<_, Error>((hash, whole, None))
    })
    .await
}

/// The PutObject itself, stopped by Ctrl-C; a failure that a file cut short explains is said so.
async fn send_one<C: S3Api>(
    run: &Run<'_, C>,
    body: PutBody,
    hash: &PartHash,
    settings: &ObjectSettings,
) -> Result<WriteReply, Error> {
    let cfg = run.cfg;
    // A body sent from memory cannot be cut short by the file: its failure is S3's to explain.
    let from_file = matches!(body, PutBody::File(_));
    let reply = tokio::select! {
        r = run.s3.put_object(&cfg.target, cfg.checksum, body, hash, settings) => r,
        () = run.cancel.cancelled() => return Err(Error::Interrupted),
    };
    match reply {
        Ok(r) => Ok(r),
        // A file cut short under the mapping fails the send: say what really happened.
        Err(e) => {
            let e = Error::s3("PutObject", None, None)(e);
            let e = if from_file {
                send::changed_or(&run.src, e).await
            } else {
                e
            };
            Err(super::complete::not_replaced(e, &cfg.target))
        }
    }
}

/// What was sent and what S3 answered.
struct Sent {
    local: ObjectChecksum,
    etag: Option<String>,
    hash: PartHash,
    reply: WriteReply,
    settings: ObjectSettings,
}

/// The reply's checksum and ETag compared with the local ones (a mismatch is an error).
fn check_reply(sent: &Sent) -> Result<Checks, Error> {
    let object_checksum = compare_checksum(
        "object checksum",
        &sent.local.value,
        sent.reply.checksum.as_deref(),
        None,
    )?;
    let etag = compare_etag(
        "object ETag",
        sent.etag.as_deref(),
        &sent.reply,
        sent.settings.sse.as_ref(),
        None,
    )?;
    Ok(Checks {
        part_checksums_matched: u32::from(object_checksum == Check::Matched),
        part_etags_matched: u32::from(etag == Check::Matched),
        object_checksum,
        etag,
    })
}

/// The report of the one PutObject (its timings are filled in by the caller).
fn report<C: S3Api>(
    run: &Run<'_, C>,
    sent: Sent,
    checks: Checks,
    verified: Option<crate::verify::AfterUpload>,
    whole: WholeFile,
) -> UploadReport {
    let (cfg, src) = (run.cfg, &run.src);
    let object = ObjectReport::new(
        &sent.settings,
        &sent.reply,
        verified.as_ref().map(|v| &v.head),
    );
    UploadReport {
        bucket: cfg.target.bucket.clone(),
        key: cfg.target.key.clone(),
        size: src.len(),
        part_size: src.len(),
        parts: 1,
        method: Method::SinglePut,
        checksum: sent.local,
        etag: sent.etag,
        upload_id: None,
        stored_etag: sent.reply.etag.as_ref().map(|e| e.as_str().to_owned()),
        version_id: sent.reply.version_id,
        checks,
        parts_sent: 1,
        parts_skipped: 0,
        resumed: false,
        manifest: None,
        md5: sent.hash.md5_hex(),
        md5_tag: None,
        md5_tag_error: None,
        file_hash_tags: Vec::new(),
        file_hash_tag_error: None,
        read_back_reads: None,
        read_back_by_listing: false,
        verified,
        object,
        file_hashes: whole.hashes,
        seconds_to_first_send: None,
        seconds: 0.0,
        mib_per_s: 0.0,
    }
}

use super::send;
