//! The one loop every tree command drives: the walk's entries in, at most `concurrency` files in
//! progress, each outcome handed on as it finishes and counted, the summary fed in key order; an
//! error that stops everything cancels the rest (files in flight end as they do on Ctrl-C).
//!
//! A check made for many files at once ([`Settle`]: a tree upload's read-back by listing) holds
//! the lines that wait for it outside the files in progress: a line counts
//! and is handed on only once its check is done. A batch is checked beside the files, not instead
//! of them (one batch at a time, the next filling meanwhile: at most twice [`HELD`] lines held).

use std::future::Future;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, InOrder, TreeReport, skipped_entry};
use crate::error::Error;
use crate::progress::Progress;
use crate::tree::{FileEntry, Found};

/// Lines in one [`Settle`] check at most: a check starts when this many wait (a listing page holds
/// 1,000 keys) and none is running, and once more at the end; while one runs the next batch
/// fills, so at most twice this many lines are held.
pub(crate) const HELD: usize = 1000;

/// A check of many finished files at once. `settle` gets every line that waits for it (those
/// with [`FileLine::read_back`]) and turns each into its final line.
pub(crate) trait Settle: Sync {
    /// Checks `lines` (at most [`HELD`], in any order) and rewrites each with the outcome,
    /// clearing its `read_back`.
    fn settle<'a>(&'a self, lines: &'a mut [FileLine]) -> BoxFuture<'a, ()>;
}

/// Runs `per_file` on every file of `walk` (a directory's [`crate::tree::Walk`], or a download's
/// listing, whose error stops the run), `concurrency` at a time, into `report`. Returns the
/// error that stopped the run, if one did (after cancelling `stop` and draining what was in flight).
pub(crate) async fn run<F, Fut>(
    walk: impl futures::Stream<Item = Result<Found, Error>> + Unpin,
    concurrency: usize,
    stop: &CancellationToken,
    progress: &dyn Progress,
    report: &mut TreeReport,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
    per_file: F,
) -> Option<Error>
where
    F: Fn(FileEntry) -> Fut,
    Fut: Future<Output = Result<FileLine, (FileLine, Error)>>,
{
    let sink = Sink {
        stop,
        report,
        on_line,
        in_order: InOrder::default(),
        fatal: None,
        held: Held::default(),
        settle: None,
    };
    run_with(walk, concurrency, progress, sink, per_file).await
}

/// [`run`], with the lines that ask for it ([`FileLine::read_back`]) checked by `settle`, many
/// at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_settled<F, Fut>(
    walk: impl futures::Stream<Item = Result<Found, Error>> + Unpin,
    concurrency: usize,
    stop: &CancellationToken,
    progress: &dyn Progress,
    report: &mut TreeReport,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
    settle: &dyn Settle,
    per_file: F,
) -> Option<Error>
where
    F: Fn(FileEntry) -> Fut,
    Fut: Future<Output = Result<FileLine, (FileLine, Error)>>,
{
    let sink = Sink {
        stop,
        report,
        on_line,
        in_order: InOrder::default(),
        fatal: None,
        held: Held::default(),
        settle: Some(settle),
    };
    run_with(walk, concurrency, progress, sink, per_file).await
}

async fn run_with<F, Fut>(
    walk: impl futures::Stream<Item = Result<Found, Error>> + Unpin,
    concurrency: usize,
    progress: &dyn Progress,
    mut sink: Sink<'_>,
    per_file: F,
) -> Option<Error>
where
    F: Fn(FileEntry) -> Fut,
    Fut: Future<Output = Result<FileLine, (FileLine, Error)>>,
{
    let (per_file, stop) = (&per_file, sink.stop);
    let mut outcomes = walk
        .inspect(|found| {
            if let Ok(Found::File(entry)) = found {
                progress.found(entry.size);
            }
        })
        .enumerate()
        .map(|(index, found)| async move {
            // Once the run is stopping (an error that dooms every file, Ctrl-C), a file not yet
            // started is not started: counted, never called failed.
            if stop.is_cancelled() && matches!(found, Ok(Found::File(_))) {
                return (index as u64, None);
            }
            let line = match found {
                Ok(Found::File(entry)) => {
                    let size = entry.size;
                    progress.file_started(&entry.rel);
                    let line = per_file(entry).await;
                    let nothing_sent = line
                        .as_ref()
                        .is_ok_and(|l| matches!(l.action, Action::Skipped | Action::Identical));
                    progress.file_done(size, nothing_sent);
                    line
                }
                Ok(Found::Skipped(skip)) => Ok(skipped_entry(&skip)),
                // The entries themselves could not be read (a listing failed): the run stops.
                Err(e) => Err((FileLine::default(), e)),
            };
            (index as u64, Some(line))
        })
        .buffer_unordered(concurrency);
    // A batch being checked is awaited beside the files, never instead of them: on a link where
    // a listing costs a round trip or more, the files in progress go on and new ones start
    // meanwhile. One batch is checked at a time; while it is, the next fills (at most 2 x HELD
    // lines held), and only a full next batch waits for it.
    let mut settling: Option<BoxFuture<'_, Held>> = None;
    loop {
        let next_full = sink.held.lines.len() >= HELD;
        let event = match settling.as_mut() {
            Some(check) if next_full => Event::Settled(check.await),
            Some(check) => tokio::select! {
                biased;
                held = check => Event::Settled(held),
                o = outcomes.next() => Event::Outcome(o),
            },
            None => Event::Outcome(outcomes.next().await),
        };
        match event {
            Event::Settled(done) => {
                settling = None;
                sink.lines(done);
                if sink.held.lines.len() >= HELD {
                    settling = sink.check();
                }
            }
            Event::Outcome(Some((index, outcome))) => {
                sink.outcome(index, outcome);
                if settling.is_none() && sink.held.lines.len() >= HELD {
                    settling = sink.check();
                }
            }
            Event::Outcome(None) => break,
        }
    }
    drop(outcomes);
    if let Some(check) = settling {
        let done = check.await;
        sink.lines(done);
    }
    if let Some(check) = sink.check() {
        let done = check.await;
        sink.lines(done);
    }
    let Sink {
        in_order,
        report,
        fatal,
        ..
    } = sink;
    in_order.finish(report);
    progress.finish();
    report.complete = !stop.is_cancelled();
    fatal
}

/// Where outcomes go: counted into the report, handed to `on_line`, fed to the summary in order.
struct Sink<'a> {
    stop: &'a CancellationToken,
    report: &'a mut TreeReport,
    on_line: &'a (dyn Fn(&FileLine) + Send + Sync),
    in_order: InOrder,
    fatal: Option<Error>,
    /// Lines waiting for `settle`, with their walk index.
    held: Held,
    settle: Option<&'a dyn Settle>,
}

/// What the loop of [`run_with`] met next.
enum Event<T> {
    /// A file's outcome (`None`: the walk is done and every file with it).
    Outcome(Option<T>),
    /// A batch of lines checked.
    Settled(Held),
}

/// Lines waiting for `settle`, and apart their walk indexes: the lines are handed to it as they
/// are (pairs split into two vectors at each check held a copy of every line: 0.3 MB at 1,000).
#[derive(Default)]
struct Held {
    indexes: Vec<u64>,
    lines: Vec<FileLine>,
}

type Outcome = Option<Result<FileLine, (FileLine, Error)>>;

impl<'a> Sink<'a> {
    fn outcome(&mut self, index: u64, outcome: Outcome) {
        let line = match outcome {
            None => return self.not_started(index),
            // Stopped by the run's own stop before it kept anything: as good as not started.
            Some(Ok(line))
                if self.stop.is_cancelled()
                    && line.action == Action::Failed
                    && line.reason.as_deref() == Some("interrupted") =>
            {
                return self.not_started(index);
            }
            Some(Ok(line)) => line,
            Some(Err((line, e))) => {
                // The run ends with this error, printed once, as the command's error; files in
                // flight that meet the same kind of error are counted, not printed again.
                if self.fatal.is_none() {
                    self.fatal = Some(e);
                    self.stop.cancel();
                    return;
                }
                self.report.add(&line);
                self.in_order.done(index, None, self.report);
                return;
            }
        };
        if line.read_back.is_some() && self.settle.is_some() {
            self.held.indexes.push(index);
            self.held.lines.push(line);
            return;
        }
        self.line(index, line);
    }

    fn not_started(&mut self, index: u64) {
        self.report.not_started += 1;
        self.in_order.done(index, None, self.report);
    }

    /// The check of the held lines (taken from `held`), if any wait; its result goes to
    /// [`Sink::lines`].
    fn check(&mut self) -> Option<BoxFuture<'a, Held>> {
        let settle = self.settle?;
        if self.held.lines.is_empty() {
            return None;
        }
        let mut held = std::mem::take(&mut self.held);
        Some(Box::pin(async move {
            settle.settle(&mut held.lines).await;
            held
        }))
    }

    /// Hands on checked lines.
    fn lines(&mut self, checked: Held) {
        for (index, line) in checked.indexes.into_iter().zip(checked.lines) {
            self.line(index, line);
        }
    }

    fn line(&mut self, index: u64, line: FileLine) {
        (self.on_line)(&line);
        self.report.add(&line);
        let shown = (!line.rel.is_empty() && line.action != Action::Ignored).then(|| {
            (
                line.rel.clone(),
                line.size.unwrap_or(0),
                line.action.label(),
            )
        });
        self.in_order.done(index, shown, self.report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A check that, the first time, waits until the file `wait_for` has started: it can only
    /// end if files go on starting while it runs.
    struct WaitsForLaterFiles {
        started: tokio::sync::Notify,
        checks: Mutex<Vec<usize>>,
        pending: AtomicUsize,
    }

    impl Settle for WaitsForLaterFiles {
        fn settle<'a>(&'a self, lines: &'a mut [FileLine]) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let first = self.checks.lock().unwrap().is_empty();
                self.checks.lock().unwrap().push(lines.len());
                if first {
                    tokio::time::timeout(
                        std::time::Duration::from_secs(60),
                        self.started.notified(),
                    )
                    .await
                    .expect("no later file started while the first batch was being checked");
                }
                self.pending.fetch_sub(lines.len(), Ordering::SeqCst);
                for l in lines.iter_mut() {
                    l.read_back = None;
                    l.reason = Some("checked".into());
                }
            })
        }
    }

    #[tokio::test]
    async fn files_go_on_while_a_batch_is_checked() {
        const FILES: usize = 2 * HELD + 500;
        let wait_for = format!("f{:05}", HELD + 300);
        let check = WaitsForLaterFiles {
            started: tokio::sync::Notify::new(),
            checks: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
        };
        let walk = futures::stream::iter((0..FILES).map(|i| {
            Ok(Found::File(FileEntry {
                path: format!("f{i:05}").into(),
                rel: format!("f{i:05}"),
                size: 1,
                mtime_ns: 0,
                dev: 0,
                ino: i as u64,
            }))
        }));
        let lines = Mutex::new(Vec::new());
        let on_line = |l: &FileLine| lines.lock().unwrap().push(l.clone());
        let mut report = TreeReport::new(&crate::vocab::ObjectUrl::parse("s3://bkt/p/").unwrap());
        let stop = CancellationToken::new();
        let (check, wait_for) = (&check, &wait_for);
        let fatal = run_settled(
            walk,
            8,
            &stop,
            &crate::progress::Silent,
            &mut report,
            &on_line,
            check,
            |entry| async move {
                if &entry.rel == wait_for {
                    check.started.notify_one();
                }
                check.pending.fetch_add(1, Ordering::SeqCst);
                // Never more lines wait than the batch being checked and the next one.
                assert!(check.pending.load(Ordering::SeqCst) <= 2 * HELD + 8);
                tokio::task::yield_now().await;
                Ok(FileLine {
                    rel: entry.rel.clone(),
                    action: Action::Uploaded,
                    read_back: Some("md5".into()),
                    ..FileLine::default()
                })
            },
        )
        .await;
        assert!(fatal.is_none());
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), FILES, "every line handed on once");
        assert!(lines.iter().all(|l| l.reason.as_deref() == Some("checked")));
        assert_eq!(report.uploaded, FILES as u64);
        let checks = check.checks.lock().unwrap().clone();
        assert_eq!(
            checks.iter().sum::<usize>(),
            FILES,
            "every line checked once: {checks:?}"
        );
        assert!(checks.iter().all(|&n| n <= HELD), "{checks:?}");
        assert!(checks.len() >= 3, "{checks:?}");
    }
}
