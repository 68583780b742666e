//! The parts not yet in S3: hashed from the mapping, sent with their checksum, checked, recorded.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Instant;

use futures::TryStreamExt as _;

use crate::error::Error;
use crate::exec::{blocking, on_pool};
use crate::hash::{self, PartHash};
use crate::manifest::PartRecord;
use crate::plan::Part;
use crate::s3::{ETag, S3Api, WriteReply};
use crate::seam;
use crate::source::Source;

use super::Run;
use super::multipart::{DonePart, Start};
use super::report::{compare_checksum, compare_etag};

/// Hashes and uploads every part not yet done through the engine's pipeline (bytes reserved in
/// order, hashing at most `hash_ahead` parts ahead, at most `--concurrency` parts of this file in
/// flight, and the engine's request slots shared with every other transfer); checks each reply
/// and records it durably before counting it.
///
/// Each part's body is taken from the mapping once ([`Source::part`]) and shared by the hash, the
/// whole-file MD5 and the send (the SDK's retries resend the same value); its pages are read ahead
/// when the part is admitted and released when the last of these drops it, i.e. once S3
/// acknowledged the part and the MD5 has it. Resident memory is then bounded by the engine's byte
/// budget whatever the file's size, plus, with `--md5-tag`, the acknowledged parts still queued for
/// the MD5 worker when it is slower than the network (its queue's depth, `multipart.rs`).
pub async fn parts<C: S3Api>(
    run: &Run<'_, C>,
    start: &Start,
    first_send: &OnceLock<Instant>,
    whole_md5: Option<&hash::SequentialFile>,
) -> Result<Vec<DonePart>, Error> {
    let (alg, md5) = (start.alg, run.cfg.content_md5);
    let upload_id = start.upload_id.as_str();
    let have: HashSet<u32> = start.done.iter().map(|d| d.part.number).collect();
    let have = &have;
    // Every part, in order: the ones S3 already holds are only fed to the whole-file MD5, if any.
    let todo = start
        .parts()
        .filter(move |p| whole_md5.is_some() || !have.contains(&p.number));
    run.engine
        .parts(
            todo,
            |p: &Part| p.len,
            |part: Part| {
                let body = run.src.part(&part);
                let send = !have.contains(&part.number);
                let (src, data) = (run.src.clone(), body.clone());
                async move {
                    // Read the part into the page cache now, while the parts before it are hashed
                    // (a hint that may start I/O, so on a blocking thread).
                    let (ahead, range) = (src.clone(), part.range());
                    blocking(move || ahead.will_need(range)).await.ok();
                    // A file that shrank would fault (SIGBUS) when its lost pages are read: look
                    // first. The stat and the hashing both run on the pool; the part's pages are
                    // mapped in one call before hashing (not one fault per 64 KiB).
                    let range = part.range();
                    let hash = on_pool(move || {
                        src.check_unchanged()?;
                        if send {
                            src.populate(range).ok();
                        }
                        Ok::<_, Error>(send.then(|| hash::hash_part(alg, md5, &data)))
                    })
                    .await?;
                    Ok((part, body, hash))
                }
            },
            |(part, body, hash)| async move {
                if let Some(m) = whole_md5 {
                    m.feed(body.clone()).await;
                }
                Ok((part, body, hash))
            },
            |(part, body, hash): (Part, bytes::Bytes, Option<PartHash>)| async move {
                let Some(hash) = hash else {
                    return Ok(None);
                };
                seam::pause("part").await;
                // The file may have shrunk since it was hashed: sending would read lost pages.
                let src = run.src.clone();
                blocking(move || src.check_unchanged()).await?;
                first_send.get_or_init(Instant::now);
                let reply = match run
                    .s3
                    .upload_part(&run.cfg.target, upload_id, part.number, alg, body, &hash)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let err = Error::s3("UploadPart", Some(part.number), Some(upload_id))(e);
                        return Err(changed_or(&run.src, err).await);
                    }
                };
                let etag =
                    check_part(&part, &hash, &reply, run.cfg.object.sse.as_ref(), upload_id)?;
                if let Some(journal) = start.journal.clone() {
                    let rec = part_record(&part, &hash, &etag);
                    blocking(move || journal.record_part(&rec)).await?;
                }
                run.progress.part_done(part.len);
                Ok(Some(DonePart {
                    part,
                    hash,
                    etag,
                    checksum_echoed: reply.checksum.is_some(),
                }))
            },
            run.cfg.concurrency,
        )
        .try_filter_map(|d| std::future::ready(Ok(d)))
        .try_collect()
        .await
}

/// `err`, unless the file changed under the mapping: a file cut short makes the kernel's copy of
/// the lost pages fail ("Bad address"), which the SDK reports as a network error. Then the true
/// cause is the change, and that is the error.
pub async fn changed_or(src: &std::sync::Arc<Source>, err: Error) -> Error {
    let src = src.clone();
    match blocking(move || src.check_unchanged()).await {
        Err(changed) => changed,
        Ok(()) => err,
    }
}

/// A part's reply must carry an ETag (CompleteMultipartUpload needs it), equal to the part's MD5
/// unless SSE-KMS is in force, and any checksum S3 echoes must be the one sent. Returns the ETag.
pub fn check_part(
    part: &Part,
    hash: &PartHash,
    reply: &WriteReply,
    sse: Option<&crate::config::Sse>,
    upload_id: &str,
) -> Result<ETag, Error> {
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
    let Some(etag) = reply.etag.clone() else {
        return Err(Error::Mismatch {
            what: format!("{what} ETag"),
            expected: hash.md5_hex().unwrap_or_else(|| "an ETag".into()),
            actual: "no ETag".into(),
            upload_id: uid.map(str::to_owned),
        });
    };
    compare_etag(
        &format!("{what} ETag"),
        hash.md5_hex().as_deref(),
        reply,
        sse,
        uid,
    )?;
    Ok(etag)
}

/// The manifest line for a part S3 acknowledged.
pub fn part_record(part: &Part, hash: &PartHash, etag: &ETag) -> PartRecord {
    PartRecord {
        number: part.number,
        offset: part.offset,
        len: part.len,
        checksum: hash.checksum.base64(),
        md5: hash.md5_hex().unwrap_or_default(),
        etag: etag.clone(),
    }
}
