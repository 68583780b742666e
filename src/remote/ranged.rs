//! The one ordered ranged-GET reader: bodies of an object's byte ranges, in order, with a bounded
//! window of requests in flight, every GET pinned to the object's ETag.
//!
//! The caller gives the ranges (the object's parts, or [`pieces`] of at most [`PIECE`] bytes), a
//! [`Window`] bounded in bytes and in requests, and the object they must come from ([`Pinned`]).
//! The reader is a [`Stream`] of results in range order. Bytes it holds (requested and not yet
//! handed over) never exceed `window.bytes`, except that one range larger than the window is
//! still read, alone. Each GET carries `If-Match` with the ETag: an object replaced while it is
//! read ends the stream with [`Error::ObjectChanged`], never with bytes of two objects.
//!
//! Work that can run per range while the next ones download (comparing with the local file,
//! hashing a part, writing a part of a download at its offset) goes in the reader itself with
//! [`RangedReader::with`]: it runs inside the window, several ranges at once, and its result is
//! what comes out in order.
//!
//! Work that must see the bytes in order (one MD5) uses [`StreamReader`] instead: it hands over
//! each range's body as the transport delivers it (pieces of a few KiB to a few hundred KiB),
//! never collected into a copy. The front range streams straight through; the ranges behind it
//! download at the same time, their pieces kept (as they came, no copy) until the front one is
//! done, and the window bounds those bytes.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt as _};

use crate::error::{Changed, Error};
use crate::retry::{Backoff, Policy};
use crate::s3::ObjectRead;
use crate::s3::{S3Error, S3ErrorKind};
use crate::vocab::ETag;
use crate::vocab::ObjectUrl;

/// Bytes per ranged GET when reading a whole object (each is held in memory until consumed).
pub(crate) const PIECE: u64 = 8 * 1024 * 1024;

/// How much may be in flight: at most `requests` GETs, holding at most `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Bytes requested and not yet handed to the caller.
    pub bytes: u64,
    /// Requests in flight.
    pub requests: usize,
}

impl Window {
    /// Whether one more request of `len` bytes fits beside `in_flight` requests holding `held`
    /// bytes: always when none is in flight, so a piece larger than the window still proceeds.
    pub(crate) fn admits(&self, in_flight: usize, held: u64, len: u64) -> bool {
        in_flight == 0 || (in_flight < self.requests && held + len <= self.bytes)
    }

    /// 16 requests, 128 MiB: 16 GETs of [`PIECE`] bytes.
    pub(crate) const DEFAULT: Window = Window {
        bytes: 16 * PIECE,
        requests: 16,
    };
    /// For a [`StreamReader`]: 4 GETs of [`PIECE`] bytes, 32 MiB. Bytes pass through as they
    /// arrive, so the window is only what the ranges behind the front one download meanwhile.
    pub(crate) const STREAM: Window = Window {
        bytes: 4 * PIECE,
        requests: 4,
    };
}

/// One range to read, with the index of the caller's range it belongs to (its part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Index into the caller's ranges.
    pub of: usize,
    /// Bytes of the object.
    pub range: Range<u64>,
}

impl Piece {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether it is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Cuts each of `ranges` into pieces of at most `max` bytes, in order (empty ranges give none).
/// With `max` at least the largest range, each range is one piece (part-aligned reads).
pub(crate) fn pieces(ranges: &[Range<u64>], max: u64) -> Vec<Piece> {
    let max = max.max(1);
    ranges
        .iter()
        .enumerate()
        .flat_map(|(of, r)| {
            let mut at = r.start;
            std::iter::from_fn(move || {
                (at < r.end).then(|| {
                    let end = r.end.min(at.saturating_add(max));
                    let p = Piece { of, range: at..end };
                    at = end;
                    p
                })
            })
        })
        .collect()
}

/// The object the reads must come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pinned {
    /// Its ETag, sent as `If-Match` with every GET; `None` reads unpinned.
    pub etag: Option<ETag>,
    /// Its version id, where known: named in errors. (`S3Api::get_range` does not take a version
    /// yet, so the ETag is what pins the reads.)
    pub version_id: Option<String>,
}

/// A body read: its piece and exactly its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Which bytes.
    pub piece: Piece,
    /// The bytes.
    pub body: Bytes,
}

type Start<'a, T> = Box<dyn FnMut(Piece) -> BoxFuture<'a, Result<T, Error>> + Send + 'a>;

/// The reader (see the module docs). A [`Stream`] of `Result<T, Error>` in range order; it ends
/// after the first error.
pub(crate) struct RangedReader<'a, T> {
    pending: VecDeque<Piece>,
    in_flight: FuturesOrdered<BoxFuture<'a, Result<T, Error>>>,
    /// The length of each piece in flight, in order.
    lens: VecDeque<u64>,
    held: u64,
    window: Window,
    start: Start<'a, T>,
    done: bool,
}

#[cfg(test)]
impl<'a> RangedReader<'a, Chunk> {
    /// Reads `pieces` of `obj`, pinned to `pin`, yielding each body in order.
    pub(crate) fn new<C: ObjectRead>(
        s3: &'a C,
        obj: &'a ObjectUrl,
        pin: &'a Pinned,
        pieces: Vec<Piece>,
        window: Window,
    ) -> Self {
        RangedReader::with(s3, obj, pin, pieces, window, |c| async move { Ok(c) })
    }
}

impl<'a, T: Send + 'a> RangedReader<'a, T> {
    /// Reads `pieces` of `obj`, pinned to `pin`, and runs `then` on each body as it arrives (several
    /// at once, inside the window); yields `then`'s results in order.
    pub(crate) fn with<C, F, Fut>(
        s3: &'a C,
        obj: &'a ObjectUrl,
        pin: &'a Pinned,
        pieces: Vec<Piece>,
        window: Window,
        then: F,
    ) -> Self
    where
        C: ObjectRead,
        F: Fn(Chunk) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T, Error>> + Send + 'a,
    {
        let then = std::sync::Arc::new(then);
        let start: Start<'a, T> = Box::new(move |piece: Piece| {
            let then = then.clone();
            Box::pin(async move {
                let body = get(s3, obj, pin, &piece).await?;
                then(Chunk { piece, body }).await
            })
        });
        RangedReader {
            pending: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            in_flight: FuturesOrdered::new(),
            lens: VecDeque::new(),
            held: 0,
            window,
            start,
            done: false,
        }
    }

    /// Bytes requested and not yet handed over.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Starts requests while the window has room (always one, when none is in flight).
    fn fill(&mut self) {
        while let Some(next) = self.pending.front() {
            let len = next.len();
            if !self.window.admits(self.in_flight.len(), self.held, len) {
                break;
            }
            let piece = self.pending.pop_front().expect("a front exists");
            self.in_flight.push_back((self.start)(piece));
            self.lens.push_back(len);
            self.held += len;
        }
    }
}

impl<'a, T: Send + 'a> Stream for RangedReader<'a, T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.fill();
        match self.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                let len = self.lens.pop_front().unwrap_or(0);
                self.held -= len;
                if item.is_err() {
                    // Stop: drop what is in flight, start nothing more.
                    self.done = true;
                    self.pending.clear();
                    self.in_flight = FuturesOrdered::new();
                    self.lens.clear();
                    self.held = 0;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Bytes of an object handed over in order by a [`StreamReader`].
#[derive(Debug, Clone)]
pub(crate) struct Streamed {
    /// The piece they belong to (the tests check the order by it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub piece: Piece,
    /// The next bytes of the piece, as the transport delivered them.
    pub body: Bytes,
    /// Whether these are the piece's last bytes.
    pub last: bool,
}

/// Opens a streamed GET of a range of the object (pinned).
type Open<'a> = std::sync::Arc<
    dyn Fn(Range<u64>) -> BoxFuture<'a, Result<crate::s3::RangeBody, S3Error>> + Send + Sync + 'a,
>;

/// One piece being read: what arrived of it and is not yet handed over, in order.
struct Slot<'a> {
    bytes: futures::stream::BoxStream<'a, Result<Streamed, Error>>,
    kept: VecDeque<Streamed>,
    /// The piece's last bytes have arrived (they may still be in `kept`).
    arrived: bool,
}

/// The ordered streaming reader (see the module docs): a [`Stream`] of [`Streamed`] bytes in the
/// order of the pieces and of the bytes in each; it ends after the first error. At most
/// `window.requests` GETs are open and at most `window.bytes` bytes are requested and not yet
/// handed over (one piece larger than the window is still read, alone). Every GET carries
/// `If-Match` with the ETag, as [`RangedReader`]'s do. A body that breaks off or ends short is
/// read on from where it stopped (a GET of the rest of the piece), under [`Policy::RANGED_READ`];
/// what was handed over is never sent twice.
pub(crate) struct StreamReader<'a> {
    pending: VecDeque<Piece>,
    slots: VecDeque<Slot<'a>>,
    held: u64,
    window: Window,
    open: Open<'a>,
    obj: &'a ObjectUrl,
    pin: &'a Pinned,
    done: bool,
}

impl<'a> StreamReader<'a> {
    /// Reads `pieces` of `obj`, pinned to `pin`, within `window`.
    pub(crate) fn new<C: ObjectRead>(
        s3: &'a C,
        obj: &'a ObjectUrl,
        pin: &'a Pinned,
        pieces: Vec<Piece>,
        window: Window,
    ) -> Self {
        let open: Open<'a> = std::sync::Arc::new(move |range: Range<u64>| {
            Box::pin(s3.get_stream(obj, range, None, pin.etag.as_ref(), None))
        });
        StreamReader {
            pending: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            slots: VecDeque::new(),
            held: 0,
            window,
            open,
            obj,
            pin,
            done: false,
        }
    }

    /// Bytes requested and not yet handed over.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Opens GETs while the window has room (always one, when none is open).
    fn fill(&mut self) {
        while let Some(next) = self.pending.front() {
            let len = next.len();
            if !self.window.admits(self.slots.len(), self.held, len) {
                break;
            }
            let piece = self.pending.pop_front().expect("a front exists");
            self.slots.push_back(Slot {
                bytes: piece_bytes(self.open.clone(), self.obj, self.pin, piece),
                kept: VecDeque::new(),
                arrived: false,
            });
            self.held += len;
        }
    }

    /// Ends the stream with `e`.
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Streamed, Error>>> {
        self.done = true;
        self.pending.clear();
        self.slots.clear();
        self.held = 0;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for StreamReader<'_> {
    type Item = Result<Streamed, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        this.fill();
        // The pieces behind the front one download meanwhile: keep what arrives (bounded by the
        // window, which counted their whole length when they were opened).
        let mut failed = None;
        for slot in this.slots.iter_mut().skip(1) {
            while !slot.arrived && failed.is_none() {
                match slot.bytes.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(s))) => {
                        slot.arrived = s.last;
                        slot.kept.push_back(s);
                    }
                    Poll::Ready(Some(Err(e))) => failed = Some(e),
                    Poll::Ready(None) => {
                        failed = Some(Error::Internal("a ranged GET ended before its piece"));
                    }
                    Poll::Pending => break,
                }
            }
        }
        if let Some(e) = failed {
            return this.fail(e);
        }
        let Some(front) = this.slots.front_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        let next = match front.kept.pop_front() {
            Some(s) => Some(Ok(s)),
            None => match front.bytes.poll_next_unpin(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Poll::Pending,
            },
        };
        match next {
            Some(Ok(s)) => {
                this.held -= s.body.len() as u64;
                if s.last {
                    this.slots.pop_front();
                }
                Poll::Ready(Some(Ok(s)))
            }
            Some(Err(e)) => this.fail(e),
            None => this.fail(Error::Internal("a ranged GET ended before its piece")),
        }
    }
}

/// Where the read of one piece stands.
struct At {
    /// The body being read, if a GET is open.
    body: Option<futures::stream::BoxStream<'static, Result<Bytes, S3Error>>>,
    /// The piece's bytes received so far.
    received: u64,
    backoff: Option<Backoff>,
    /// The piece is done (every byte, or an error given).
    over: bool,
}

impl At {
    /// `b`, the piece's next bytes (not empty), received: as streamed, or a long read.
    fn take(&mut self, piece: &Piece, len: u64, b: Bytes) -> Result<Streamed, Error> {
        if self.received + b.len() as u64 <= len {
            self.received += b.len() as u64;
            let last = self.received == len;
            if last {
                // Every byte is here: the connection goes back to the pool.
                self.over = true;
                self.body = None;
            }
            Ok(Streamed {
                piece: piece.clone(),
                body: b,
                last,
            })
        } else {
            self.over = true;
            let e = S3Error::transport(format!(
                "long read: {} bytes where {len} were asked for at offset {}",
                self.received + b.len() as u64,
                piece.range.start
            ));
            Err(Error::s3("GetObject", None, None)(e))
        }
    }

    /// The body broke off with `failure`: whether to read on from where it stopped (after the
    /// backoff's wait).
    async fn read_on(&mut self, failure: &S3Error) -> bool {
        let backoff = self
            .backoff
            .get_or_insert_with(|| Policy::RANGED_READ.start());
        if failure.kind.is_retryable() {
            tracing::info!(
                attempt = backoff.attempt(),
                error = %failure,
                "ranged GET broke off; reading on from where it stopped"
            );
            if backoff.wait().await {
                return true;
            }
        }
        false
    }
}

/// The bytes of `piece` as they arrive, through as many GETs as it takes: each one after a body
/// broke off asks only for the rest. Ends after the piece's last bytes or an error.
fn piece_bytes<'a>(
    open: Open<'a>,
    obj: &'a ObjectUrl,
    pin: &'a Pinned,
    piece: Piece,
) -> futures::stream::BoxStream<'a, Result<Streamed, Error>> {
    let start = At {
        body: None,
        received: 0,
        backoff: None,
        over: false,
    };
    let len = piece.len();
    Box::pin(futures::stream::unfold(start, move |mut at| {
        let (open, piece) = (open.clone(), piece.clone());
        async move {
            if at.over {
                return None;
            }
            loop {
                let body = match &mut at.body {
                    Some(b) => b,
                    None => match open(piece.range.start + at.received..piece.range.end).await {
                        Ok(reply) => at.body.insert(reply.body),
                        Err(e) => {
                            at.over = true;
                            return Some((Err(replaced_or(obj, pin, e)), at));
                        }
                    },
                };
                let failure = match body.next().await {
                    Some(Ok(b)) if b.is_empty() => continue,
                    Some(Ok(b)) => {
                        let got = at.take(&piece, len, b);
                        return Some((got, at));
                    }
                    Some(Err(e)) => e,
                    None => S3Error::transport(format!(
                        "short read: {} of {len} bytes at offset {}",
                        at.received, piece.range.start
                    )),
                };
                at.body = None;
                if at.read_on(&failure).await {
                    continue;
                }
                at.over = true;
                return Some((Err(Error::s3("GetObject", None, None)(failure)), at));
            }
        }
    }))
}

/// `e`, or [`Error::ObjectChanged`] when the GET's `If-Match` failed.
fn replaced_or(obj: &ObjectUrl, pin: &Pinned, e: S3Error) -> Error {
    if e.kind == S3ErrorKind::PreconditionFailed {
        Error::ObjectChanged {
            url: format!("s3://{}/{}", obj.bucket, obj.key),
            then: pin.etag.as_ref().map(ETag::to_string),
            now: None,
            when: Changed::WhileRead,
        }
    } else {
        Error::s3("GetObject", None, None)(e)
    }
}

/// One GET of `piece`, pinned; exactly its bytes or an error.
async fn get<C: ObjectRead>(
    s3: &C,
    obj: &ObjectUrl,
    pin: &Pinned,
    piece: &Piece,
) -> Result<Bytes, Error> {
    let body = s3
        .get_range(obj, piece.range.clone(), pin.etag.as_ref())
        .await
        .map_err(|e| replaced_or(obj, pin, e))?;
    if body.len() as u64 != piece.len() {
        return Err(Error::s3("GetObject", None, None)(S3Error::transport(
            format!(
                "short read: {} of {} bytes at offset {}",
                body.len(),
                piece.len(),
                piece.range.start
            ),
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::TryStreamExt as _;

    use super::*;
    use crate::hash;
    use crate::s3::MultipartWrite as _;
    use crate::s3::fake::FakeS3;
    use crate::s3::{HeadInfo, ObjectAttributes};
    use crate::vocab::ChecksumAlgorithm;

    /// FakeS3 (which honours `If-Match`) with answers that finish in reverse
    /// order of request within each batch (later ranges first), and a count of bytes requested.
    #[derive(Default)]
    struct Slow {
        inner: FakeS3,
        requested: AtomicU64,
        finished: Mutex<Vec<u64>>,
        /// After this many GETs, the object is replaced (before the next one is answered).
        replace_after: Option<usize>,
        gets: AtomicU64,
    }

    impl ObjectRead for Slow {
        async fn object_attributes(
            &self,
            obj: &ObjectUrl,
        ) -> Result<Option<ObjectAttributes>, S3Error> {
            self.inner.object_attributes(obj).await
        }
        async fn head_object(
            &self,
            obj: &ObjectUrl,
            part_number: Option<u32>,
        ) -> Result<HeadInfo, S3Error> {
            self.inner.head_object(obj, part_number).await
        }
        async fn get_range(
            &self,
            obj: &ObjectUrl,
            range: Range<u64>,
            if_match: Option<&ETag>,
        ) -> Result<Bytes, S3Error> {
            let n = self.gets.fetch_add(1, Ordering::SeqCst) as usize + 1;
            self.requested
                .fetch_add(range.end - range.start, Ordering::SeqCst);
            // Later requests of a batch answer first: each waits fewer turns the later it started.
            let turns = 64u64.saturating_sub(range.start / 1000);
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
            if self.replace_after.is_some_and(|after| n > after) {
                put(&self.inner, obj, b"another object, replaced mid-read").await;
            }
            // The fake itself refuses a GET whose If-Match no longer holds.
            let b = self.inner.get_range(obj, range.clone(), if_match).await?;
            self.finished.lock().unwrap().push(range.start);
            Ok(b)
        }
    }

    async fn put(s3: &FakeS3, obj: &ObjectUrl, data: &[u8]) -> ETag {
        let alg = ChecksumAlgorithm::Sha256;
        let h = hash::hash_part(alg, true, data);
        let reply = s3
            .put_object(
                obj,
                alg,
                Bytes::copy_from_slice(data).into(),
                &h,
                &crate::vocab::ObjectSettings::default(),
            )
            .await
            .unwrap();
        reply.etag.unwrap()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(31) % 251) as u8)
            .collect()
    }

    #[test]
    fn pieces_cover_each_range_in_order_within_the_limit() {
        let p = pieces(&[0..25, 25..25, 25..30], 10);
        let got: Vec<(usize, Range<u64>)> = p.into_iter().map(|p| (p.of, p.range)).collect();
        assert_eq!(got, vec![(0, 0..10), (0, 10..20), (0, 20..25), (2, 25..30)]);
        let whole = pieces(&[0..25, 25..30], u64::MAX);
        assert_eq!(whole.len(), 2, "part-aligned: one piece per range");
    }

    #[tokio::test]
    async fn bodies_come_in_order_within_the_byte_window() {
        let s3 = Slow::default();
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(10_000);
        let etag = put(&s3.inner, &obj, &content).await;
        let pin = Pinned {
            etag: Some(etag),
            version_id: None,
        };
        // Uneven pieces and a window of 2,500 bytes but 16 requests: the bytes bind, not the count.
        let ranges: Vec<Range<u64>> = [0..1000, 1000..1700, 1700..4000, 4000..10_000].to_vec();
        let window = Window {
            bytes: 2500,
            requests: 16,
        };
        let mut reader = RangedReader::new(&s3, &obj, &pin, pieces(&ranges, 1000), window);
        let mut got = Vec::new();
        let mut consumed = 0u64;
        let mut most_held = 0u64;
        while let Some(c) = reader.try_next().await.unwrap() {
            // What was requested but not yet handed over, at the moment a body is handed over.
            let outstanding = s3.requested.load(Ordering::SeqCst) - consumed;
            most_held = most_held.max(outstanding);
            assert!(reader.held() + c.piece.len() <= window.bytes);
            consumed += c.piece.len();
            got.push((c.piece.of, c.piece.range.clone()));
            assert_eq!(
                &c.body[..],
                &content[c.piece.range.start as usize..c.piece.range.end as usize]
            );
        }
        let want: Vec<(usize, Range<u64>)> = pieces(&ranges, 1000)
            .into_iter()
            .map(|p| (p.of, p.range))
            .collect();
        assert_eq!(got, want, "every piece, in order, once");
        assert!(most_held <= window.bytes, "held {most_held} bytes");
        assert!(
            most_held > window.bytes / 2,
            "the window is used: {most_held}"
        );
        let finished = s3.finished.lock().unwrap().clone();
        assert!(
            finished.windows(2).any(|w| w[0] > w[1]),
            "the server answered out of order ({finished:?}), the reader still yielded in order"
        );
    }

    #[tokio::test]
    async fn a_range_larger_than_the_window_is_still_read_alone() {
        let s3 = Slow::default();
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(5000);
        let pin = Pinned {
            etag: Some(put(&s3.inner, &obj, &content).await),
            version_id: None,
        };
        let window = Window {
            bytes: 1000,
            requests: 4,
        };
        let bodies: Vec<Chunk> = RangedReader::new(
            &s3,
            &obj,
            &pin,
            pieces(std::slice::from_ref(&(0..5000)), 3000),
            window,
        )
        .try_collect()
        .await
        .unwrap();
        let joined: Vec<u8> = bodies.iter().flat_map(|c| c.body.to_vec()).collect();
        assert_eq!(joined, content);
    }

    #[tokio::test]
    async fn an_object_replaced_mid_read_is_caught_by_if_match() {
        let s3 = Slow {
            replace_after: Some(3),
            ..Slow::default()
        };
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(10_000);
        let etag = put(&s3.inner, &obj, &content).await;
        let pin = Pinned {
            etag: Some(etag.clone()),
            version_id: None,
        };
        let mut reader = RangedReader::new(
            &s3,
            &obj,
            &pin,
            pieces(std::slice::from_ref(&(0..10_000)), 1000),
            Window {
                bytes: 2000,
                requests: 2,
            },
        );
        let mut good = 0;
        let err = loop {
            match reader.next().await {
                Some(Ok(c)) => {
                    assert_eq!(
                        &c.body[..],
                        &content[c.piece.range.start as usize..c.piece.range.end as usize],
                        "only the first object's bytes are ever handed over"
                    );
                    good += 1;
                }
                Some(Err(e)) => break e,
                None => panic!("the replaced object was read to the end"),
            }
        };
        assert!(good <= 3, "{good} bodies before the replacement");
        match &err {
            Error::ObjectChanged {
                then,
                when: Changed::WhileRead,
                ..
            } => assert_eq!(then.as_deref(), Some(etag.as_str())),
            e => panic!("not ObjectChanged: {e}"),
        }
        assert!(
            reader.next().await.is_none(),
            "the stream ends after an error"
        );
    }

    /// FakeS3 whose streamed bodies come in chunks of `chunk` bytes, each after a few yields (fewer
    /// the later the range starts, so later ranges finish first), and which can break bodies off.
    #[derive(Default)]
    struct Chunky {
        inner: FakeS3,
        chunk: usize,
        /// Ranges asked for, in order.
        asked: Mutex<Vec<Range<u64>>>,
        /// Range starts in the order their last chunk was sent.
        finished: std::sync::Arc<Mutex<Vec<u64>>>,
        /// (range start, chunks): the first GET starting there fails after that many chunks.
        fail_once: Option<(u64, usize)>,
        /// (range start, chunks): the first GET starting there ends cleanly after that many.
        short_once: Option<(u64, usize)>,
        /// GETs starting in the 1000 bytes from here always fail after their first chunk.
        fail_always: Option<u64>,
    }

    impl ObjectRead for Chunky {
        async fn object_attributes(
            &self,
            obj: &ObjectUrl,
        ) -> Result<Option<ObjectAttributes>, S3Error> {
            self.inner.object_attributes(obj).await
        }
        async fn head_object(
            &self,
            obj: &ObjectUrl,
            part_number: Option<u32>,
        ) -> Result<HeadInfo, S3Error> {
            self.inner.head_object(obj, part_number).await
        }
        async fn get_range(
            &self,
            obj: &ObjectUrl,
            range: Range<u64>,
            if_match: Option<&ETag>,
        ) -> Result<Bytes, S3Error> {
            self.inner.get_range(obj, range, if_match).await
        }
        async fn get_stream(
            &self,
            obj: &ObjectUrl,
            range: Range<u64>,
            _part: Option<u32>,
            if_match: Option<&ETag>,
            _version_id: Option<&str>,
        ) -> Result<crate::s3::RangeBody, S3Error> {
            let first = {
                let mut asked = self.asked.lock().unwrap();
                let first = !asked.iter().any(|r| r.start == range.start);
                asked.push(range.clone());
                first
            };
            let all = self.inner.get_range(obj, range.clone(), if_match).await?;
            let mut chunks: Vec<Result<Bytes, S3Error>> = all
                .chunks(self.chunk)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            match (self.fail_once, self.short_once, self.fail_always) {
                (Some((at, n)), _, _) if first && at == range.start => {
                    chunks.truncate(n);
                    chunks.push(Err(S3Error::transport("connection reset".into())));
                }
                (_, Some((at, n)), _) if first && at == range.start => chunks.truncate(n),
                (_, _, Some(at)) if (at..at + 1000).contains(&range.start) => {
                    chunks.truncate(1);
                    chunks.push(Err(S3Error::transport("connection reset".into())));
                }
                _ => {}
            }
            let turns = 64u64.saturating_sub(range.start / 1000);
            let finished = self.finished.clone();
            let count = chunks.len();
            let body = futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| {
                let finished = finished.clone();
                async move {
                    for _ in 0..turns {
                        tokio::task::yield_now().await;
                    }
                    if i + 1 == count {
                        finished.lock().unwrap().push(range.start);
                    }
                    c
                }
            });
            Ok(crate::s3::RangeBody {
                checksum: None,
                etag: None,
                body: Box::pin(body),
            })
        }
    }

    #[tokio::test]
    async fn streamed_bytes_come_in_order_within_the_byte_window() {
        let s3 = Chunky {
            chunk: 128,
            ..Chunky::default()
        };
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(10_000);
        let pin = Pinned {
            etag: Some(put(&s3.inner, &obj, &content).await),
            version_id: None,
        };
        let ranges: Vec<Range<u64>> = [0..1000, 1000..1700, 1700..4000, 4000..10_000].to_vec();
        let window = Window {
            bytes: 2500,
            requests: 16,
        };
        let want = pieces(&ranges, 1000);
        let mut reader = StreamReader::new(&s3, &obj, &pin, want.clone(), window);
        let (mut got, mut ends) = (Vec::new(), Vec::new());
        let mut most_asked = 0u64;
        while let Some(s) = reader.try_next().await.unwrap() {
            let asked: u64 = s3
                .asked
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.end - r.start)
                .sum();
            let outstanding = asked - got.len() as u64;
            most_asked = most_asked.max(outstanding);
            assert!(
                outstanding <= window.bytes,
                "{outstanding} bytes outstanding"
            );
            assert!(reader.held() <= window.bytes);
            let at = s.piece.range.start as usize + got.len()
                - want
                    .iter()
                    .take_while(|p| p.range != s.piece.range)
                    .map(|p| p.len() as usize)
                    .sum::<usize>();
            assert_eq!(at, got.len(), "bytes of {:?} out of place", s.piece.range);
            got.extend_from_slice(&s.body);
            if s.last {
                assert_eq!(
                    got.len() as u64,
                    s.piece.range.end,
                    "last means the piece's end"
                );
                ends.push(s.piece.clone());
            }
        }
        assert_eq!(got, content, "every byte, in order, once");
        assert_eq!(ends, want, "each piece ended once, in order");
        assert!(
            most_asked > window.bytes / 2,
            "the window is used: {most_asked}"
        );
        let finished = s3.finished.lock().unwrap().clone();
        assert!(
            finished.windows(2).any(|w| w[0] > w[1]),
            "later bodies ended first ({finished:?}), the bytes still came in order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_cut_off_or_short_is_read_on_from_where_it_stopped() {
        let s3 = Chunky {
            chunk: 100,
            fail_once: Some((2000, 3)),
            short_once: Some((3000, 5)),
            ..Chunky::default()
        };
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(5000);
        let pin = Pinned {
            etag: Some(put(&s3.inner, &obj, &content).await),
            version_id: None,
        };
        let window = Window {
            bytes: 2000,
            requests: 2,
        };
        let got: Vec<Streamed> = StreamReader::new(
            &s3,
            &obj,
            &pin,
            pieces(std::slice::from_ref(&(0..5000)), 1000),
            window,
        )
        .try_collect()
        .await
        .unwrap();
        let joined: Vec<u8> = got.iter().flat_map(|s| s.body.to_vec()).collect();
        assert_eq!(joined, content, "every byte once, none twice");
        let asked = s3.asked.lock().unwrap().clone();
        assert!(
            asked.contains(&(2300..3000)),
            "the rest after 3 chunks: {asked:?}"
        );
        assert!(
            asked.contains(&(3500..4000)),
            "the rest after 5 chunks: {asked:?}"
        );
        assert_eq!(asked.len(), 7, "five pieces, two read on: {asked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_breaking_off_ends_the_stream_after_the_policy_s_attempts() {
        let s3 = Chunky {
            chunk: 100,
            fail_always: Some(1000),
            ..Chunky::default()
        };
        let obj = ObjectUrl::parse("s3://bkt/obj").unwrap();
        let content = data(3000);
        let pin = Pinned {
            etag: Some(put(&s3.inner, &obj, &content).await),
            version_id: None,
        };
        let mut reader = StreamReader::new(
            &s3,
            &obj,
            &pin,
            pieces(std::slice::from_ref(&(0..3000)), 1000),
            Window::STREAM,
        );
        let mut handed = 0;
        let err = loop {
            match reader.next().await {
                Some(Ok(s)) => handed += s.body.len(),
                Some(Err(e)) => break e,
                None => panic!("a piece that always breaks off was read to the end"),
            }
        };
        assert!(matches!(err, Error::S3 { .. }), "{err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
        // Each GET of the second piece hands over one chunk, then breaks off; the next asks for
        // the rest, until the policy's attempts are used up.
        let attempts = u64::from(Policy::RANGED_READ.attempts.unwrap());
        assert_eq!(handed as u64, 1000 + 100 * attempts);
        let asked = s3.asked.lock().unwrap().clone();
        let of_second: Vec<Range<u64>> = asked
            .into_iter()
            .filter(|r| r.start >= 1000 && r.start < 2000)
            .collect();
        let want: Vec<Range<u64>> = (0..attempts).map(|i| 1000 + 100 * i..2000).collect();
        assert_eq!(of_second, want);
        assert!(
            reader.next().await.is_none(),
            "the stream ends after an error"
        );
    }
}
