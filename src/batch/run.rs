//! The one loop every tree command drives: the walk's entries in, at most `concurrency` files in
//! progress, each outcome handed on as it finishes and counted, the summary fed in key order; an
//! error that stops everything cancels the rest (files in flight end as they do on Ctrl-C).
//!
//! A check made for many files at once ([`Settle`]: a tree upload's read-back by listing) holds
//! the lines that wait for it, at most [`HELD`], outside the files in progress: a line counts
//! and is handed on only once its check is done.

use std::future::Future;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, InOrder, TreeReport, skipped_entry};
use crate::error::Error;
use crate::progress::Progress;
use crate::tree::{FileEntry, Found};

/// Lines held for a [`Settle`] check at most: the check runs when this many wait (a listing page
/// holds 1,000 keys), and once more at the end.
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
    while let Some((index, outcome)) = outcomes.next().await {
        sink.outcome(index, outcome).await;
    }
    drop(outcomes);
    sink.flush().await;
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

/// Lines waiting for `settle`, and apart their walk indexes: the lines are handed to it as they
/// are (pairs split into two vectors at each check held a copy of every line: 0.3 MB at 1,000).
#[derive(Default)]
struct Held {
    indexes: Vec<u64>,
    lines: Vec<FileLine>,
}

type Outcome = Option<Result<FileLine, (FileLine, Error)>>;

impl Sink<'_> {
    async fn outcome(&mut self, index: u64, outcome: Outcome) {
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
            if self.held.lines.len() >= HELD {
                self.flush().await;
            }
            return;
        }
        self.line(index, line);
    }

    fn not_started(&mut self, index: u64) {
        self.report.not_started += 1;
        self.in_order.done(index, None, self.report);
    }

    /// Settles the held lines and hands them on.
    async fn flush(&mut self) {
        let Some(settle) = self.settle else { return };
        if self.held.lines.is_empty() {
            return;
        }
        let Held { indexes, mut lines } = std::mem::take(&mut self.held);
        settle.settle(&mut lines).await;
        for (index, line) in indexes.into_iter().zip(lines) {
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
