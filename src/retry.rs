//! The one backoff policy: exponential delays with jitter, capped, optionally bounded by a deadline.
//!
//! Every retry loop in tally (a ranged GET cut short, CompleteMultipartUpload whose outcome was
//! unknown, `verify --wait`, `--read-back`, CreateMultipartUpload without SDK retries) takes its
//! delays from a [`Backoff`], so the rules (how long, how often, when to give up) live here once.
//! The SDK's own retries for ordinary requests are configured in `s3`; this covers the loops tally
//! runs itself, around decisions the SDK cannot make.

use std::time::{Duration, Instant};

/// The shape of a backoff: first delay, growth factor, cap, and how many attempts in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    /// The delay after the first failure.
    pub initial: Duration,
    /// Each delay is the previous one times this (before jitter).
    pub factor: f64,
    /// No delay exceeds this (before jitter).
    pub max: Duration,
    /// Attempts in all, the first included; `None` means only a deadline ends the loop.
    pub attempts: Option<u32>,
    /// Whether to add up to one delay's worth of jitter (tasks retrying together do not line up).
    pub jitter: bool,
}

impl Policy {
    /// Re-reading a ranged GET cut short: 200 ms, doubling, 5 attempts, with jitter.
    pub(crate) const RANGED_READ: Policy = Policy {
        initial: Duration::from_millis(200),
        factor: 2.0,
        max: Duration::from_secs(10),
        attempts: Some(5),
        jitter: true,
    };
    /// Requests whose outcome tally confirms before resending (Create, Complete): 500 ms, doubling,
    /// 5 attempts.
    pub(crate) const CONFIRMED: Policy = Policy {
        initial: Duration::from_millis(500),
        factor: 2.0,
        max: Duration::from_secs(20),
        attempts: Some(5),
        jitter: true,
    };
    /// Waiting for a store to show a state (`verify --wait`, `--read-back`): 500 ms, doubling to
    /// 10 s, until a deadline.
    pub(crate) const WAIT: Policy = Policy {
        initial: Duration::from_millis(500),
        factor: 2.0,
        max: Duration::from_secs(10),
        attempts: None,
        jitter: false,
    };

    /// A backoff following this policy, starting now.
    pub(crate) fn start(self) -> Backoff {
        Backoff {
            policy: self,
            next: self.initial,
            attempt: 1,
            deadline: None,
        }
    }
}

/// A retry loop in progress: call [`Backoff::next_delay`] after each failed attempt.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: Policy,
    next: Duration,
    attempt: u32,
    deadline: Option<Instant>,
}

impl Backoff {
    /// Stops the loop once waiting would pass `deadline`.
    pub(crate) fn until(mut self, deadline: Instant) -> Backoff {
        self.deadline = Some(deadline);
        self
    }

    /// The attempt about to be made or just made (1 for the first).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt, or `None` when the attempts or the deadline are used up.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.policy.attempts.is_some_and(|n| self.attempt >= n) {
            return None;
        }
        let base = self.next;
        let delay = if self.policy.jitter {
            base + jitter(base)
        } else {
            base
        };
        if self.deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return None;
        }
        self.attempt += 1;
        self.next = base.mul_f64(self.policy.factor).min(self.policy.max);
        Some(delay)
    }

    /// Sleeps the next delay and returns true, or returns false at once when the loop is over.
    pub(crate) async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }
}

/// Up to `d` of extra wait that differs between callers and calls.
fn jitter(d: Duration) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()));
    let mixed = (nanos ^ COUNTER.fetch_add(0x632B_E59B_D9B4_E019, Ordering::Relaxed))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 11;
    Duration::from_nanos(mixed % (d.as_nanos() as u64).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stop_after_the_attempts() {
        let mut b = Policy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(300),
            attempts: Some(4),
            jitter: false,
        }
        .start();
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(
            delays,
            [100, 200, 300].map(Duration::from_millis).to_vec(),
            "three waits between four attempts, capped at 300 ms"
        );
        assert_eq!(b.attempt(), 4);
    }

    #[test]
    fn jitter_stays_within_one_delay() {
        let mut b = Policy::RANGED_READ.start();
        let d = b.next_delay().unwrap();
        assert!(
            d >= Duration::from_millis(200) && d < Duration::from_millis(400),
            "{d:?}"
        );
    }

    #[test]
    fn a_deadline_ends_an_unbounded_loop() {
        let mut b = Policy::WAIT
            .start()
            .until(Instant::now() + Duration::from_millis(800));
        assert_eq!(b.next_delay(), Some(Duration::from_millis(500)));
        // The next wait, 1 s, would pass the deadline however little time has gone by.
        assert_eq!(b.next_delay(), None);
        let mut gone = Policy::WAIT.start().until(Instant::now());
        assert_eq!(gone.next_delay(), None, "a past deadline allows no wait");
    }
}
