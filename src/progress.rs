//! Progress events, and the terminal view behind them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress of a transfer. Called from async tasks: implementations must not block.
pub trait Progress: Send + Sync {
    /// The transfer starts: `bytes` in `parts` parts.
    fn start(&self, bytes: u64, parts: u32);
    /// One part of `bytes` is stored.
    fn part_done(&self, bytes: u64);
    /// The transfer ended (successfully or not): clear any display.
    fn finish(&self);
    /// Something the user should know (resuming, a manifest path, a part sent again).
    fn note(&self, msg: &str);
    /// A tree's walk found a file of `bytes`: the totals grow.
    fn found(&self, _bytes: u64) {}
    /// One file of a tree is done; `skipped` when nothing was sent (its bytes count as done).
    fn file_done(&self, _bytes: u64, _skipped: bool) {}
    /// A tree's file `name` starts: the bar names the file in progress.
    fn file_started(&self, _name: &str) {}
    /// A meter that counts bytes as they move (from any task or thread), for transfers whose
    /// parts are long; `None` where nothing is drawn. Bytes counted on it are not counted again
    /// by [`Progress::part_counted`].
    fn meter(&self) -> Option<Meter> {
        None
    }
    /// One part is stored whose bytes were already counted on the [`Progress::meter`] (or, without
    /// a meter, counts them now).
    fn part_counted(&self, bytes: u64) {
        self.part_done(bytes);
    }
    /// A resumed transfer: `bytes` in `parts` parts were done by an earlier run.
    fn already(&self, _bytes: u64, _parts: u32) {}
    /// A local read of `bytes` starts (`what`: "hashing", "re-hashing the parts sent"), its
    /// bytes counted on the [`Progress::meter`].
    fn start_reading(&self, _bytes: u64, _what: &str) {}
}

/// Counts bytes as they move, from any task: a handle on the bar.
#[derive(Debug, Clone)]
pub struct Meter(ProgressBar);

impl Meter {
    /// `n` more bytes moved.
    pub fn add(&self, n: u64) {
        self.0.inc(n);
    }

    /// `n` bytes counted are to be moved again (a failed or corrupt attempt).
    pub fn take_back(&self, n: u64) {
        self.0.set_position(self.0.position().saturating_sub(n));
    }

    /// The job is `total` bytes, `done` of them already (a resumed job starts from there).
    pub fn begin(&self, total: u64, done: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.reset_eta();
    }

    /// The bytes counted so far.
    pub fn counted(&self) -> u64 {
        self.0.position()
    }
}

/// Reports nothing (pipes, `--quiet`, `--json`, tests).
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64, _: u32) {}
    fn part_done(&self, _: u64) {}
    fn finish(&self) {}
    fn note(&self, _: &str) {}
}

/// No bar, but notes on standard error (pipes, `--json`).
#[derive(Debug, Default)]
pub struct Notes;

impl Progress for Notes {
    fn start(&self, _: u64, _: u32) {}
    fn part_done(&self, _: u64) {}
    fn finish(&self) {}
    fn note(&self, msg: &str) {
        eprintln!("tally: {msg}");
    }
}

/// An indicatif bar on standard error: bytes, rate, ETA and parts done.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    done: AtomicU32,
    total: AtomicU32,
    files_found: AtomicU32,
    files_done: AtomicU32,
    /// The tree's file started last.
    current: std::sync::Mutex<String>,
}

impl Bar {
    /// A bar drawn on standard error (hidden by indicatif when stderr is not a terminal).
    pub fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} parts {msg}",
            )
            .expect("valid template"),
        );
        Bar {
            bar,
            done: AtomicU32::new(0),
            total: AtomicU32::new(0),
            files_found: AtomicU32::new(0),
            files_done: AtomicU32::new(0),
            current: std::sync::Mutex::new(String::new()),
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn start(&self, bytes: u64, parts: u32) {
        self.total.store(parts, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.bar.set_position(0);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{parts}"));
        self.bar.enable_steady_tick(Duration::from_millis(250));
        self.bar.reset_eta();
    }

    fn part_done(&self, bytes: u64) {
        self.bar.inc(bytes);
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.files_found.load(Ordering::Relaxed) > 0 {
            return; // a tree: the message counts files
        }
        let total = self.total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total}"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn note(&self, msg: &str) {
        self.bar.println(format!("tally: {msg}"));
    }

    fn meter(&self) -> Option<Meter> {
        Some(Meter(self.bar.clone()))
    }

    fn start_reading(&self, bytes: u64, what: &str) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        self.bar.set_message(what.to_owned());
        self.bar.set_position(0);
        self.bar.set_length(bytes);
        self.bar.enable_steady_tick(Duration::from_millis(250));
        self.bar.reset_eta();
    }

    fn part_counted(&self, _bytes: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.files_found.load(Ordering::Relaxed) == 0 {
            let total = self.total.load(Ordering::Relaxed);
            self.bar.set_message(format!("{done}/{total}"));
        }
    }

    fn already(&self, bytes: u64, parts: u32) {
        self.bar.inc(bytes);
        self.done.fetch_add(parts, Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{parts}/{total}"));
        // The rate and ETA count what this run moves, not what an earlier one did.
        self.bar.reset_eta();
    }

    fn found(&self, bytes: u64) {
        if self.files_found.fetch_add(1, Ordering::Relaxed) == 0 {
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} files {msg}",
                )
                .expect("valid template"),
            );
            self.bar.enable_steady_tick(Duration::from_millis(250));
        }
        self.bar.inc_length(bytes);
        self.files_message();
    }

    fn file_started(&self, name: &str) {
        *self.current.lock().expect("not poisoned") = name.to_owned();
        self.files_message();
    }

    fn file_done(&self, bytes: u64, skipped: bool) {
        if skipped {
            self.bar.inc(bytes);
        }
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.files_message();
    }
}

impl Bar {
    fn files_message(&self) {
        let (done, found) = (
            self.files_done.load(Ordering::Relaxed),
            self.files_found.load(Ordering::Relaxed),
        );
        let current = self.current.lock().expect("not poisoned");
        // The name's end: the file name and the folders closest to it.
        let name: String = {
            let chars: Vec<char> = current.chars().collect();
            let keep = chars.len().min(40);
            let tail: String = chars[chars.len() - keep..].iter().collect();
            if keep < chars.len() {
                format!("...{tail}")
            } else {
                tail
            }
        };
        self.bar.set_message(format!("{done}/{found} {name}"));
    }
}

/// One file's progress inside a tree's: its bytes count toward the tree's bar as they move; its
/// start and end redraw nothing, and its notes go to the log (`-v`), each file's outcome being in
/// its report line.
pub struct InTree<'a>(pub &'a dyn Progress);

impl Progress for InTree<'_> {
    fn start(&self, _bytes: u64, _parts: u32) {}
    fn part_done(&self, bytes: u64) {
        self.0.part_done(bytes);
    }
    fn finish(&self) {}
    fn note(&self, msg: &str) {
        tracing::info!("{msg}");
    }
    fn meter(&self) -> Option<Meter> {
        self.0.meter()
    }
    fn part_counted(&self, bytes: u64) {
        if self.0.meter().is_none() {
            self.0.part_done(bytes);
        }
    }
}
