//! Hedging: a part whose connection moves far slower than its peers' is sent again on another
//! connection; the first good answer wins and the other request is dropped (cancelled).
//!
//! Why (issue 24): on S3 a few connections are many times slower than the rest, and a transfer
//! that waits for its slowest part takes as long as that part. The AWS Rust transfer manager and
//! the CRT re-send such requests; so does tally, for UploadPart. Re-sending a part is safe: the
//! second request carries the same bytes and the same checksum (the part was hashed once), S3
//! keeps one copy of a part number (the last one stored, the same bytes either way), and the
//! caller records the part and counts it once, from the one answer it keeps.
//!
//! How a straggler is told: every attempt counts the bytes of its body handed to its connection
//! ([`crate::s3::throttle::counting`]; a download part, the bytes it received, over the shorter
//! [`DOWNLOAD_WINDOW`]); its rate over the last [`WINDOW`] is compared with the
//! rates of the other parts of the same transfer in flight at that moment. An attempt is slow when
//! at least [`MIN_PEERS`] attempts have a rate and its own is under the median divided by
//! [`SLOW`]. A part whose body is all handed over (it waits for S3's answer) is never called slow,
//! and a part is re-sent at most once.
//!
//! A part shorter than the window has no rate to compare (its body may also go whole into the
//! socket's buffer, where its rate no longer shows): an upload attempt whose body is still being
//! handed over after [`OVERDUE`] times the time its part takes at the median rate of the attempts
//! answered lately (whole-attempt rates, at least [`MIN_PEERS`]) is slow too, once it is a
//! window old. One whose body is all handed over is never overdue: it waits for its last bytes to
//! drain and for S3's answer, which a busy server can make long (re-sending it then, measured on
//! this 2-core machine, only added copies: six in one 4 GiB upload with no straggler).
//!
//! A pause is not a straggler: a server busy for a moment holds some connections still for a
//! second or a few (measured through the link emulator on a loaded 2-core machine: gaps of 1-5.7
//! s in a part's progress, and every part re-sent for one lost to its first attempt, which then
//! cost a round of re-sends at Complete on Garage). So an attempt is sent again only once it has
//! been slow for [`PATIENCE`] of the time a whole part takes at the median rate (or the window,
//! when that is longer): a re-send then costs at most about a quarter of a part's time more than
//! an ideal one, and a pause shorter than that is waited out.
//!
//! A busy client is not a slow link: when tally's own threads are starved (hashing on every
//! core, a loaded machine), some parts' bodies are polled late and look slow against the rest,
//! and re-sending them only adds work (measured: 127 UploadParts for 64 parts at 50 MB/s per
//! connection on a loaded 2-core VM). Two guards: no part is called slow for a [`WINDOW`] after
//! a check ran more than [`LATE`] behind its schedule (the runtime's own lag, the symptom of a
//! starved client), and at most one attempt in [`SHARE`] of the most in flight at once is a
//! re-send at any moment (a link with stragglers has a few; a busy client would re-send many).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The span over which an upload attempt's rate is measured: its first pieces fill the socket's
/// buffer at once, and each piece counted is 1 MiB, so a shorter span would see bursts.
pub(crate) const WINDOW: Duration = Duration::from_secs(2);

/// The span over which a download part's rate is measured: bytes are counted as they arrive,
/// in pieces of at most tens of KiB, so a second tells a straggler (and halves the time one
/// costs before it is fetched again).
pub(crate) const DOWNLOAD_WINDOW: Duration = Duration::from_secs(1);

/// How often the attempts in flight are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Attempts with a rate needed (the slow one included) before any is called slow.
pub(crate) const MIN_PEERS: usize = 4;

/// An attempt is slow under the median of its peers' rates divided by this.
pub(crate) const SLOW: f64 = 8.0;

/// A check this far behind its schedule says the client, not the link, is slow.
pub(crate) const LATE: Duration = Duration::from_millis(100);

/// At most one attempt in this many in flight is a re-send (at least one).
pub(crate) const SHARE: usize = 8;

/// The share of a whole part's time (at the median rate) an attempt must have been slow before
/// it is sent again: a connection that pauses for less (a server busy for a moment) goes on.
pub(crate) const PATIENCE: f64 = 0.25;

/// An upload attempt whose body is still being handed over after this many times the time its
/// part takes at the median rate of the attempts answered lately is overdue (and at least a
/// [`WINDOW`] old).
pub(crate) const OVERDUE: f64 = 1.5;

/// The answered attempts whose whole-attempt rates make that median (the latest).
const ANSWERED_KEPT: usize = 32;

/// The rates of the attempts in flight of one transfer.
#[derive(Debug)]
pub(crate) struct Flights {
    /// The span each rate is measured over.
    window: Duration,
    rates: Mutex<Vec<(u64, Option<f64>)>>,
    next: AtomicU64,
    /// Until when no attempt is called slow (a late check was seen).
    busy_until: Mutex<Option<Instant>>,
    /// Re-sends in flight.
    resends: AtomicU64,
    /// The most attempts ever watched at once: the transfer's width, which the tail of a
    /// transfer (stragglers left alone in flight) keeps.
    widest: AtomicU64,
    /// The whole-attempt rates (length over time to the answer) of the latest attempts answered
    /// without a re-send, at most [`ANSWERED_KEPT`].
    answered: Mutex<VecDeque<f64>>,
}

impl Default for Flights {
    fn default() -> Self {
        Self::with_window(WINDOW)
    }
}

impl Flights {
    /// Flights whose rates are measured over `window`.
    pub(crate) fn with_window(window: Duration) -> Self {
        Self {
            window,
            rates: Mutex::default(),
            next: AtomicU64::default(),
            busy_until: Mutex::default(),
            resends: AtomicU64::default(),
            widest: AtomicU64::default(),
            answered: Mutex::default(),
        }
    }

    /// Starts watching an attempt of `len` bytes whose body counts into `moved`.
    fn watch(&self, moved: Arc<AtomicU64>, len: u64) -> Watch<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut rates = self.rates.lock().expect("flights");
        rates.push((id, None));
        self.widest.fetch_max(rates.len() as u64, Ordering::Relaxed);
        drop(rates);
        Watch {
            flights: self,
            id,
            moved,
            len,
            samples: VecDeque::new(),
            slow_since: None,
            started: Instant::now(),
        }
    }

    /// An attempt of `len` bytes was answered `after` its start, with no re-send.
    fn answered(&self, len: u64, after: Duration) {
        let secs = after.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let mut answered = self.answered.lock().expect("flights");
        if answered.len() == ANSWERED_KEPT {
            answered.pop_front();
        }
        answered.push_back(len as f64 / secs);
    }

    /// Whether an attempt of `len` bytes unanswered `after` its start is overdue: older than a
    /// window and than [`OVERDUE`] times its part's time at the median rate of the attempts
    /// answered lately (at least [`MIN_PEERS`] of them).
    fn overdue(&self, len: u64, after: Duration) -> bool {
        if after < self.window {
            return false;
        }
        let mut rates: Vec<f64> = self
            .answered
            .lock()
            .expect("flights")
            .iter()
            .copied()
            .collect();
        let Some(median) = median(&mut rates) else {
            return false;
        };
        let part = len as f64 / median;
        let overdue = after.as_secs_f64() > part * OVERDUE;
        if overdue {
            tracing::debug!(
                after = after.as_secs_f64(),
                part,
                answered = rates.len(),
                "an attempt is overdue against the attempts answered lately"
            );
        }
        overdue
    }

    /// A check that was due at `due` ran at `now`: when late by more than [`LATE`], the client
    /// is busy and nothing is called slow for a [`WINDOW`].
    fn checked(&self, due: Instant, now: Instant) {
        if now.duration_since(due) > LATE {
            *self.busy_until.lock().expect("flights") = Some(now + self.window);
        }
    }

    /// Whether the client was seen busy within the last [`WINDOW`].
    fn busy(&self, now: Instant) -> bool {
        self.busy_until
            .lock()
            .expect("flights")
            .is_some_and(|until| now < until)
    }

    /// Takes a re-send's place if fewer than one in [`SHARE`] of the most attempts in flight at
    /// once are re-sends; released when the guard drops.
    fn resend(&self) -> Option<Resend<'_>> {
        let widest = self.widest.load(Ordering::Relaxed);
        let allowed = (widest / SHARE as u64).max(1);
        self.resends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < allowed).then_some(n + 1)
            })
            .ok()
            .map(|_| Resend(self))
    }

    /// Publishes `id`'s rate; when it is slow against the others', their median.
    fn slow(&self, id: u64, rate: Option<f64>) -> Option<f64> {
        let mut rates = self.rates.lock().expect("flights");
        if let Some(r) = rates.iter_mut().find(|(i, _)| *i == id) {
            r.1 = rate;
        }
        let rate = rate?;
        let mut known: Vec<f64> = rates.iter().filter_map(|(_, r)| *r).collect();
        drop(rates);
        let median = slow_against(rate, &mut known)?;
        tracing::debug!(
            rate,
            median,
            peers = known.len(),
            "an attempt is slow against its peers"
        );
        Some(median)
    }
}

/// When `rate` is slow among `rates` (its own included), their median: at least [`MIN_PEERS`] of
/// them, and `rate` under their median divided by [`SLOW`].
fn slow_against(rate: f64, rates: &mut [f64]) -> Option<f64> {
    let median = median(rates)?;
    (rate < median / SLOW).then_some(median)
}

/// The median of `rates` when there are at least [`MIN_PEERS`] (sorts them).
fn median(rates: &mut [f64]) -> Option<f64> {
    if rates.len() < MIN_PEERS {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let mid = rates.len() / 2;
    Some(if rates.len().is_multiple_of(2) {
        (rates[mid - 1] + rates[mid]) / 2.0
    } else {
        rates[mid]
    })
}

/// How long an attempt of `len` bytes must stay slow, once its [`WINDOW`] first says so, before
/// it is sent again: until [`PATIENCE`] of the time a whole part takes at the `median` rate has
/// passed since the slowness began (a window before the first verdict), or no longer than that.
fn hold(len: u64, median: f64, window: Duration) -> Duration {
    let part = Duration::try_from_secs_f64(len as f64 / median).unwrap_or(Duration::MAX);
    part.mul_f64(PATIENCE).saturating_sub(window)
}

/// A re-send's place among the flights (see [`Flights::resend`]).
struct Resend<'a>(&'a Flights);

impl Drop for Resend<'_> {
    fn drop(&mut self) {
        self.0.resends.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One attempt being watched; leaves the flights when dropped.
struct Watch<'a> {
    flights: &'a Flights,
    id: u64,
    moved: Arc<AtomicU64>,
    len: u64,
    samples: VecDeque<(Instant, u64)>,
    /// Since when every check has found this attempt slow.
    slow_since: Option<Instant>,
    /// When the attempt was sent.
    started: Instant,
}

impl Watch<'_> {
    /// Takes a sample at `now` for the check due at `due`: whether this attempt has been slow
    /// against its peers for long enough ([`hold`]), or is overdue ([`Flights::overdue`]: an
    /// upload's body may sit whole in socket buffers, where its rate no longer shows), never
    /// while the client is busy.
    fn straggling(&mut self, due: Instant, now: Instant) -> bool {
        self.flights.checked(due, now);
        let moved = self.moved.load(Ordering::Relaxed);
        self.samples.push_back((now, moved));
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.duration_since(t) >= self.flights.window)
        {
            self.samples.pop_front();
        }
        let &(t0, m0) = self.samples.front().expect("a sample");
        let span = now.duration_since(t0);
        let rate = (moved < self.len && span >= self.flights.window)
            .then(|| (moved - m0) as f64 / span.as_secs_f64());
        let by_rate = match self.flights.slow(self.id, rate) {
            Some(median) => {
                let since = *self.slow_since.get_or_insert(now);
                now.duration_since(since) >= hold(self.len, median, self.flights.window)
            }
            None => {
                self.slow_since = None;
                false
            }
        };
        // Overdue only while its body is still being handed over: one all handed over waits for
        // its last bytes to drain from the socket's buffer and for S3's answer, which on a busy
        // server can take a part's time (re-sending it then only adds a copy).
        let overdue = moved < self.len
            && self
                .flights
                .overdue(self.len, now.duration_since(self.started));
        (by_rate || overdue) && !self.flights.busy(now)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut rates = self.flights.rates.lock().expect("flights");
        rates.retain(|(i, _)| *i != self.id);
    }
}

/// Resolves once an attempt of `len` bytes that counts its progress into `moved` is slow
/// against the other attempts watched in `flights`; never, otherwise. For a download's part,
/// which cannot run twice side by side (both would write the same offsets of the partial file):
/// the slow read is stopped, its last write awaited, and the part fetched again
/// (`download::fetch`).
pub(crate) async fn slow(flights: &Flights, moved: Arc<AtomicU64>, len: u64) {
    let mut watch = flights.watch(moved, len);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        if watch.straggling(due, Instant::now()) {
            return;
        }
    }
}

/// Runs `attempt` (one request for a part of `len` bytes, counting its body into the counter it
/// is given) and, if it turns out slow against the other attempts in `flights`, a second one
/// beside it (after calling `on_hedge`). Returns the first success, or, when both fail, the
/// second's error; the other request is dropped (cancelled) when this returns.
/// With `enabled` false the one attempt runs alone (no second request is ever sent).
pub(crate) async fn send<T, E, Fut>(
    flights: &Flights,
    len: u64,
    enabled: bool,
    attempt: impl Fn(Arc<AtomicU64>) -> Fut,
    on_hedge: impl FnOnce(),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let moved = Arc::new(AtomicU64::new(0));
    // The requests' futures live on the heap: two UploadParts inline would make every caller's
    // future (and a debug build's stack) twice as large.
    if !enabled {
        return Box::pin(attempt(moved)).await;
    }
    let mut first = Box::pin(attempt(moved.clone()));
    let mut watch = flights.watch(moved, len);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let place = loop {
        tokio::select! {
            out = &mut first => {
                if out.is_ok() {
                    flights.answered(len, watch.started.elapsed());
                }
                return out;
            }
            due = tick.tick() => {
                if watch.straggling(due, Instant::now())
                    && let Some(place) = flights.resend()
                {
                    break place;
                }
            }
        }
    };
    // Slow: no longer one of the peers the others are measured against.
    drop(watch);
    on_hedge();
    let moved = Arc::new(AtomicU64::new(0));
    let mut second = Box::pin(attempt(moved.clone()));
    let _watch = flights.watch(moved, len);
    let _place = place;
    let hedged_at = Instant::now();
    tokio::select! {
        out = &mut first => {
            tracing::debug!(after = ?hedged_at.elapsed(), ok = out.is_ok(), "the first attempt answered first");
            match out {
                Ok(v) => Ok(v),
                Err(_) => second.await,
            }
        }
        out = &mut second => {
            tracing::debug!(after = ?hedged_at.elapsed(), ok = out.is_ok(), "the second attempt answered first");
            match out {
                Ok(v) => Ok(v),
                Err(e) => first.await.or(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_is_far_under_the_median_of_enough_peers() {
        assert_eq!(slow_against(1.0, &mut [1.0, 10.0, 10.0, 12.0]), Some(10.0));
        assert!(
            slow_against(3.0, &mut [3.0, 10.0, 10.0, 12.0]).is_none(),
            "a third is not slow"
        );
        assert!(
            slow_against(1.0, &mut [1.0, 10.0, 10.0]).is_none(),
            "too few peers"
        );
        assert!(
            slow_against(5.0, &mut [5.0, 5.0, 5.0, 5.0, 5.0]).is_none(),
            "all equally slow"
        );
    }

    #[test]
    fn a_late_check_keeps_every_part_from_being_called_slow_for_a_window() {
        let flights = Flights::default();
        let t0 = Instant::now();
        flights.checked(t0, t0 + LATE / 2);
        assert!(
            !flights.busy(t0 + LATE),
            "a check a little late is not a busy client"
        );
        flights.checked(t0, t0 + LATE * 2);
        assert!(
            flights.busy(t0 + LATE * 2 + WINDOW / 2),
            "busy for a window"
        );
        assert!(!flights.busy(t0 + LATE * 2 + WINDOW), "and no longer");
    }

    #[test]
    fn at_most_one_attempt_in_eight_is_a_resend() {
        let flights = Flights::default();
        let watches: Vec<_> = (0..16)
            .map(|_| flights.watch(Arc::new(AtomicU64::new(0)), 1))
            .collect();
        let first = flights.resend().expect("one of 16");
        let second = flights.resend().expect("two of 16");
        assert!(flights.resend().is_none(), "a third of 16 is refused");
        drop(first);
        let again = flights.resend().expect("a place freed is taken again");
        drop((second, again, watches));
        let (a, b) = (flights.resend(), flights.resend());
        assert!(
            a.is_some() && b.is_some(),
            "the tail of a transfer keeps its width's share"
        );
        assert!(
            Flights::default().resend().is_some(),
            "always one, even alone"
        );
    }

    /// An attempt that moves `per_tick` bytes on every tick of the paused clock.
    async fn mover(moved: Arc<AtomicU64>, per_tick: u64, len: u64, tag: u32) -> Result<u32, ()> {
        while moved.load(Ordering::SeqCst) < len {
            tokio::time::sleep(Duration::from_millis(100)).await;
            moved.fetch_add(per_tick, Ordering::SeqCst);
        }
        Ok(tag)
    }

    /// A part of `len` bytes at the peers' rate (1 MB per tick), answering `tag`, that is never
    /// sent again.
    fn peer(flights: &Flights, len: u64, tag: u32) -> impl Future<Output = Result<u32, ()>> + '_ {
        send(
            flights,
            len,
            true,
            move |m| mover(m, 1_000_000, len, tag),
            || panic!("a peer at the median is never sent again"),
        )
    }

    /// An attempt of a straggling part: the first (counted in `attempts`) moves 10 KB per tick,
    /// any later one 1 MB like the peers; it answers 100 + its attempt's number.
    fn slow_then_fast(
        attempts: &AtomicU64,
        moved: Arc<AtomicU64>,
        len: u64,
    ) -> impl Future<Output = Result<u32, ()>> + use<> {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        let per_tick = if n == 0 { 10_000 } else { 1_000_000 };
        mover(moved, per_tick, len, 100 + n as u32)
    }

    /// `part` run beside four [`peer`]s of `len` bytes: the peers' answers and the part's.
    async fn beside_four_peers<T>(
        flights: &Flights,
        len: u64,
        part: impl Future<Output = T>,
    ) -> ([Result<u32, ()>; 4], T) {
        let (a, b, c, d, p) = tokio::join!(
            peer(flights, len, 0),
            peer(flights, len, 1),
            peer(flights, len, 2),
            peer(flights, len, 3),
            part
        );
        ([a, b, c, d], p)
    }

    /// A straggling part ([`slow_then_fast`], its attempts counted in `attempts`) sent with
    /// hedging on; the time since `start` when it was sent again goes into `hedged_at`.
    fn timed_straggler<'a>(
        flights: &'a Flights,
        len: u64,
        attempts: &'a AtomicU64,
        start: Instant,
        hedged_at: &'a Mutex<Option<Duration>>,
    ) -> impl Future<Output = Result<u32, ()>> + 'a {
        send(
            flights,
            len,
            true,
            move |m| slow_then_fast(attempts, m, len),
            move || *hedged_at.lock().unwrap() = Some(start.elapsed()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_part_is_sent_again_and_the_fast_copy_wins() {
        let flights = Flights::default();
        let len = 100_000_000;
        let attempts = AtomicU64::new(0);
        let hedged = AtomicU64::new(0);
        // Four peers at 1 MB per tick, one part whose first attempt moves 10 KB per tick and whose
        // second moves like the peers.
        let slow = send(
            &flights,
            len,
            true,
            |m| slow_then_fast(&attempts, m, len),
            || {
                hedged.fetch_add(1, Ordering::SeqCst);
            },
        );
        let (peers, s) = beside_four_peers(&flights, len, slow).await;
        assert_eq!(peers, [Ok(0), Ok(1), Ok(2), Ok(3)]);
        assert_eq!(s, Ok(101), "the second attempt's answer");
        assert_eq!(hedged.load(Ordering::SeqCst), 1);
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "sent again once");
        assert!(flights.rates.lock().unwrap().is_empty(), "every watch left");
    }

    #[test]
    fn the_hold_is_a_share_of_a_part_past_the_window() {
        // 400 MB at 10 MB/s: 40 s a part, a quarter is 10 s, 2 s of which the window saw.
        assert_eq!(
            hold(400_000_000, 10_000_000.0, WINDOW),
            Duration::from_secs(8)
        );
        assert_eq!(
            hold(10_000_000, 10_000_000.0, WINDOW),
            Duration::ZERO,
            "short parts: the window"
        );
        assert!(
            hold(1, 0.0, WINDOW) > Duration::from_secs(3600),
            "no median rate: never"
        );
    }

    /// Like [`mover`], but moving nothing for `pause` after its first `after` bytes.
    async fn pauser(
        moved: Arc<AtomicU64>,
        len: u64,
        after: u64,
        pause: Duration,
    ) -> Result<u32, ()> {
        mover(moved.clone(), 1_000_000, after, 0).await?;
        tokio::time::sleep(pause).await;
        mover(moved, 1_000_000, len, 9).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_pauses_for_less_than_its_hold_is_not_sent_again() {
        let flights = Flights::default();
        let len = 400_000_000;
        // Peers move 10 MB/s: a part takes 40 s, the hold is 8 s past the window. A 7 s pause is
        // a server busy for a moment, not a straggler.
        let pausing = send(
            &flights,
            len,
            true,
            |m| pauser(m, len, 50_000_000, Duration::from_secs(7)),
            || panic!("a pause shorter than the hold is waited out"),
        );
        let (peers, p) = beside_four_peers(&flights, len, pausing).await;
        assert_eq!((peers, p), ([Ok(0), Ok(1), Ok(2), Ok(3)], Ok(9)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_slow_past_its_hold_is_sent_again_then_and_not_before() {
        let flights = Flights::default();
        let len = 400_000_000;
        let start = Instant::now();
        let hedged_at = Mutex::new(None);
        let attempts = AtomicU64::new(0);
        let slow = timed_straggler(&flights, len, &attempts, start, &hedged_at);
        let (_, s) = beside_four_peers(&flights, len, slow).await;
        assert_eq!(s, Ok(101), "the copy's answer");
        let at = hedged_at.into_inner().unwrap().expect("sent again");
        // Slow from its start: the window (2 s) and the hold (8 s), checked every 250 ms.
        assert!(
            at >= Duration::from_secs(10) && at <= Duration::from_secs(11),
            "sent again after {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_part_that_stops_is_told_within_its_shorter_window() {
        let flights = Flights::with_window(DOWNLOAD_WINDOW);
        let len = 32_000_000;
        let start = Instant::now();
        let peers = (0..4).map(|i| {
            let moved = Arc::new(AtomicU64::new(0));
            let flights = &flights;
            async move {
                tokio::select! {
                    out = mover(moved.clone(), 600_000, len, i) => out,
                    () = slow(flights, moved, len) => panic!("a peer at 6 MB/s is never slow"),
                }
            }
        });
        let stuck = async {
            slow(&flights, Arc::new(AtomicU64::new(0)), len).await;
            start.elapsed()
        };
        let (told, _) = tokio::join!(stuck, futures::future::join_all(peers));
        // 32 MB at 6 MB/s: 5.3 s a part, a quarter is 1.3 s, the window 1 s of it; checks come
        // every 250 ms, and the peers publish their first rates on their own checks.
        assert!(
            told >= Duration::from_millis(1300) && told <= Duration::from_millis(1800),
            "told after {told:?}"
        );
    }

    /// Rounds of `rounds` x 4 peers of `len` bytes at 10 MB/s (a part takes `len` / 10 MB), one
    /// round after the other: each part is over before a 2 s window could give it a rate.
    async fn short_rounds(flights: &Flights, len: u64, rounds: u32) {
        for r in 0..rounds {
            let peers = (0..4).map(|i| peer(flights, len, r * 4 + i));
            for out in futures::future::join_all(peers).await {
                assert!(out.is_ok());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_part_still_being_handed_over_long_after_its_peers_answered_is_sent_again() {
        let flights = Flights::default();
        let len = 10_000_000;
        let start = Instant::now();
        let hedged_at = Mutex::new(None);
        let attempts = AtomicU64::new(0);
        // The peers' parts take 1 s each, too short for a rate over the 2 s window: only their
        // answers tell what a part takes. The slow part moves 100 KB/s.
        let slow = timed_straggler(&flights, len, &attempts, start, &hedged_at);
        let (s, ()) = tokio::join!(slow, short_rounds(&flights, len, 4));
        assert_eq!(s, Ok(101), "the copy's answer");
        let at = hedged_at.into_inner().unwrap().expect("sent again");
        // Overdue at 1.5 parts (1.5 s) but never before a window (2 s); checks every 250 ms.
        assert!(
            at >= WINDOW && at <= WINDOW + Duration::from_millis(300),
            "sent again after {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_all_handed_over_that_waits_for_its_answer_is_not_sent_again() {
        let flights = Flights::default();
        let len = 10_000_000;
        // Its body goes into the socket's buffer at once; the answer comes 5 s later (a busy
        // server, bytes draining): long overdue by time, but nothing of it is left to send.
        let waiting = send(
            &flights,
            len,
            true,
            |m| async move {
                m.store(len, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<u32, ()>(7)
            },
            || panic!("a body all handed over is never sent again"),
        );
        let (w, ()) = tokio::join!(waiting, short_rounds(&flights, len, 6));
        assert_eq!(w, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn parts_all_equally_slow_are_never_sent_again() {
        let flights = Flights::default();
        let len = 10_000_000;
        let runs = (0..6).map(|i| {
            send(
                &flights,
                len,
                true,
                move |m| mover(m, 50_000, len, i),
                || panic!("nothing to hedge: every part is as slow"),
            )
        });
        let out = futures::future::join_all(runs).await;
        assert_eq!(out, (0..6).map(Ok).collect::<Vec<Result<u32, ()>>>());
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_copy_fails_the_first_attempt_still_answers() {
        let flights = Flights::default();
        let len = 100_000_000;
        let attempts = AtomicU64::new(0);
        let slow = send(
            &flights,
            len,
            true,
            |m| {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        mover(m, 10_000_000 / 100, 10_000_000, 7).await
                    } else {
                        Err(())
                    }
                }
            },
            || {},
        );
        // The slow part is 10x smaller so that it ends; its copy fails at once.
        let (_, s) = beside_four_peers(&flights, len, slow).await;
        assert_eq!(s, Ok(7));
    }
}
