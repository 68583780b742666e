//! One part of a download: a streaming ranged GET, each piece written at its offset in the
//! partial file and hashed as it arrives (off the async threads, one pass), then checked; a part
//! that does not match, or whose body breaks off, is fetched again under [`Policy::RANGED_READ`].

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::error::{Changed, Error};
use crate::hash::{RangeHash, RangeHasher};
use crate::progress::Progress;
use crate::remote::ranged::Pinned;
use crate::retry::Policy;
use crate::s3::{ObjectRead, RemoteChecksum};
use crate::s3::{S3Error, S3ErrorKind};
use crate::upload::hedge::{self, Flights};
use crate::vocab::ETag;
use crate::vocab::ObjectUrl;

use super::dest::io_error;
use super::partial::{BLOCK, Block, PartialFile};
use super::proof::{Against, Plan};

/// Bytes gathered from the body before they are written and hashed in one step. Each part holds
/// at most two of these (one being written and hashed, one filling), whatever its size.
pub(crate) const BUFFER: usize = BLOCK;

/// What every part of one download shares.
pub(crate) struct Ctx<'a> {
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
    /// The rates of the parts being received, to tell a slow one (`upload::hedge`).
    pub flights: Flights,
    /// Set once the server answered a GET `?partNumber=N` with another length than the part's
    /// (moto): every part is then read by its byte range.
    pub by_range: std::sync::atomic::AtomicBool,
    /// Whether a part far slower than the others is fetched again (`--hedge`).
    pub hedge: bool,
}

/// How many times one part is fetched again because it came far slower than the others.
const SLOW_REFETCHES: u32 = 2;

/// A part checked (or hashed, where only the whole object can be checked).
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
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
    /// Stopped: far slower than the other parts (its last write landed first).
    Slow,
}

/// Fetches part `i` (`range`), writes it into the partial file, and checks it.
pub(crate) async fn part<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    i: usize,
    range: Range<u64>,
) -> Result<Fetched, Error> {
    let number = i as u32 + 1;
    let mut backoff = Policy::RANGED_READ.start();
    let mut tries = Tries::default();
    loop {
        let attempt = backoff.attempt();
        // A part of a multipart object is asked for by its number, so that S3 sends its checksum
        // (unless the server answered a part number with the wrong bytes: then by its range).
        let by_range = ctx.by_range.load(Ordering::Relaxed);
        let by_number = (ctx.plan.multipart && !by_range).then_some(number);
        let watch = ctx.hedge && tries.slow < SLOW_REFETCHES;
        let failure = match once(s3, ctx, range.clone(), by_number, watch).await {
            Ok((hash, reply)) => {
                let against = ctx.plan.against(i, reply.as_ref());
                match against.as_ref().map(|a| a.check(&hash)) {
                    None | Some(Ok(())) => {
                        return Ok(Fetched {
                            hash,
                            against,
                            attempts: attempt,
                            corrupt: tries.corrupt,
                        });
                    }
                    Some(Err(computed)) => {
                        let a = against.expect("checked");
                        let delay =
                            tries.corrupt(ctx, number, &range, (a, computed), &mut backoff)?;
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            Err(Failed::Fatal(e)) => return Err(e),
            Err(Failed::Slow) => {
                tries.slow += 1;
                ctx.progress.note(&format!(
                    "part {number} arrives far slower than the others: fetching it again on \
                     another connection"
                ));
                continue;
            }
            Err(Failed::S3(e)) if !e.kind.is_retryable() => {
                return Err(Error::s3("GetObject", Some(number), None)(e));
            }
            Err(Failed::S3(e)) => Error::s3("GetObject", Some(number), None)(e),
            Err(Failed::Length(got)) => {
                match wrong_length(ctx, number, &range, by_number.is_some(), got) {
                    Some(e) => e,
                    None => continue,
                }
            }
        };
        tracing::info!(part = number, attempt, error = %failure, "part fetch failed");
        if !backoff.wait().await {
            return Err(failure);
        }
    }
}

/// What the fetches of one part met so far.
#[derive(Default)]
struct Tries {
    /// Fetches whose bytes did not match.
    corrupt: u32,
    /// Fetches stopped as far slower than the others.
    slow: u32,
    /// The value the first corrupt fetch hashed to, and whether every later one hashed the same.
    first_bad: Option<String>,
}

impl Tries {
    /// A fetch of part `number` (`range`) hashed to `computed`, not what `against` says: how long
    /// to wait before fetching it again, or the corruption error when fetching again cannot help.
    fn corrupt(
        &mut self,
        ctx: &Ctx<'_>,
        number: u32,
        range: &Range<u64>,
        (against, computed): (Against, String),
        backoff: &mut crate::retry::Backoff,
    ) -> Result<std::time::Duration, Error> {
        self.corrupt += 1;
        // The same wrong value twice: the bytes are what the server holds, the network is not
        // changing them, and more fetches will not help.
        let repeated = self.first_bad.as_ref().is_some_and(|f| *f == computed);
        self.first_bad.get_or_insert_with(|| computed.clone());
        let delay = if repeated { None } else { backoff.next_delay() };
        let Some(delay) = delay else {
            return Err(Error::Corrupt {
                url: ctx.obj.to_string(),
                what: format!("part {number} (bytes {}..{})", range.start, range.end),
                against: against.describe(),
                computed,
                expected: against.s3_value(),
                attempts: backoff.attempt(),
                same_each_time: repeated,
            });
        };
        ctx.progress.note(&format!(
            "part {number} arrived different from {}: fetching it again",
            against.describe()
        ));
        if let Some(m) = ctx.progress.meter() {
            m.take_back(range.end - range.start);
        }
        Ok(delay)
    }
}

/// A body of `got` bytes for part `number` (`range`), asked for by its number if `by_number`:
/// the error to retry on, or `None` to fetch again at once by the byte range (more bytes than the
/// part holds, in a reply that ended normally: no network cut makes a body longer; the server
/// does not serve parts by number, as moto).
fn wrong_length(
    ctx: &Ctx<'_>,
    number: u32,
    range: &Range<u64>,
    by_number: bool,
    got: u64,
) -> Option<Error> {
    let len = range.end - range.start;
    if by_number && got > len {
        if !ctx.by_range.swap(true, Ordering::Relaxed) {
            ctx.progress.note(&format!(
                "the server answered GET ?partNumber={number} with more than the part's {len} \
                 bytes ({got} before tally stopped reading): it does not serve parts by number; \
                 reading every part by its byte range instead"
            ));
        }
        return None;
    }
    Some(Error::s3("GetObject", Some(number), None)(
        S3Error::transport(format!(
            "the body of bytes {}..{} was {got} bytes long, not {len}",
            range.start, range.end
        )),
    ))
}

/// One GET of `range` (as part `part`, when given): streamed into the file at its offsets and hashed; returns the hashes and
/// the checksum the reply carried.
async fn once<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    range: Range<u64>,
    part: Option<u32>,
    watch: bool,
) -> Result<(RangeHash, Option<RemoteChecksum>), Failed> {
    let hasher = RangeHasher::new(ctx.plan.alg, ctx.plan.md5);
    if range.is_empty() {
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
    // The body is read by a task of its own. Its connection's task wakes it at every piece, and
    // a task woken by another runs next on the same worker thread, with the piece still in that
    // core's cache; read from this future instead (driven by the command's own thread), every
    // piece crossed threads: on 2 cores that cost about 8% of a download's CPU (4 GiB: 55,000
    // voluntary context switches, against 28,000 with every piece read where it arrived).
    let sink = Sink {
        file: ctx.file.clone(),
        path: ctx.path.clone(),
        meter: ctx.progress.meter(),
    };
    let len = range.end - range.start;
    let (moved, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
    let task = Reading(tokio::spawn(sink.receive(
        reply.body,
        range,
        hasher,
        moved.clone(),
        stop.clone(),
    )));
    let mut task = std::pin::pin!(task.finish());
    let slow = async {
        if watch {
            hedge::slow(&ctx.flights, moved, len).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let h = tokio::select! {
        h = &mut task => h?,
        () = slow => {
            // Stopped where it is (its write in flight ends first): the part is fetched again.
            stop.cancel();
            task.await?
        }
    };
    Ok((h.finish(), reply.checksum))
}

/// A spawned body read, stopped if the part's future is dropped (the download failed elsewhere).
struct Reading(tokio::task::JoinHandle<Result<RangeHasher, Failed>>);

impl Reading {
    async fn finish(mut self) -> Result<RangeHasher, Failed> {
        match (&mut self.0).await {
            Ok(done) => done,
            Err(_) => Err(Failed::Fatal(Error::Internal("a body read panicked"))),
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a part's bytes go: the partial file.
struct Sink {
    file: Arc<PartialFile>,
    path: PathBuf,
    /// Counts the bytes as they arrive (the bar), taken back if the attempt fails.
    meter: Option<crate::progress::Meter>,
}

impl Sink {
    /// Writes `body` (the bytes of `range`) at its offsets and hashes it, a block at a time.
    async fn receive(
        self,
        mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, S3Error>>,
        range: Range<u64>,
        hasher: RangeHasher,
        moved: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> Result<RangeHasher, Failed> {
        let meter = self.meter.clone();
        let mut counted = 0u64;
        let out = self
            .receive_counted(&mut body, range, hasher, (&moved, &stop), &mut counted)
            .await;
        if let Some(m) = meter.filter(|_| out.is_err()) {
            m.take_back(counted);
        }
        out
    }

    async fn receive_counted(
        &self,
        body: &mut futures::stream::BoxStream<'static, Result<bytes::Bytes, S3Error>>,
        range: Range<u64>,
        hasher: RangeHasher,
        (moved, stop): (&AtomicU64, &CancellationToken),
        counted: &mut u64,
    ) -> Result<RangeHasher, Failed> {
        let len = range.end - range.start;
        let mut received = 0u64;
        let mut blocks = Blocks {
            filling: self.file.block(range.start),
            pending: None,
            idle: Some((hasher, None)),
        };
        loop {
            let piece = tokio::select! {
                piece = body.next() => piece,
                () = stop.cancelled() => Some(Err(S3Error::transport("stopped: too slow".into()))),
            };
            let Some(piece) = piece else { break };
            let broken = match piece {
                _ if stop.is_cancelled() => Some(Failed::Slow),
                Ok(p) if received + p.len() as u64 <= len => {
                    received += p.len() as u64;
                    moved.store(received, Ordering::Relaxed);
                    if let Some(m) = &self.meter {
                        m.add(p.len() as u64);
                        *counted += p.len() as u64;
                    }
                    blocks.push(self, &p).await?;
                    None
                }
                Ok(p) => Some(Failed::Length(received + p.len() as u64)),
                Err(e) => Some(Failed::S3(e)),
            };
            if let Some(failed) = broken {
                // The write in flight ends before the range is fetched again, so that it can never
                // land on top of the next attempt's bytes.
                if let Some(p) = blocks.pending.take() {
                    let _ = p.await;
                }
                return Err(failed);
            }
        }
        let h = blocks.end(self).await?;
        if received != len {
            return Err(Failed::Length(received));
        }
        Ok(h)
    }

    /// Hashes `block` and writes it at its offsets, on one blocking thread: one handoff per
    /// block. Hashing it on the CPU pool while another thread wrote it took three, and the pool's
    /// threads spun between jobs of a MiB: on 2 cores shared with the server that was 3-10% more
    /// CPU and 38,000 involuntary context switches for 4 GiB, against 8,000. The hashing threads
    /// are bounded by the parts in flight (the byte budget), not by the cores.
    fn flush(&self, block: Block, mut h: RangeHasher) -> Pending {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            h.update(block.data());
            file.write(&block)?;
            Ok((h, Some(block)))
        })
    }

    async fn finish(&self, p: Pending) -> Result<(RangeHasher, Option<Block>), Failed> {
        match p.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(Failed::Fatal(io_error(&self.path, &e))),
            Err(_) => Err(Failed::Fatal(Error::Internal("a write task panicked"))),
        }
    }
}

/// The blocks of one body: the one filling, and the previous one being written and hashed
/// meanwhile (or, when none is, the idle hasher and a spare block).
struct Blocks {
    filling: Block,
    pending: Option<Pending>,
    idle: Option<(RangeHasher, Option<Block>)>,
}

impl Blocks {
    /// Adds `piece`; each block filled is handed to be written and hashed once the previous one
    /// is done.
    async fn push(&mut self, sink: &Sink, mut rest: &[u8]) -> Result<(), Failed> {
        while !rest.is_empty() {
            let n = self.filling.push(rest);
            rest = &rest[n..];
            if self.filling.is_full() {
                let (h, spare) = self.settled(sink).await?;
                let next = match spare {
                    Some(mut b) => {
                        b.reset(self.filling.end());
                        b
                    }
                    None => sink.file.block(self.filling.end()),
                };
                let full = std::mem::replace(&mut self.filling, next);
                self.pending = Some(sink.flush(full, h));
            }
        }
        Ok(())
    }

    /// The hasher and a spare block, once the block in flight (if any) is written.
    async fn settled(&mut self, sink: &Sink) -> Result<(RangeHasher, Option<Block>), Failed> {
        match self.pending.take() {
            Some(p) => sink.finish(p).await,
            None => Ok(self
                .idle
                .take()
                .expect("a hasher is idle when nothing is pending")),
        }
    }

    /// Writes and hashes what is left; the blocks go back to the file's pool.
    async fn end(mut self, sink: &Sink) -> Result<RangeHasher, Failed> {
        let (mut h, spare) = self.settled(sink).await?;
        if self.filling.data().is_empty() {
            sink.file.give(Some(self.filling));
        } else {
            let last;
            (h, last) = sink.finish(sink.flush(self.filling, h)).await?;
            sink.file.give(last);
        }
        sink.file.give(spare);
        Ok(h)
    }
}

/// A block being written and hashed: the hasher and the block come back for the next bytes.
type Pending = tokio::task::JoinHandle<std::io::Result<(RangeHasher, Option<Block>)>>;

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
