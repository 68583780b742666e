//! The one loop every tree command drives: the walk's entries in, at most `concurrency` files in
//! progress, each outcome handed on as it finishes and counted, the summary fed in key order; an
//! error that stops everything cancels the rest (files in flight end as they do on Ctrl-C).

use std::future::Future;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, InOrder, TreeReport, skipped_entry};
use crate::error::Error;
use crate::progress::Progress;
use crate::tree::{FileEntry, Found};

/// Runs `per_file` on every file of `walk` (a directory's [`crate::tree::Walk`], or a download's
/// listing, whose error stops the run), `concurrency` at a time, into `report`. Returns the
/// error that stopped the run, if one did (after cancelling `stop` and draining what was in flight).
pub async fn run<F, Fut>(
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
    let per_file = &per_file;
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
    let mut fatal = None;
    let mut in_order = InOrder::default();
    while let Some((index, outcome)) = outcomes.next().await {
        let line = match outcome {
            None => {
                report.not_started += 1;
                in_order.done(index, None, report);
                continue;
            }
            // Stopped by the run's own stop before it kept anything: as good as not started.
            Some(Ok(line))
                if stop.is_cancelled()
                    && line.action == Action::Failed
                    && line.reason.as_deref() == Some("interrupted") =>
            {
                report.not_started += 1;
                in_order.done(index, None, report);
                continue;
            }
            Some(Ok(line)) => line,
            Some(Err((line, e))) => {
                // The run ends with this error, printed once, as the command's error; files in
                // flight that meet the same kind of error are counted, not printed again.
                if fatal.is_none() {
                    fatal = Some(e);
                    stop.cancel();
                    continue;
                }
                report.add(&line);
                in_order.done(index, None, report);
                continue;
            }
        };
        on_line(&line);
        report.add(&line);
        let shown = (!line.rel.is_empty() && line.action != Action::Ignored).then(|| {
            (
                line.rel.clone(),
                line.size.unwrap_or(0),
                line.action.label(),
            )
        });
        in_order.done(index, shown, report);
    }
    drop(outcomes);
    in_order.finish(report);
    progress.finish();
    report.complete = !stop.is_cancelled();
    fatal
}
