//! One part of a download: a streaming ranged GET, each piece written at its offset in the
//! partial file and hashed as it arrives (off the async threads, one pass), then checked; a part
//! that does not match, or whose body breaks off, is fetched again under [`Policy::RANGED_READ`].
//! A part told far slower than the others is fetched again as several ranges at once
//! ([`split`]), then hashed from the file.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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
use super::partial::{ALIGN, BLOCK, Block, PartialFile};
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

/// How many times one part (or one range of a part fetched again in ranges) is fetched again
/// because it came far slower than the others.
const SLOW_REFETCHES: u32 = 2;

/// The ranges a part told slow is fetched again in ([`split`]): at least this long each...
const SPLIT_PIECE: u64 = 4 << 20;
/// ... and at most this many (a part shorter than two pieces is fetched again whole).
const SPLIT_MAX: u64 = 8;

/// A part checked (or hashed, where only the whole object can be checked).
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// Its hashes.
    pub hash: RangeHash,
    /// What it was checked against on its own, if anything.
    pub against: Option<Against>,
    /// GETs made (more than one when it was fetched again, one per range when fetched again in
    /// ranges).
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
    /// Stopped: far slower than the other parts (its last write landed first), with the checksum
    /// its reply carried (a part's, when asked for by its number).
    Slow(Option<RemoteChecksum>),
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
    let gets = AtomicU32::new(0);
    // Set when the last fetch was told slow: the ranges to fetch the part again in, and the
    // checksum that fetch's reply carried.
    let mut in_ranges: Option<(Vec<Range<u64>>, Option<RemoteChecksum>)> = None;
    loop {
        // A part of a multipart object is asked for by its number, so that S3 sends its checksum
        // (unless the server answered a part number with the wrong bytes: then by its range).
        let by_range = ctx.by_range.load(Ordering::Relaxed);
        let by_number = (ctx.plan.multipart && !by_range).then_some(number);
        let watch = ctx.hedge && tries.slow < SLOW_REFETCHES;
        let fetched = match in_ranges.take() {
            Some((pieces, checksum)) => split(s3, ctx, &range, pieces, &gets)
                .await
                // Unless parts are still served by number, the slow reply's checksum may not be the
                // part's (a server that answered with the whole object).
                .map(|hash| {
                    (
                        hash,
                        checksum.filter(|_| !ctx.by_range.load(Ordering::Relaxed)),
                    )
                }),
            None => {
                gets.fetch_add(1, Ordering::Relaxed);
                let hasher = RangeHasher::new(ctx.plan.alg, ctx.plan.md5);
                let never = CancellationToken::new();
                once(s3, ctx, (range.clone(), by_number), watch, hasher, &never).await
            }
        };
        let failure = match fetched {
            Ok((hash, reply)) => {
                let against = ctx.plan.against(i, reply.as_ref());
                match against.as_ref().map(|a| a.check(&hash)) {
                    None | Some(Ok(())) => {
                        return Ok(Fetched {
                            hash,
                            against,
                            attempts: gets.load(Ordering::Relaxed),
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
            Err(Failed::Slow(checksum)) => {
                tries.slow += 1;
                let pieces = split_ranges(&range);
                if pieces.len() > 1 {
                    ctx.progress.note(&format!(
                        "part {number} arrives far slower than the others: fetching it again as \
                         {} ranges on other connections",
                        pieces.len()
                    ));
                    // Its checksum is the part's only if it was asked for by its number.
                    in_ranges = Some((pieces, checksum.filter(|_| by_number.is_some())));
                } else {
                    ctx.progress.note(&format!(
                        "part {number} arrives far slower than the others: fetching it again on \
                         another connection"
                    ));
                }
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
        let attempt = backoff.attempt();
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

/// The ranges a part told slow is fetched again in: at most [`SPLIT_MAX`], of about equal length
/// and at least [`SPLIT_PIECE`] less a 4 KiB block, split at file offsets on the file's 4 KiB
/// blocks (so that only the part's own first and last blocks are shared with its neighbours, as
/// when it is fetched whole). A single range (a part under two pieces) means whole.
fn split_ranges(range: &Range<u64>) -> Vec<Range<u64>> {
    let len = range.end - range.start;
    let n = (len / SPLIT_PIECE).clamp(1, SPLIT_MAX);
    let align = ALIGN as u64;
    let cut = |k: u64| match k {
        0 => range.start,
        k if k == n => range.end,
        k => (range.start + len * k / n) / align * align,
    };
    (0..n).map(|k| cut(k)..cut(k + 1)).collect()
}

/// Fetches the part `range` again as `pieces`, a GET each, all at once, each written at its
/// offsets; then hashes the part from the file, in order (the pieces arrive in any order), and
/// returns its hashes. Counts its GETs in `gets`.
///
/// Why: a part told slow has most of its bytes still to come (at a twentieth of its peers' rate it
/// moved a twentieth of what they did while it was watched), and on one connection again they
/// take a whole part's time after the time already lost. In ranges they take a fraction of it.
/// The price: the part's bytes are read once more, from the file, to be hashed (through the page
/// cache; where the file is written around it, from the disk), which also proves what the file
/// holds. Memory: each piece's GET holds a request slot and at most two blocks while it streams,
/// like a part, so the pieces add no more than the slots allow; the part is hashed back through
/// one of the file's spare blocks ([`PartialFile::hash_range`]), which the pieces gave back.
///
/// A piece told slow is fetched again on its own ([`SLOW_REFETCHES`]); when a piece fails otherwise,
/// the others are stopped (also those still waiting for a request slot or a reply), and every piece
/// has ended (its last write landed) before the gravest failure is returned, so no write of this
/// fetch lands on the next one's bytes; the bar takes back what the pieces counted.
async fn split<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    range: &Range<u64>,
    pieces: Vec<Range<u64>>,
    gets: &AtomicU32,
) -> Result<RangeHash, Failed> {
    let stop = CancellationToken::new();
    let ends = futures::future::join_all(
        pieces
            .iter()
            .map(|r| piece(s3, ctx, r.clone(), &stop, gets)),
    )
    .await;
    // The gravest failure: a range stopped because another failed says nothing of its own.
    let mut worst: Option<Failed> = None;
    let mut landed = 0;
    for (r, end) in pieces.iter().zip(ends) {
        match end {
            Ok(()) => landed += r.end - r.start,
            Err(e) => {
                if worst.as_ref().is_none_or(|w| gravity(&e) > gravity(w)) {
                    worst = Some(e);
                }
            }
        }
    }
    if let Some(e) = worst {
        // The part is fetched again whole: the bar counts its bytes again.
        if let Some(m) = ctx.progress.meter() {
            m.take_back(landed);
        }
        return Err(e);
    }
    let (file, path, range) = (ctx.file.clone(), ctx.path.clone(), range.clone());
    let hashes = (ctx.plan.alg, ctx.plan.md5);
    crate::exec::blocking(move || file.hash_range(range, hashes))
        .await
        .map_err(|e| Failed::Fatal(io_error(&path, &e)))
}

/// How grave a failure of a range is, to report the gravest: a final error, then one no retry
/// helps, then one a retry may, then a range stopped (because another failed).
fn gravity(f: &Failed) -> u8 {
    match f {
        Failed::Fatal(_) => 4,
        Failed::S3(e) if !e.kind.is_retryable() => 3,
        Failed::S3(_) | Failed::Length(_) => 2,
        Failed::Slow(_) => 1,
    }
}

/// One range of a part fetched again in ranges: a GET (fetched again when told slow, up to
/// [`SLOW_REFETCHES`] times); on another failure, `stop` stops the other ranges.
async fn piece<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    r: Range<u64>,
    stop: &CancellationToken,
    gets: &AtomicU32,
) -> Result<(), Failed> {
    let mut slow = 0;
    loop {
        if stop.is_cancelled() {
            return Err(Failed::Slow(None));
        }
        gets.fetch_add(1, Ordering::Relaxed);
        let watch = ctx.hedge && slow < SLOW_REFETCHES;
        // Nothing hashed here: the part is hashed from the file once every range is in.
        let count = RangeHasher::new(None, false);
        match once(s3, ctx, (r.clone(), None), watch, count, stop).await {
            Ok(_) => return Ok(()),
            Err(Failed::Slow(_)) if !stop.is_cancelled() => {
                slow += 1;
                tracing::debug!(
                    start = r.start,
                    end = r.end,
                    "a range arrives far slower than the others: fetching it again"
                );
            }
            Err(Failed::Length(got)) => {
                stop.cancel();
                return Err(Failed::S3(S3Error::transport(format!(
                    "the body of bytes {}..{} was {got} bytes long, not {}",
                    r.start,
                    r.end,
                    r.end - r.start
                ))));
            }
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        }
    }
}

/// One GET of `range` (as part `part`, when given): streamed into the file at its offsets and
/// fed to `hasher`; returns the hashes and the checksum the reply carried. Stopped (as if slow)
/// when `stop` is cancelled.
async fn once<C: ObjectRead>(
    s3: &C,
    ctx: &Ctx<'_>,
    (range, part): (Range<u64>, Option<u32>),
    watch: bool,
    hasher: RangeHasher,
    stop: &CancellationToken,
) -> Result<(RangeHash, Option<RemoteChecksum>), Failed> {
    if range.is_empty() {
        return Ok((hasher.finish(), None));
    }
    let get = s3.get_stream(
        ctx.obj,
        range.clone(),
        part,
        ctx.pin.etag.as_ref(),
        ctx.pin.version_id.as_deref(),
    );
    // Stopped while it waits for a request slot or its reply: nothing was written yet.
    let reply = tokio::select! {
        biased;
        () = stop.cancelled() => return Err(Failed::Slow(None)),
        reply = get => reply.map_err(|e| replaced_or(ctx, e))?,
    };
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
    let (moved, stop) = (Arc::new(AtomicU64::new(0)), stop.child_token());
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
        h = &mut task => h,
        () = slow => {
            // Stopped where it is (its write in flight ends first): the part is fetched again.
            stop.cancel();
            task.await
        }
    };
    match h {
        Ok(h) => Ok((h.finish(), reply.checksum)),
        Err(Failed::Slow(_)) => Err(Failed::Slow(reply.checksum)),
        Err(e) => Err(e),
    }
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
                _ if stop.is_cancelled() => Some(Failed::Slow(None)),
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hash;
    use crate::progress::Silent;
    use crate::s3::MultipartWrite as _;
    use crate::s3::fake::FakeS3;
    use crate::s3::tamper::Tamper;
    use crate::vocab::{ChecksumAlgorithm, ObjectSettings};

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_slow_part_is_split_in_near_equal_ranges_cut_on_the_files_blocks() {
        let cases: [(Range<u64>, usize); 7] = [
            (0..32 * MIB, 8),
            (5 * MIB..105 * MIB, 8),
            (0..8 * MIB, 2),
            (0..7 * MIB, 1),
            (3..3 + 9 * MIB + 17, 2),
            // A last part of odd size: no range of a few bytes at the end.
            (0..20 * MIB + 5, 5),
            (7..7 + 56 * MIB + 1, 8),
        ];
        for (range, n) in cases {
            let pieces = split_ranges(&range);
            assert_eq!(pieces.len(), n, "{range:?}: {pieces:?}");
            assert_eq!(pieces[0].start, range.start, "{range:?}");
            assert_eq!(pieces.last().unwrap().end, range.end, "{range:?}");
            for w in pieces.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{range:?}: contiguous");
                assert_eq!(
                    w[1].start % ALIGN as u64,
                    0,
                    "{range:?}: cut on a 4 KiB block"
                );
            }
            if n > 1 {
                for r in &pieces {
                    let len = r.end - r.start;
                    assert!(len + ALIGN as u64 >= SPLIT_PIECE, "{range:?}: {r:?}");
                    let even = (range.end - range.start) / n as u64;
                    assert!(len.abs_diff(even) <= ALIGN as u64, "{range:?}: {r:?}");
                }
            }
        }
    }

    /// An object put on the fake, and what a download of it has: its pin, its plan, a partial file.
    struct Fixture {
        s3: FakeS3,
        obj: crate::vocab::ObjectUrl,
        pin: Pinned,
        plan: Plan,
        path: std::path::PathBuf,
        file: Arc<PartialFile>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new(body: &[u8]) -> Fixture {
            let s3 = FakeS3::default();
            let obj = crate::vocab::ObjectUrl::parse("s3://bucket/k").unwrap();
            let alg = ChecksumAlgorithm::Sha256;
            let h = hash::hash_part(alg, true, body);
            let reply = s3
                .put_object(
                    &obj,
                    alg,
                    Bytes::copy_from_slice(body).into(),
                    &h,
                    &ObjectSettings::default(),
                )
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.tally-partial");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            super::super::partial::preallocate(&f, body.len() as u64).unwrap();
            Fixture {
                s3,
                obj,
                pin: Pinned {
                    etag: reply.etag,
                    version_id: None,
                },
                plan: Plan {
                    alg: Some(alg),
                    md5: true,
                    parts: vec![],
                    multipart: false,
                },
                file: Arc::new(PartialFile::new(f, &path)),
                path,
                _dir: dir,
            }
        }

        fn ctx(&self) -> Ctx<'_> {
            Ctx {
                obj: &self.obj,
                pin: &self.pin,
                file: self.file.clone(),
                path: self.path.clone(),
                plan: &self.plan,
                progress: &Silent,
                flights: Flights::with_window(hedge::DOWNLOAD_WINDOW),
                by_range: std::sync::atomic::AtomicBool::new(false),
                hedge: true,
            }
        }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A part in its ranges, through the fake: the pieces land at their offsets, and the hashes
    /// come from the file, so a piece whose bytes were altered on the way is caught.
    #[tokio::test]
    async fn a_part_fetched_in_ranges_is_hashed_from_the_file_in_order() {
        let body = body(9 * MIB as usize + 1000);
        let part = 3..body.len() as u64 - 5;
        let want = hash::hash_range(
            Some(ChecksumAlgorithm::Sha256),
            true,
            &body[part.start as usize..part.end as usize],
        );
        for alter in [false, true] {
            let f = Fixture::new(&body).await;
            // The second range's first piece, altered on the way.
            let second = split_ranges(&part)[1].start;
            let s3 = Tamper::new(f.s3).body_received(move |_, at, piece| {
                if alter && at == second {
                    piece[1] ^= 0x10;
                }
            });
            let f = Fixture {
                s3: FakeS3::default(),
                ..f
            };
            let gets = AtomicU32::new(0);
            let got = split(&s3, &f.ctx(), &part, split_ranges(&part), &gets)
                .await
                .unwrap_or_else(|_| panic!("the ranges were fetched"));
            assert_eq!(gets.load(Ordering::Relaxed), 2, "a GET per range");
            let on_disk = std::fs::read(&f.path).unwrap();
            let (a, b) = (part.start as usize, part.end as usize);
            assert_eq!(got.len, part.end - part.start);
            if alter {
                assert_ne!(got, want, "the altered byte is in the hashes");
                assert_ne!(on_disk[a..b], body[a..b]);
            } else {
                assert_eq!(got, want);
                assert!(on_disk[a..b] == body[a..b], "every range at its offsets");
            }
        }
    }

    /// A range that fails for good stops the others, also those still waiting for a request
    /// slot (never sent), and the part's error is that failure, not a range stopped because of it.
    #[tokio::test]
    async fn a_range_that_fails_for_good_stops_the_others_and_is_the_error() {
        let body = body(32 * MIB as usize);
        let f = Fixture::new(&body).await;
        f.s3.replace_object("k", vec![7; 100]);
        let part = 0..body.len() as u64;
        let gets = AtomicU32::new(0);
        // One request slot: the first range holds it, the seven others wait for it.
        let engine = crate::engine::Engine::new(crate::engine::Limits {
            concurrency: 1,
            bytes_ahead: 1 << 30,
        });
        let s3 = engine.limit(&f.s3);
        let before = f.s3.requests();
        let err = split(&s3, &f.ctx(), &part, split_ranges(&part), &gets).await;
        assert!(
            matches!(err, Err(Failed::Fatal(Error::ObjectChanged { .. }))),
            "the object changed: the part's error"
        );
        assert_eq!(
            f.s3.requests() - before,
            1,
            "the ranges waiting for the slot were not sent"
        );
    }
}
