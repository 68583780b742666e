//! `--max-bandwidth`: one token bucket that every connection of the process draws from.
//!
//! Bytes are let through in pieces of at most [`PIECE`]: an upload's body is handed to the HTTP
//! client piece by piece ([`upload_body`]), a download's pieces are taken as they arrive
//! ([`Bandwidth::take`] before the caller sees them, so the socket's receive window, not a
//! buffer of tally's, holds what arrived early). Each piece reserves its bytes first; a
//! reservation the bucket cannot cover yet puts the bucket in debt and waits until the rate has
//! paid it. So whatever the number of connections, the bytes let through by time `t` since the
//! first never exceed `BURST + rate * t`, and the waiting pieces are served in the order they
//! asked.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::body::PutBody;

/// Parses a `--max-bandwidth` rate: a number and a unit per second, in bytes (`B`, `KB`, `MB`,
/// `GB`, `KiB`, `MiB`, `GiB`) or bits (`Kbit`, `Mbit`, `Gbit`): `400MB/s`, `2Gbit/s`. Returns
/// bytes per second.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a rate: write e.g. 400MB/s, 50MiB/s or 2Gbit/s");
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Kbit" | "kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => return Err(bad()),
    };
    let rate = (n * per).round();
    if rate < 1.0 || !rate.is_finite() {
        return Err(format!(
            "'{text}': a bandwidth limit must be at least 1 B/s"
        ));
    }
    Ok(rate as u64)
}

/// The largest piece let through at once.
pub(crate) const PIECE: usize = 64 * 1024;

/// Bytes the bucket holds at most when idle: what may go at once after a quiet spell.
pub(crate) const BURST: f64 = (2 * PIECE) as f64;

/// A shared token bucket of `rate` bytes per second.
#[derive(Debug)]
pub(crate) struct Bandwidth {
    rate: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes that may go now; negative when reservations wait for the rate to pay them.
    tokens: f64,
    last: Instant,
}

impl Bandwidth {
    /// A bucket of `rate` bytes per second (at least 1), full.
    pub(crate) fn new(rate: u64) -> Bandwidth {
        Bandwidth {
            rate: rate.max(1) as f64,
            state: Mutex::new(State {
                tokens: BURST,
                last: Instant::now(),
            }),
        }
    }

    /// The process's bucket: made at `rate` by the first caller, shared by every later one (one
    /// command, one limit over all its connections and clients).
    pub(crate) fn shared(rate: u64) -> Arc<Bandwidth> {
        static SHARED: OnceLock<Arc<Bandwidth>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Bandwidth::new(rate)))
            .clone()
    }

    /// Reserves `n` bytes at `now`: how long to wait before they may go.
    fn reserve(&self, now: Instant, n: usize) -> Duration {
        let mut s = self.state.lock().expect("bandwidth lock");
        let earned = now.saturating_duration_since(s.last).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + earned).min(BURST);
        s.last = s.last.max(now);
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }

    /// Waits until `n` bytes may go.
    pub(crate) async fn take(&self, n: usize) {
        let wait = self.reserve(Instant::now(), n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

tokio::task_local! {
    /// Where the upload body of a request made inside [`counting`] counts its bytes.
    static MOVED: Arc<AtomicU64>;
}

/// Runs `fut` (one S3 upload request), counting into `moved` the bytes of its body handed to the
/// HTTP client, i.e. into the socket's buffer: how a caller sees a part's progress on its
/// connection (hedging, `upload::send`) without a parameter through every S3 client.
pub(crate) async fn counting<F: std::future::Future>(moved: Arc<AtomicU64>, fut: F) -> F::Output {
    MOVED.scope(moved, fut).await
}

/// Counts `n` bytes as handed over by the request running inside [`counting`] (none outside):
/// for the fake server, which takes a body without an HTTP client to count it.
#[cfg(any(test, feature = "fake"))]
pub(crate) fn handed_over(n: u64) {
    let _ = MOVED.try_with(|m| m.fetch_add(n, std::sync::atomic::Ordering::Relaxed));
}

/// Pieces of an upload body when nothing limits them (only counted, or read from a file): big
/// enough that the HTTP client's writes stay large, small enough to see a slow connection's
/// progress and to hold little of a file in memory.
const COUNTED_PIECE: usize = 1024 * 1024;

/// Pieces of a body read from a file ([`PutBody::File`]) when nothing limits them: a connection
/// holds two (one written, the next read ahead), so 64 PutObjects in flight hold 32 MiB. Measured
/// on the benchmark tree at 6 MB/s per connection: 1 MiB pieces left 294 MiB of heap, 256 KiB 249
/// MiB (with the hashing still reading each file whole).
const FILE_PIECE: usize = 256 * 1024;

/// The body of an upload request. Bytes in memory go as one piece, unless the process limits its
/// bandwidth (`limit`) or the request runs inside [`counting`]: then in pieces, each let through
/// the bucket and counted. A range of a file ([`PutBody::File`]) is always read and sent piece by
/// piece ([`FILE_PIECE`], or [`PIECE`] under a limit), the next piece read (on a blocking thread)
/// while the last one is written. A retry of
/// the request starts a fresh body (the SDK's retries resend it).
pub(crate) fn upload_body(data: impl Into<PutBody>, limit: Option<&Arc<Bandwidth>>) -> SdkBody {
    let data = data.into();
    let moved = MOVED.try_with(Arc::clone).ok();
    if let PutBody::Memory(bytes) = &data
        && limit.is_none()
        && moved.is_none()
    {
        return SdkBody::from(bytes.clone());
    }
    let limit = limit.cloned();
    let piece = if limit.is_some() {
        PIECE
    } else if matches!(data, PutBody::File(_)) {
        FILE_PIECE
    } else {
        COUNTED_PIECE
    };
    SdkBody::retryable(move || {
        SdkBody::from_body_1_x(Pieces {
            len: data.len(),
            data: data.clone(),
            pos: 0,
            piece,
            limit: limit.clone(),
            moved: moved.clone(),
            reading: None,
            waiting: None,
        })
    })
}

/// A piece of a file being read on a blocking thread.
type Reading = tokio::task::JoinHandle<std::io::Result<Bytes>>;

/// `data` from `pos` on, one piece at a time, each after its bytes were reserved.
struct Pieces {
    data: PutBody,
    len: u64,
    /// The end of the pieces taken so far (handed over, waiting, or being read).
    pos: u64,
    piece: usize,
    limit: Option<Arc<Bandwidth>>,
    moved: Option<Arc<AtomicU64>>,
    /// The next piece of a file, being read: `(its length, the read)`.
    reading: Option<(u64, Reading)>,
    /// A piece reserved, and the wait before it may go.
    waiting: Option<(Bytes, Pin<Box<tokio::time::Sleep>>)>,
}

/// An error of an upload body: the file it reads failed or ended early.
type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Pieces {
    fn hand_over(&self, piece: Bytes) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        if let Some(m) = &self.moved {
            m.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    /// Starts reading the file's piece from `pos`, if it is a file and bytes are left.
    fn read_ahead(&mut self) {
        let PutBody::File(range) = &self.data else {
            return;
        };
        if self.reading.is_some() || self.pos >= self.len {
            return;
        }
        let (at, n) = (self.pos, (self.piece as u64).min(self.len - self.pos));
        let range = range.clone();
        self.reading = Some((n, tokio::task::spawn_blocking(move || range.read(at, n))));
        self.pos += n;
    }

    /// The next piece: sliced from memory, or the file's piece read ahead (`None` when all were
    /// taken).
    fn poll_next_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        match &self.data {
            PutBody::Memory(bytes) => {
                if self.pos >= self.len {
                    return Poll::Ready(None);
                }
                let end = (self.pos + self.piece as u64).min(self.len);
                let piece = bytes.slice(self.pos as usize..end as usize);
                self.pos = end;
                Poll::Ready(Some(Ok(piece)))
            }
            PutBody::File(_) => {
                self.read_ahead();
                let Some((_, reading)) = &mut self.reading else {
                    return Poll::Ready(None);
                };
                let read = ready!(Pin::new(reading).poll(cx));
                self.reading = None;
                let piece = match read {
                    Ok(Ok(piece)) => piece,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                };
                // The next piece is read while this one is written.
                self.read_ahead();
                Poll::Ready(Some(Ok(piece)))
            }
        }
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some((_, sleep)) = &mut self.waiting {
            ready!(sleep.as_mut().poll(cx));
            let (piece, _) = self.waiting.take().expect("waiting");
            return self.hand_over(piece);
        }
        let piece = match ready!(self.poll_next_piece(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            Some(Ok(piece)) => piece,
        };
        let wait = match &self.limit {
            Some(l) => l.reserve(Instant::now(), piece.len()),
            None => Duration::ZERO,
        };
        if wait.is_zero() {
            return self.hand_over(piece);
        }
        let mut sleep = Box::pin(tokio::time::sleep(wait));
        if sleep.as_mut().poll(cx).is_ready() {
            return self.hand_over(piece);
        }
        self.waiting = Some((piece, sleep));
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.len && self.reading.is_none() && self.waiting.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let left = self.len - self.pos
            + self.reading.as_ref().map_or(0, |(n, _)| *n)
            + self.waiting.as_ref().map_or(0, |(p, _)| p.len() as u64);
        http_body::SizeHint::with_exact(left)
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn the_bucket_never_lets_more_than_burst_plus_rate_through() {
        // 1 MB/s, 8 callers asking for 64 KiB pieces all at the same instants: the time each
        // piece may go is at least (bytes before and with it - burst) / rate.
        let b = Bandwidth::new(1_000_000);
        let t0 = b.state.lock().unwrap().last;
        let mut total = 0.0;
        for round in 0..20u32 {
            let now = t0 + Duration::from_millis(u64::from(round) * 10);
            for _ in 0..8 {
                total += PIECE as f64;
                let at = now + b.reserve(now, PIECE);
                let earliest = (total - BURST) / 1e6;
                let waited = (at - t0).as_secs_f64();
                assert!(waited + 1e-6 >= earliest, "{total} by {waited}");
            }
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("400MB/s"), Ok(400_000_000));
        assert_eq!(parse_rate("2Gbit/s"), Ok(250_000_000));
        assert_eq!(parse_rate("50MiB/s"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_rate("1.5MB/s"), Ok(1_500_000));
        assert!(parse_rate("fast").unwrap_err().contains("400MB/s"));
        assert!(parse_rate("0MB/s").is_err());
        assert!(parse_rate("10 parsecs").is_err());
    }

    #[tokio::test]
    async fn without_limit_or_counting_the_body_is_the_bytes_as_they_are() {
        let data = Bytes::from_static(b"part");
        let body = upload_body(data.clone(), None);
        assert_eq!(
            body.bytes(),
            Some(&data[..]),
            "one in-memory piece, no copy"
        );
    }

    #[test]
    fn an_idle_bucket_banks_only_its_burst() {
        let b = Bandwidth::new(1_000_000);
        let t0 = b.state.lock().unwrap().last;
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.reserve(later, BURST as usize), Duration::ZERO);
        let wait = b.reserve(later, 500_000);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_body_is_the_data_in_pieces_at_the_rate() {
        let data: Bytes = (0..1_000_000u32)
            .map(|i| i as u8)
            .collect::<Vec<_>>()
            .into();
        let limit = Arc::new(Bandwidth::new(2_000_000));
        let start = tokio::time::Instant::now();
        let moved = Arc::new(AtomicU64::new(0));
        let mut body = counting(moved.clone(), async {
            upload_body(data.clone(), Some(&limit))
        })
        .await;
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= PIECE);
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, data);
        assert_eq!(
            moved.load(Ordering::SeqCst),
            1_000_000,
            "every byte counted"
        );
        // (1 MB - the burst) at 2 MB/s, in the paused clock's time.
        let took = start.elapsed().as_secs_f64();
        let want = (1e6 - BURST) / 2e6;
        assert!((took - want).abs() < 0.01, "took {took}, want {want}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_body_is_read_piece_by_piece_and_a_file_cut_short_fails_it() {
        use std::io::Write as _;
        let data: Vec<u8> = (0..3 * FILE_PIECE as u32 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        let file = Arc::new(std::fs::File::open(tmp.path()).unwrap());
        let range = crate::s3::FileRange::new(file, 3, data.len() as u64 - 3);
        let body = upload_body(PutBody::File(range), None);
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(data.len() as u64 - 3)
        );
        // A retry of the request reads the file again from the start of the range.
        let again = body.try_clone().expect("a file body can be sent again");
        for mut body in [body, again] {
            let mut got = Vec::new();
            let mut pieces = 0;
            while let Some(frame) = body.frame().await {
                let piece = frame.unwrap().into_data().unwrap();
                assert!(piece.len() <= FILE_PIECE);
                got.extend_from_slice(&piece);
                pieces += 1;
            }
            assert_eq!(got, &data[3..]);
            assert_eq!(pieces, 4, "pieces of at most {FILE_PIECE} bytes");
        }
        // Cut short after the body was made: the piece past the new end is an error.
        let mut body = upload_body(
            PutBody::File(crate::s3::FileRange::new(
                Arc::new(std::fs::File::open(tmp.path()).unwrap()),
                0,
                data.len() as u64,
            )),
            None,
        );
        tmp.as_file().set_len(FILE_PIECE as u64 + 10).unwrap();
        let mut failed = None;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                failed = Some(e.to_string());
                break;
            }
        }
        let failed = failed.expect("the body fails");
        assert!(failed.contains("changed"), "{failed}");
    }
}
