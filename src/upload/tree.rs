//! `tally upload DIR s3://BUCKET/PREFIX/`: every regular file under DIR, one scheduler, one budget.
//!
//! The walk ([`crate::tree::walk`]) streams entries in key order; each file becomes the key
//! PREFIX + its relative path and goes through [`upload_or_skip`]: resumed when an interrupted
//! upload of it is kept, skipped when the object is proven to be the file, uploaded otherwise. At
//! most `--concurrency` files are in progress at once and every request of every file holds one of
//! the engine's `--concurrency` slots, so small files go many at a time and big files' parts
//! interleave under one byte budget. What was proven goes into the tree's [`record`].
//!
//! Outcomes are handed to the caller as they finish (one JSON line per file with `--json`); the
//! summary keeps counts and the failures, never the whole tree.

pub mod record;

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ObjectUrl, UploadConfig};
use crate::engine::{Engine, Limits};
use crate::error::{EXIT_ERROR, EXIT_OK, Error, S3ErrorKind};
use crate::exec::blocking;
use crate::progress::Progress;
use crate::s3::{ObjectRead as _, S3Api};
use crate::tree::{FileEntry, Found, WalkOptions};

use self::record::{Proven, Record};
use super::{Sent, upload_or_skip};

/// A checked tree upload.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// The local directory.
    pub root: PathBuf,
    /// Bucket and key prefix (empty or ending in `/`).
    pub prefix: ObjectUrl,
    /// The settings every file is uploaded with (its source and target are replaced per file).
    pub base: UploadConfig,
    /// What the walk takes.
    pub walk: WalkOptions,
}

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Sent (or an interrupted upload of it finished), and checked.
    Uploaded,
    /// Already in S3, proven identical: nothing sent.
    Skipped,
    /// Not in S3 as it should be: the reason says why.
    Failed,
    /// Not a file tally uploads (a socket, a FIFO, a device, a symlink not followed, a loop).
    Ignored,
}

impl Action {
    /// The word the summary uses.
    pub fn label(self) -> &'static str {
        match self {
            Action::Uploaded => "uploaded",
            Action::Skipped => "skipped (proven identical)",
            Action::Failed => "FAILED",
            Action::Ignored => "ignored",
        }
    }
}

/// One entry's outcome: a JSON line with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct FileLine {
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
    /// The exit code this entry asks for (0 for uploaded, skipped and ignored).
    #[serde(skip)]
    pub exit_code: i32,
}

/// The whole tree's outcome: the last JSON line with `--json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TreeReport {
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
    /// Files skipped, proven identical.
    pub skipped: u64,
    /// Their bytes.
    pub skipped_bytes: u64,
    /// Entries that failed (files not uploaded or not proven, unusable names, unreadable files).
    pub failed: u64,
    /// Entries ignored with a warning (sockets, FIFOs, devices, symlinks not followed, loops).
    pub ignored: u64,
    /// Whether the walk reached every entry (not interrupted or stopped).
    pub complete: bool,
    /// Seconds spent.
    pub seconds: f64,
    /// Bytes uploaded per second, MiB/s.
    pub mib_per_s: f64,
    /// 0 only when every file is in S3 and proven; 1 for an integrity mismatch; 2 otherwise.
    pub exit_code: i32,
    /// The summary's lines: files and numbered sequences in key order (text output only).
    #[serde(skip)]
    pub groups: Vec<String>,
    /// Summary lines left out beyond [`MAX_GROUP_LINES`].
    #[serde(skip)]
    pub groups_omitted: u64,
}

/// Lines of files and sequences the text summary prints at most (`--json` has every file).
pub const MAX_GROUP_LINES: usize = 200;

/// Feeds the sequence grouper in walk order from outcomes that finish in any order: an outcome
/// waits here only until every entry the walk found before it has finished (a small record each).
#[derive(Default)]
pub struct InOrder {
    next: u64,
    waiting: std::collections::BTreeMap<u64, Option<(String, u64, &'static str)>>,
    grouper: crate::tree::Grouper<&'static str>,
}

impl InOrder {
    /// Entry `index` of the walk finished; `item` is what the summary shows of it (None: nothing).
    pub fn done(
        &mut self,
        index: u64,
        item: Option<(String, u64, &'static str)>,
        into: &mut TreeReport,
    ) {
        self.waiting.insert(index, item);
        while let Some(item) = self.waiting.remove(&self.next) {
            self.next += 1;
            if let Some((rel, size, label)) = item {
                let closed = self.grouper.push(&rel, size, label);
                Self::emit(closed, into);
            }
        }
    }

    /// Everything is done: the open sequences close.
    pub fn finish(mut self, into: &mut TreeReport) {
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
                into.groups.push(item.to_string());
            } else {
                into.groups_omitted += 1;
            }
        }
    }
}

impl TreeReport {
    fn add(&mut self, line: &FileLine) {
        let size = line.size.unwrap_or(0);
        match line.action {
            Action::Uploaded => {
                self.files += 1;
                self.bytes += size;
                self.uploaded += 1;
                self.uploaded_bytes += size;
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
            Action::Ignored => self.ignored += 1,
        }
        self.exit_code = self.exit_code.max(line.exit_code);
    }
}

/// Errors after which no other file can succeed either: the run stops.
fn stops_everything(e: &Error) -> bool {
    let kind = match e {
        Error::S3 { source, .. } => Some((source.kind, source.code.as_deref())),
        Error::UploadFailed { source, .. } => match source.as_ref() {
            Error::S3 { source, .. } => Some((source.kind, source.code.as_deref())),
            _ => None,
        },
        Error::Manifest { .. } | Error::Config(_) => return true,
        _ => None,
    };
    matches!(
        kind,
        Some((
            S3ErrorKind::Credentials | S3ErrorKind::WrongRegion | S3ErrorKind::Unreachable,
            _
        )) | Some((S3ErrorKind::NotFound, Some("NoSuchBucket")))
    )
}

/// Uploads the tree of `cfg`, handing each entry's outcome to `on_line` as it finishes.
///
/// Returns the summary; `Err` only when nothing can be done (the root cannot be read) or an error
/// stopped everything (credentials, a missing bucket, an unreachable endpoint): files finished before
/// it were reported through `on_line`, files in flight are kept for resuming.
pub async fn upload_tree<C: S3Api>(
    s3: &C,
    cfg: &TreeConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let engine = Engine::new(Limits::for_parts(cfg.base.concurrency, cfg.base.part_size));
    let record = {
        let root = std::path::absolute(&cfg.root).map_err(|e| Error::Source {
            path: cfg.root.clone(),
            why: format!("{e}"),
        })?;
        let dir = cfg.base.resume.state_dir()?;
        let path = record::path_for(
            &dir,
            &root,
            &s3.endpoint_label(),
            &cfg.prefix.bucket,
            &cfg.prefix.key,
        );
        let trust = cfg.base.resume.trust_manifest;
        blocking(move || Record::open(&path, trust)).await?
    };
    let record = std::sync::Arc::new(record);
    let walk = {
        let (root, opts) = (cfg.root.clone(), cfg.walk.clone());
        blocking(move || crate::tree::walk(&root, opts)).await?
    };
    let stop = cancel.child_token();
    let mut report = TreeReport {
        bucket: cfg.prefix.bucket.clone(),
        prefix: cfg.prefix.key.clone(),
        ..TreeReport::default()
    };
    let (engine, rec, stop_ref) = (&engine, &*record, &stop);
    let mut outcomes = walk
        .inspect(|found| {
            if let Found::File(entry) = found {
                progress.found(entry.size);
            }
        })
        .enumerate()
        .map(|(index, found)| async move {
            let line = match found {
                Found::File(entry) => {
                    let size = entry.size;
                    let line = one_file(engine, s3, cfg, entry, rec, progress, stop_ref).await;
                    progress.file_done(
                        size,
                        line.as_ref().is_ok_and(|l| l.action == Action::Skipped),
                    );
                    line
                }
                Found::Skipped(skip) => Ok(skipped_entry(&skip)),
            };
            (index as u64, line)
        })
        .buffer_unordered(cfg.base.concurrency);
    let mut fatal = None;
    let mut in_order = InOrder::default();
    while let Some((index, outcome)) = outcomes.next().await {
        let line = match outcome {
            Ok(line) => line,
            Err((line, e)) => {
                if fatal.is_none() {
                    fatal = Some(e);
                    stop.cancel();
                }
                line
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
        in_order.done(index, shown, &mut report);
    }
    drop(outcomes);
    in_order.finish(&mut report);
    progress.finish();
    report.complete = !stop.is_cancelled();
    if let Ok(record) = std::sync::Arc::try_unwrap(record) {
        let complete = report.complete;
        if let Err(e) = blocking(move || record.close(complete)).await {
            tracing::warn!("{e}");
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mib_per_s = report.uploaded_bytes as f64 / (1024.0 * 1024.0) / report.seconds.max(1e-9);
    if let Some(e) = fatal {
        return Err(e);
    }
    if cancel.is_cancelled() {
        report.exit_code = report.exit_code.max(EXIT_ERROR);
    }
    Ok(report)
}

/// The line for an entry the walk did not hand over as a file.
fn skipped_entry(skip: &crate::tree::Skip) -> FileLine {
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
        exit_code: if failure { EXIT_ERROR } else { EXIT_OK },
    }
}

/// One file: skipped on the record's word (`--trust-manifest`, object unchanged), else
/// [`upload_or_skip`]. `Err` carries an error that stops the whole run.
async fn one_file<C: S3Api>(
    engine: &Engine,
    s3: &C,
    cfg: &TreeConfig,
    entry: FileEntry,
    record: &Record,
    progress: &dyn Progress,
    stop: &CancellationToken,
) -> Result<FileLine, (FileLine, Error)> {
    let target = ObjectUrl {
        bucket: cfg.prefix.bucket.clone(),
        key: format!("{}{}", cfg.prefix.key, entry.rel),
    };
    let mut line = FileLine {
        path: entry.path.display().to_string(),
        rel: entry.rel.clone(),
        key: Some(target.key.clone()),
        size: Some(entry.size),
        action: Action::Failed,
        reason: None,
        checksum: None,
        etag: None,
        version_id: None,
        exit_code: EXIT_OK,
    };
    let mut proven = Proven {
        rel: entry.rel.clone(),
        size: entry.size,
        mtime_ns: entry.mtime_ns,
        dev: entry.dev,
        ino: entry.ino,
        etag: None,
        version_id: None,
        checksum: None,
    };
    if let Some(known) = record.lookup(&entry.rel).filter(|k| k.same_file(&proven))
        && let Some(why) = still_there(engine, s3, &target, known).await
    {
        line.action = Action::Skipped;
        line.reason = Some(why);
        line.checksum = known.checksum.clone();
        line.etag = known.etag.clone();
        line.version_id = known.version_id.clone();
        record.add(known);
        return Ok(line);
    }
    let mut fcfg = cfg.base.clone();
    fcfg.source = entry.path.clone();
    fcfg.target = target;
    let file_progress = FileProgress(progress);
    match upload_or_skip(engine, s3, &fcfg, &file_progress, stop).await {
        Ok(Sent::Skipped { facts, proof }) => {
            line.action = Action::Skipped;
            line.reason = Some(format!("proven identical: {proof}"));
            line.checksum = facts
                .checksum
                .as_ref()
                .map(|c| format!("{} {}", c.algorithm, c.value));
            line.etag = facts.etag.as_ref().map(|e| e.as_str().to_owned());
            line.version_id = facts.version_id.clone();
        }
        Ok(Sent::Uploaded { report, why }) => {
            line.action = Action::Uploaded;
            line.reason = Some(why);
            line.checksum = Some(format!(
                "{} {}",
                report.checksum.algorithm, report.checksum.value
            ));
            line.etag = report.stored_etag.clone();
            line.version_id = report.version_id.clone();
        }
        Err(e) => {
            line.reason = Some(crate::redact::redact(&e.to_string()));
            line.exit_code = e.exit_code();
            if stops_everything(&e) {
                return Err((line, e));
            }
            return Ok(line);
        }
    }
    proven.etag = line.etag.clone();
    proven.version_id = line.version_id.clone();
    proven.checksum = line.checksum.clone();
    record.add(&proven);
    Ok(line)
}

/// With `--trust-manifest`: whether the object the record proved is still there, unchanged (one
/// HEAD: same size and ETag, and version id where recorded). Returns the reason for the report.
async fn still_there<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    known: &Proven,
) -> Option<String> {
    let head = engine.limit(s3).head_object(obj, None).await.ok()?;
    let same = head.size == known.size
        && known.etag.is_some()
        && head.etag.as_ref().map(|e| e.as_str()) == known.etag.as_deref()
        && (known.version_id.is_none() || head.version_id == known.version_id);
    same.then(|| {
        "trusted the record (--trust-manifest): file unchanged in size, mtime and inode; object ETag unchanged"
            .to_owned()
    })
}

/// A file's progress inside the tree's: parts count toward the tree's bytes; a file's start and
/// end do not redraw anything, and its notes (an upload started, resumed) go to the log (`-v`):
/// each file's outcome and reason are in its report line.
struct FileProgress<'a>(&'a dyn Progress);

impl Progress for FileProgress<'_> {
    fn start(&self, _bytes: u64, _parts: u32) {}
    fn part_done(&self, bytes: u64) {
        self.0.part_done(bytes);
    }
    fn finish(&self) {}
    fn note(&self, msg: &str) {
        tracing::info!("{msg}");
    }
}
