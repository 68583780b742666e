//! What a tree command reports: one [`FileLine`] per entry as it finishes (a JSON line with
//! `--json`), and the [`TreeReport`] at the end, with files and numbered sequences in key order.

use serde::Serialize;

use crate::error::{EXIT_ERROR, EXIT_OK, Error};
use crate::s3::S3ErrorKind;

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Sent (or an interrupted upload of it finished), and checked.
    Uploaded,
    /// Fetched (`download`) and checked as the report says.
    Downloaded,
    /// Already in S3, proven identical: nothing sent.
    Skipped,
    /// Not in S3 as it should be: the reason says why.
    #[default]
    Failed,
    /// Not a file tally takes (a socket, a FIFO, a device, a symlink not followed, a loop).
    Ignored,
    /// Compared with its object: the same bytes (`verify`).
    Identical,
    /// Compared with its object: different, or no object (`verify`).
    Differs,
    /// `--dryrun`: would be sent (uploaded or downloaded).
    WouldSend,
    /// `--dryrun`: would be compared first, and sent only if not proven identical.
    WouldCompare,
}

impl Action {
    /// The word the summary uses.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Action::Uploaded => "uploaded",
            Action::Downloaded => "downloaded",
            Action::Skipped => "skipped (proven identical)",
            Action::Failed => "FAILED",
            Action::Ignored => "ignored",
            Action::Identical => "identical",
            Action::Differs => "DIFFERS",
            Action::WouldSend => "would be sent",
            Action::WouldCompare => "would be compared first",
        }
    }
}

/// One entry's outcome: a JSON line with `--json`.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct FileLine {
    /// The local path.
    pub path: String,
    /// Relative to the tree's root, `/`-separated (empty when the name could not be used).
    pub rel: String,
    /// The object's key.
    pub key: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// What happened.
    pub action: Action,
    /// Why: what was compared for a skip, why it was sent, or what went wrong.
    pub reason: Option<String>,
    /// The object's checksum as S3 reports it (`ALGORITHM value`).
    pub checksum: Option<String>,
    /// The object's ETag.
    pub etag: Option<String>,
    /// The object's version id, on versioned buckets.
    pub version_id: Option<String>,
    /// The ASC MHL check: `verified`, `new`, `mismatch`, `missing`, `unreadable` (trees with
    /// an `ascmhl/` history, or `--mhl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mhl: Option<String>,
    /// The whole file's hashes (`--file-hash`), when this run read it.
    pub file_hashes: crate::hash::FileHashes,
    /// What proved the object is the file, when that is not the reason (an upload's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The exit code this entry asks for (0 for uploaded, skipped and ignored).
    #[serde(skip)]
    pub exit_code: i32,
    /// The file's MD5 (hex) while its read-back waits for a listing of many files (a tree
    /// upload's file whose PutObject reply proved it): the line counts once the listing is read.
    #[serde(skip)]
    pub read_back: Option<String>,
}

/// The whole tree's outcome: the last JSON line with `--json`.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct TreeReport {
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// Files found.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files uploaded.
    pub uploaded: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files downloaded (`download`).
    pub downloaded: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Files skipped, proven identical.
    pub skipped: u64,
    /// Their bytes.
    pub skipped_bytes: u64,
    /// Files compared and found identical (`verify`).
    pub identical: u64,
    /// Files that differ from their objects, or have none (`verify`).
    pub differs: u64,
    /// Entries that failed (files not uploaded or not proven, unusable names, unreadable files).
    pub failed: u64,
    /// Entries ignored with a warning (sockets, FIFOs, devices, symlinks not followed, loops).
    pub ignored: u64,
    /// Files not started because the run stopped first (Ctrl-C, or an error that dooms every
    /// file), or stopped by it before anything of them was kept: neither sent nor failed; the
    /// same command again does them.
    pub not_started: u64,
    /// `--dryrun`: files that would be sent, and their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_send: Option<u64>,
    /// Their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_send_bytes: Option<u64>,
    /// `--dryrun`: files that would be compared first (sent only if not proven identical).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_compare: Option<u64>,
    /// Their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_compare_bytes: Option<u64>,
    /// Whether the walk reached every entry (not interrupted or stopped).
    pub complete: bool,
    /// Seconds spent.
    pub seconds: f64,
    /// Bytes uploaded (or compared) per second, MiB/s.
    pub mib_per_s: f64,
    /// 0 only when every file is in S3 and proven; 1 for an integrity mismatch; 2 otherwise.
    pub exit_code: i32,
    /// What the ASC MHL check found, and the generation written (`--mhl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mhl: Option<crate::batch::custody::Summary>,
    /// The summary's lines: files and numbered sequences in key order (text output only).
    #[serde(skip)]
    pub groups: Vec<String>,
    /// Summary lines left out beyond [`MAX_GROUP_LINES`].
    #[serde(skip)]
    pub groups_omitted: u64,
}

/// Lines of files and sequences the text summary prints at most (`--json` has every file).
pub(crate) const MAX_GROUP_LINES: usize = 200;

/// Outcomes kept waiting for an earlier one at most (about 100 bytes each).
pub(crate) const MAX_WAITING: usize = 4096;

/// Feeds the sequence grouper in walk order from outcomes that finish in any order: an outcome
/// waits here only until every entry the walk found before it has finished (a small record each).
#[derive(Default)]
pub(crate) struct InOrder {
    next: u64,
    waiting: std::collections::BTreeMap<u64, Option<(String, u64, &'static str)>>,
    grouper: crate::tree::Grouper<&'static str>,
}

impl InOrder {
    /// Entry `index` of the walk finished; `item` is what the summary shows of it (None: nothing).
    pub(crate) fn done(
        &mut self,
        index: u64,
        item: Option<(String, u64, &'static str)>,
        into: &mut TreeReport,
    ) {
        if index < self.next {
            // Its place was given up (see below): it joins the summary where it is.
            if let Some((rel, size, label)) = item {
                let closed = self.grouper.push(&rel, size, label);
                Self::emit(closed, into);
            }
            return;
        }
        self.waiting.insert(index, item);
        loop {
            let next = match self.waiting.first_key_value() {
                Some((&i, _)) if i == self.next => i,
                // Too many finished behind one still in progress (a big file among many small
                // ones): give up the gap's place, so the memory stays bounded.
                Some((&i, _)) if self.waiting.len() > MAX_WAITING => i,
                _ => break,
            };
            let item = self.waiting.remove(&next).flatten();
            self.next = next + 1;
            if let Some((rel, size, label)) = item {
                let closed = self.grouper.push(&rel, size, label);
                Self::emit(closed, into);
            }
        }
    }

    /// Everything is done: the open sequences close.
    pub(crate) fn finish(mut self, into: &mut TreeReport) {
        // Entries that never finished (a stop) leave gaps: what finished still counts.
        let rest: Vec<_> = std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .collect();
        for (rel, size, label) in rest {
            let closed = self.grouper.push(&rel, size, label);
            Self::emit(closed, into);
        }
        let closed = self.grouper.finish();
        Self::emit(closed, into);
    }

    fn emit(items: Vec<crate::tree::Item<&'static str>>, into: &mut TreeReport) {
        for item in items {
            if into.groups.len() < MAX_GROUP_LINES {
                into.groups
                    .push(crate::printable::one_line(&item.to_string()).into_owned());
            } else {
                into.groups_omitted += 1;
            }
        }
    }
}

impl FileLine {
    /// The line of `entry`, whose object is `key`, before anything happened to it (a failure until
    /// the command says otherwise).
    pub(crate) fn for_entry(entry: &crate::tree::FileEntry, key: &str) -> FileLine {
        FileLine {
            path: entry.path.display().to_string(),
            rel: entry.rel.clone(),
            key: Some(key.to_owned()),
            size: Some(entry.size),
            ..FileLine::default()
        }
    }
}

impl TreeReport {
    /// An empty report for a tree under `prefix`.
    pub(crate) fn new(prefix: &crate::vocab::ObjectUrl) -> TreeReport {
        TreeReport {
            bucket: prefix.bucket.clone(),
            prefix: prefix.key.clone(),
            ..TreeReport::default()
        }
    }

    /// Ends the report of a run that started at `started` and moved `bytes`: the error that stopped
    /// it, if any, else the report (exit 2 at least when Ctrl-C / SIGTERM stopped it).
    pub(crate) fn end(
        mut self,
        started: std::time::Instant,
        bytes: u64,
        fatal: Option<Error>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<TreeReport, Error> {
        if let Some(e) = fatal {
            return Err(e);
        }
        self.seconds = started.elapsed().as_secs_f64();
        self.mib_per_s = bytes as f64 / (1024.0 * 1024.0) / self.seconds.max(1e-9);
        if cancel.is_cancelled() {
            self.exit_code = self.exit_code.max(EXIT_ERROR);
        }
        Ok(self)
    }

    /// Counts `line`.
    pub(crate) fn add(&mut self, line: &FileLine) {
        let size = line.size.unwrap_or(0);
        match line.action {
            Action::Uploaded => {
                self.files += 1;
                self.bytes += size;
                self.uploaded += 1;
                self.uploaded_bytes += size;
            }
            Action::Downloaded => {
                self.files += 1;
                self.bytes += size;
                self.downloaded += 1;
                self.downloaded_bytes += size;
            }
            Action::Skipped => {
                self.files += 1;
                self.bytes += size;
                self.skipped += 1;
                self.skipped_bytes += size;
            }
            Action::Failed => {
                self.files += u64::from(line.size.is_some());
                self.bytes += size;
                self.failed += 1;
            }
            Action::Identical => {
                self.files += 1;
                self.bytes += size;
                self.identical += 1;
            }
            Action::Differs => {
                self.files += 1;
                self.bytes += size;
                self.differs += 1;
            }
            Action::Ignored => self.ignored += 1,
            Action::WouldSend => {
                self.files += 1;
                self.bytes += size;
                *self.would_send.get_or_insert(0) += 1;
                *self.would_send_bytes.get_or_insert(0) += size;
            }
            Action::WouldCompare => {
                self.files += 1;
                self.bytes += size;
                *self.would_compare.get_or_insert(0) += 1;
                *self.would_compare_bytes.get_or_insert(0) += size;
            }
        }
        self.exit_code = self.exit_code.max(line.exit_code);
    }
}

/// Errors after which no other file can succeed either: the run stops. Access denied counts: the
/// files of a tree share a bucket and a prefix, and a HEAD's 403 (no body) cannot tell a refused
/// signature from a policy.
pub(crate) fn stops_everything(e: &Error) -> bool {
    if matches!(e, Error::Manifest { .. } | Error::Config(_)) {
        return true;
    }
    let kind = e.s3_cause().map(|s| (s.kind, s.code.as_deref()));
    matches!(
        kind,
        Some((
            S3ErrorKind::Credentials
                | S3ErrorKind::AccessDenied
                | S3ErrorKind::WrongRegion
                | S3ErrorKind::Unreachable,
            _
        )) | Some((S3ErrorKind::NotFound, Some("NoSuchBucket")))
    )
}

/// The line for an entry the walk did not hand over as a file.
pub(crate) fn skipped_entry(skip: &crate::tree::Skip) -> FileLine {
    let failure = skip.reason.is_failure();
    FileLine {
        path: skip.path.display().to_string(),
        rel: String::new(),
        key: None,
        size: None,
        action: if failure {
            Action::Failed
        } else {
            Action::Ignored
        },
        reason: Some(skip.reason.to_string()),
        checksum: None,
        etag: None,
        version_id: None,
        mhl: None,
        file_hashes: Default::default(),
        proof: None,
        exit_code: if failure { EXIT_ERROR } else { EXIT_OK },
        read_back: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Option<(String, u64, &'static str)> {
        Some((format!("shot.{i:04}.dpx"), 10, "uploaded"))
    }

    #[test]
    fn outcomes_finishing_out_of_order_group_as_in_key_order() {
        let mut report = TreeReport::default();
        let mut in_order = InOrder::default();
        // Finish order 3, 1, 0, 2, 4 (and a non-shown entry, 5).
        for i in [3, 1, 0, 2, 4] {
            in_order.done(i, frame(i), &mut report);
        }
        in_order.done(5, None, &mut report);
        in_order.finish(&mut report);
        assert_eq!(
            report.groups,
            ["shot.[0000-0004].dpx  5 files  50 B  uploaded"]
        );
    }

    #[test]
    fn the_wait_for_a_slow_entry_is_bounded() {
        let mut report = TreeReport::default();
        let mut in_order = InOrder::default();
        // Entry 0 is slow; everything after it finishes first.
        let n = MAX_WAITING as u64 + 100;
        for i in 1..=n {
            in_order.done(i, frame(i), &mut report);
            assert!(in_order.waiting.len() <= MAX_WAITING, "at {i}");
        }
        in_order.done(0, frame(0), &mut report);
        in_order.finish(&mut report);
        let files: u64 = report
            .groups
            .iter()
            .map(|g| {
                if g.contains(" files ") {
                    g.split("  ")
                        .nth(1)
                        .unwrap()
                        .trim_end_matches(" files")
                        .replace(',', "")
                        .parse::<u64>()
                        .unwrap()
                } else {
                    1
                }
            })
            .sum();
        assert_eq!(
            files,
            n + 1,
            "every entry is in the summary: {:?}",
            report.groups
        );
    }
}
