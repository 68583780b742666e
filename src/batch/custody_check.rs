//! A local folder checked against its own `ascmhl/` history, after `tally download` of a prefix
//! and in `tally verify DIR`: every file hashed in the formats its history holds and compared
//! with the newest value, files the history does not list counted as new (in the summary's
//! `mhl.new`), files it lists that the folder lacks reported as missing. A second read of each
//! file (the download's own checks read the bytes as they arrive). After a download with `--mhl`,
//! a generation recording the folder is added to its `ascmhl/`; otherwise nothing is written.

use std::path::Path;

use futures::StreamExt as _;

use crate::batch::custody::Session;
use crate::batch::report::{Action, FileLine, TreeReport};
use crate::error::Error;
use crate::exec::blocking;
use crate::tree::{Filters, Found, WalkOptions};
use crate::vocab::ObjectUrl;

/// Files hashed at once.
const IN_FLIGHT: usize = 4;

/// Checks the folder `root` against its history, when it has one: each finding goes to
/// `on_line` and into `report` (exit 1 for a mismatch or a missing file), the counts into
/// `report.mhl`. Does nothing without a history.
///
/// `generation`: after a download with `--mhl`, the source prefix and the state directory: a
/// generation recording the files as they are here is added to `root/ascmhl/` (a history is
/// started when the tree came without one).
pub(crate) async fn check_folder(
    root: &Path,
    generation: Option<(&ObjectUrl, &Path)>,
    report: &mut TreeReport,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<(), Error> {
    let session = {
        let root = root.to_owned();
        let generation = generation.map(|(u, d)| (u.clone(), d.to_owned()));
        blocking(move || match generation {
            Some((source, state)) => Session::open_download(&root, &source, &state),
            None => Session::for_check(&root),
        })
        .await?
    };
    let Some(session) = session else {
        return Ok(());
    };
    let walk = {
        let root = root.to_owned();
        blocking(move || crate::tree::walk(&root, WalkOptions::default())).await?
    };
    let session = &session;
    let mut checks = Box::pin(
        walk.filter_map(|found| async move {
            match found {
                Found::File(entry) => Some(entry),
                Found::Skipped(_) => None,
            }
        })
        .map(|entry| async move {
            let checked = session.check(&entry).await;
            let line = session.refusal(&checked, &entry, &entry.rel).map(|mut l| {
                // The download or verify already happened: only the history's verdict is added.
                l.reason = l.reason.map(|r| r.replace(": not uploaded", ""));
                l.key = None;
                l
            });
            // The file is here (downloaded, or compared with its object): recorded as present.
            let mut scratch = FileLine {
                action: Action::Downloaded,
                ..FileLine::default()
            };
            session.record(&entry, checked, &mut scratch);
            line
        })
        .buffer_unordered(IN_FLIGHT),
    );
    while let Some(line) = checks.next().await {
        let Some(line) = line else { continue };
        on_line(&line);
        report.failed += 1;
        report.exit_code = report.exit_code.max(line.exit_code);
    }
    drop(checks);
    let (mut lines, mut summary) = session.missing(&Filters::default(), "");
    session.write_generation(&mut lines, &mut summary).await;
    for line in &lines {
        on_line(line);
        report.failed += 1;
        report.exit_code = report.exit_code.max(line.exit_code);
    }
    report.mhl = Some(summary);
    Ok(())
}

/// A tree file's ASC MHL check, as its upload makes it (`upload::DigestCheck`): the history's (or
/// the new generation's) formats computed in the upload's own read, the values compared before the
/// object is completed.
impl crate::upload::DigestCheck for crate::mhl::Expected {
    fn formats(&self) -> &[crate::hash::FileHashFormat] {
        &self.formats
    }

    fn check(&self, hashes: &crate::hash::FileHashes) -> Result<(), Error> {
        crate::mhl::Expected::check(self, hashes).map_err(Error::from)
    }
}
