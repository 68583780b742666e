//! One part of a download: a streaming ranged GET, each piece written at its offset in the
//! partial file and hashed as it arrives (off the async threads, one pass), then checked; a part
//! that does not match, or whose body breaks off, is fetched again under [`Policy::RANGED_READ`].

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;

use crate::config::ObjectUrl;
use crate::error::{Changed, Error, S3Error, S3ErrorKind};
use crate::hash::{RangeHash, RangeHasher};
use crate::progress::Progress;
use crate::remote::ranged::Pinned;
use crate::retry::Policy;
use crate::s3::{ETag, ObjectRead, RemoteChecksum};

use super::dest::io_error;
use super::partial::{BLOCK, Block, PartialFile};
use super::proof::{Against, Plan};

/// Bytes gathered from the body before they are written and hashed in one step. Each part holds
/// at most two of these (one being written and hashed, one filling), whatever its size.
pub const BUFFER: usize = BLOCK;

/// What every part of one download shares.
pub struct Ctx<'a> {
    /// The object.
    pub obj: &'a ObjectUrl,
    /// The object the reads must come from.
    pub pin: &'a Pinned,
    /// The partial file, written at offsets.
    pub file: Arc<PartialFile>,
    /// Its path, for errors.
    pub path: PathBuf,
    /// What to hash, what to check against.
    pub plan: &'a Plan,
    /// Progress and notes.
    pub progress: &'a dyn Progress,
}

/// A part checked (or hashed, where only the whole object can be checked).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its hashes.
    pub hash: RangeHash,
    /// What it was checked against on its own, if anything.
    pub against: Option<Against>,
    /// Fetches made (more than one when it was fetched again).
    pub attempts: u32,
    /// Fetches whose bytes did not match.
    pub corrupt: u32,
}

/// Why one fetch did not give the part.
enum Failed {
    /// The request or its body failed; retryable when the kind says so.
    S3(S3Error),
    /// The body was longer or shorter than the range.
    Length(u64),
    /// A final error (the file, the object replaced).
    Fatal(Error),
}

/// Fetches part `i` (`range`), writes it into the partial file, and checks it.
pub async fn part<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    i: usize,
    range: Range<u64>,
) -> Result<Fetched, Error> {
    let number = i as u32 + 1;
    let mut backoff = Policy::RANGED_READ.start();
    let mut corrupt = 0;
    loop {
        let attempt = backoff.attempt();
        // A part of a multipart object is asked for by its number, so that S3 sends its checksum.
        let by_number = ctx.plan.multipart.then_some(number);
        let failure = match once(s3, ctx, range.clone(), by_number).await {
            Ok((hash, reply)) => {
                let against = ctx.plan.against(i, reply.as_ref());
                match against.as_ref().map(|a| a.check(&hash)) {
                    None | Some(Ok(())) => {
                        return Ok(Fetched {
                            hash,
                            against,
                            attempts: attempt,
                            corrupt,
                        });
                    }
                    Some(Err(computed)) => {
                        corrupt += 1;
                        let a = against.expect("checked");
                        let Some(delay) = backoff.next_delay() else {
                            return Err(Error::Corrupt {
                                url: ctx.obj.to_string(),
                                what: format!(
                                    "part {number} (bytes {}..{})",
                                    range.start, range.end
                                ),
                                against: a.describe(),
                                computed,
                                expected: a.s3_value(),
                                attempts: attempt,
                            });
                        };
                        ctx.progress.note(&format!(
                            "part {number} arrived different from {}: fetching it again",
                            a.describe()
                        ));
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            Err(Failed::Fatal(e)) => return Err(e),
            Err(Failed::S3(e)) if !e.kind.is_retryable() => {
                return Err(Error::s3("GetObject", Some(number), None)(e));
            }
            Err(Failed::S3(e)) => Error::s3("GetObject", Some(number), None)(e),
            Err(Failed::Length(got)) => {
                Error::s3("GetObject", Some(number), None)(S3Error::transport(format!(
                    "the body of bytes {}..{} was {got} bytes long, not {}",
                    range.start,
                    range.end,
                    range.end - range.start
                )))
            }
        };
        tracing::info!(part = number, attempt, error = %failure, "part fetch failed");
        if !backoff.wait().await {
            return Err(failure);
        }
    }
}

/// One GET of `range` (as part `part`, when given): streamed into the file at its offsets and hashed; returns the hashes and
/// the checksum the reply carried.
async fn once<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    range: Range<u64>,
    part: Option<u32>,
) -> Result<(RangeHash, Option<RemoteChecksum>), Failed> {
    let len = range.end - range.start;
    let hasher = RangeHasher::new(ctx.plan.alg, ctx.plan.md5);
    if len == 0 {
        return Ok((hasher.finish(), None));
    }
    let reply = s3
        .get_stream(
            ctx.obj,
            range.clone(),
            part,
            ctx.pin.etag.as_ref(),
            ctx.pin.version_id.as_deref(),
        )
        .await
        .map_err(|e| replaced_or(ctx, e))?;
    let checksum = reply.checksum;
    let mut body = reply.body;
    let mut received = 0u64;
    // The block filling, and the previous one being written and hashed meanwhile.
    let mut filling = ctx.file.block(range.start);
    let mut pending: Option<Pending> = None;
    let mut idle = Some((hasher, None));
    while let Some(piece) = body.next().await {
        let broken = match piece {
            Ok(p) if received + p.len() as u64 <= len => {
                received += p.len() as u64;
                let mut rest = &p[..];
                while !rest.is_empty() {
                    let n = filling.push(rest);
                    rest = &rest[n..];
                    if filling.is_full() {
                        let (h, spare) = match pending.take() {
                            Some(p) => finish(ctx, p).await?,
                            None => idle
                                .take()
                                .expect("a hasher is idle when nothing is pending"),
                        };
                        let next = match spare {
                            Some(mut b) => {
                                b.reset(filling.end());
                                b
                            }
                            None => ctx.file.block(filling.end()),
                        };
                        pending = Some(flush(ctx, std::mem::replace(&mut filling, next), h));
                    }
                }
                None
            }
            Ok(p) => Some(Failed::Length(received + p.len() as u64)),
            Err(e) => Some(Failed::S3(e)),
        };
        if let Some(failed) = broken {
            // The write in flight ends before the range is fetched again, so that it can never
            // land on top of the next attempt's bytes.
            if let Some(p) = pending.take() {
                let _ = p.await;
            }
            return Err(failed);
        }
    }
    let (mut h, _) = match pending.take() {
        Some(p) => finish(ctx, p).await?,
        None => idle
            .take()
            .expect("a hasher is idle when nothing is pending"),
    };
    if !filling.data().is_empty() {
        (h, _) = finish(ctx, flush(ctx, filling, h)).await?;
    }
    if received != len {
        return Err(Failed::Length(received));
    }
    Ok((h.finish(), checksum))
}

/// A block being written and hashed: the hasher and the block come back for the next bytes.
type Pending = tokio::task::JoinHandle<std::io::Result<(RangeHasher, Option<Block>)>>;

/// Writes `block` at its offsets (on a blocking thread) while its bytes are hashed (on the CPU
/// pool): one pass over them, the disk and the hash at the same time.
fn flush(ctx: &Ctx<'_>, block: Block, mut h: RangeHasher) -> Pending {
    let file = ctx.file.clone();
    tokio::spawn(async move {
        let block = Arc::new(block);
        let (w, b) = (block.clone(), block.clone());
        let (written, h) = tokio::join!(
            crate::exec::blocking(move || file.write(&w)),
            crate::exec::on_pool(move || {
                h.update(b.data());
                h
            })
        );
        written?;
        Ok((h, Arc::into_inner(block)))
    })
}

async fn finish(ctx: &Ctx<'_>, p: Pending) -> Result<(RangeHasher, Option<Block>), Failed> {
    match p.await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(Failed::Fatal(io_error(&ctx.path, &e))),
        Err(_) => Err(Failed::Fatal(Error::Internal("a write task panicked"))),
    }
}

fn replaced_or(ctx: &Ctx<'_>, e: S3Error) -> Failed {
    if e.kind == S3ErrorKind::PreconditionFailed {
        Failed::Fatal(Error::ObjectChanged {
            url: ctx.obj.to_string(),
            then: ctx.pin.etag.as_ref().map(ETag::to_string),
            now: None,
            when: Changed::WhileRead,
        })
    } else {
        Failed::S3(e)
    }
}
