//! CompleteMultipartUpload after hedging: a server that kept the dropped copy of a part.
//!
//! Why (issue 24): a part was sent twice and one request dropped: hedged (the slower request
//! cancelled), or retried by the SDK after a timeout. On AWS S3 a request dropped before its body
//! ended stores nothing, and the part's one stored copy is the one tally recorded. Garage 2.5 differs: an UploadPart takes its place among the part's copies
//! when its first block arrives, and one dropped after that point leaves an unfinished copy that
//! outranks the finished one, so CompleteMultipartUpload answers `InvalidPart`. The bytes the
//! dropped request had handed to the network still reach the server after tally dropped it
//! (a proxy's or the kernel's buffers), so the unfinished copy can land after the winner.
//!
//! What tally does: when CompleteMultipartUpload answers `InvalidPart` and this run sent some
//! parts more than once, those parts (only those) are sent once more, side by side: the same bytes from the mapping
//! and the same checksum, checked and journalled as any part. A copy stored later outranks every
//! earlier one on every server, so Complete is then sent again. At most [`ROUNDS`] times; then
//! the error stands and the upload is kept for resuming, as for any failed Complete. The journal
//! marks a part sent twice (`PartRecord::sent_twice`), so a later run that resumes the upload
//! knows it too.

use crate::error::Error;
use crate::exec::blocking;
use crate::hash::ObjectChecksum;
use crate::s3::{S3Api, WriteReply};

use super::Run;
use super::complete;
use super::send;
use super::session::{DonePart, Session};

/// Rounds of "send the parts sent twice again, complete again" after an `InvalidPart`.
pub(crate) const ROUNDS: usize = 2;

/// CompleteMultipartUpload of `done`, reconciled as the module says when a dropped copy of a part
/// sent twice stands in the way. `done` is updated with any ETag that changed.
pub(crate) async fn complete<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    done: &mut [DonePart],
    local: &ObjectChecksum,
) -> Result<WriteReply, Error> {
    let upload_id = start.upload_id.as_str();
    let mut round = 0;
    loop {
        let err = match complete::complete(run, upload_id, start.alg, done, local).await {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        let twice: Vec<u32> = done
            .iter()
            .filter(|d| d.sent_twice)
            .map(|d| d.part.number)
            .collect();
        if round == ROUNDS || twice.is_empty() || !invalid_part(&err) {
            return Err(err);
        }
        round += 1;
        run.progress.note(&format!(
            "the server refused the parts (InvalidPart): it kept a dropped copy of part(s) \
             {twice:?}, sent twice; sending them once more, then completing again"
        ));
        send_twice_sent_again(run, start, done).await?;
    }
}

/// Sends every part of `done` that went out twice once more, side by side; how many.
pub(super) async fn send_twice_sent_again<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    done: &mut [DonePart],
) -> Result<usize, Error> {
    let again: Vec<_> = done
        .iter_mut()
        .filter(|d| d.sent_twice)
        .map(|d| send_again(run, start, d))
        .collect();
    let n = again.len();
    futures::future::try_join_all(again).await?;
    Ok(n)
}

/// Whether `e` is CompleteMultipartUpload's `InvalidPart`.
fn invalid_part(e: &Error) -> bool {
    matches!(e, Error::S3 { source, .. } if source.code.as_deref() == Some("InvalidPart"))
}

/// Sends `d`'s part once more, alone, and checks and journals the reply as any part's.
async fn send_again<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    d: &mut DonePart,
) -> Result<(), Error> {
    let upload_id = start.upload_id.as_str();
    let src = run.src.clone();
    blocking(move || src.check_unchanged()).await?;
    let body = run.src.part(&d.part);
    let sending = run.s3.upload_part(
        &run.cfg.target,
        upload_id,
        d.part.number,
        start.alg,
        body,
        &d.hash,
    );
    let (_, etag) = send::checked(run, upload_id, &d.part, &d.hash, sending).await?;
    if etag != d.etag {
        // A server whose part ETags are not the MD5 (SSE-KMS): the journal follows the copy kept
        // (still marked sent twice: whether this copy is the one kept is known at Complete).
        send::journal(start, &d.part, &d.hash, &etag, true).await?;
        d.etag = etag;
    }
    Ok(())
}
