//! ASC MHL in a tree upload.
//!
//! **In** (whenever the tree has `ascmhl/`): each file is hashed in every format its history holds
//! and compared with the newest value per format, in the upload's own read: the formats ride
//! with the part checksums (`UploadConfig::mhl_check`) and the comparison comes before
//! CompleteMultipartUpload, or before a single PutObject is sent. A file that does not match is
//! not completed (its multipart upload is aborted, its manifest removed; exit 1, the line names
//! both values); a file the history does not list is reported as new; a file the history lists
//! that the tree lacks is reported as missing (exit 1: the folder is not what its history says;
//! files left out by `--include`/`--exclude` are not missing). A file the upload does not read
//! (skipped: its object is proven identical, or trusted from the record) is read for the check
//! alone.
//!
//! **Out** (`--mhl`): a new generation, process `transfer`, location the `s3://` prefix, one
//! `<hash>` per file that is in S3 (uploaded or proven identical) or that failed its check, with
//! the S3 facts in `<metadata>`; streamed to the state directory while files finish, then put in
//! `ascmhl/` with the chain updated. Where the source folder cannot be written (a read-only card),
//! the history goes to the state directory only. Either way `ascmhl/` (generation and chain) is
//! uploaded under the prefix. Nothing is written when the run stopped before the end.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action as LineAction, FileLine};
use crate::config::UploadConfig;
use crate::engine::Engine;
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, Error};
use crate::exec::blocking;
use crate::mhl::generation::{self, Action, GenerationWriter, HashEntry, Header, S3Facts};
use crate::mhl::hashes::{FileHashes, HashFormat, file_hashes};
use crate::mhl::history::{CHAIN, ChainEntry, FOLDER, History};
use crate::mhl::ignore::{Ignore, default_patterns};
use crate::mhl::{Expected, MhlError};
use crate::progress::Progress;
use crate::s3::S3Api;
use crate::tree::FileEntry;
use crate::vocab::ObjectUrl;

/// Formats recorded for new files when there is no history to follow.
pub const DEFAULT_FORMATS: [HashFormat; 1] = [HashFormat::Xxh64];

/// What the ASC MHL side of a tree upload did: the summary's `mhl` part.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Whether the tree had a history.
    pub history: bool,
    /// Files whose hashes equal the history's.
    pub verified: u64,
    /// Files the history does not list.
    pub new: u64,
    /// Files whose hashes differ from the history's (not uploaded).
    pub mismatched: u64,
    /// Files the history lists that the tree lacks.
    pub missing: u64,
    /// The generation written (`--mhl`), its file name.
    pub generation: Option<String>,
    /// Where it was written locally (the source's `ascmhl/`, or the state directory).
    pub written_to: Option<String>,
    /// Why the generation went to the state directory instead of the source, when it did.
    pub source_read_only: Option<String>,
    /// The keys the generation and the chain were uploaded to.
    pub uploaded: Vec<String>,
}

/// What the check of one file found.
#[derive(Debug)]
pub enum Checked {
    /// Not subject to the history (`ascmhl/` itself, or an ignore pattern).
    Outside,
    /// Not in the history; hashed when a generation is written.
    New(Option<(FileHashes, SystemTime)>),
    /// Every format the history holds matches.
    Verified(FileHashes, SystemTime),
    /// At least one format differs: (format, recorded, actual, generation file).
    Mismatch(FileHashes, SystemTime, Vec<crate::mhl::Difference>),
    /// The file could not be read for the check.
    Unreadable(String),
    /// Not judged: the upload that was to read it failed first (its line says why).
    Unchecked,
}

/// The ASC MHL side of one tree upload.
pub struct Session {
    root: PathBuf,
    history: Option<History>,
    ignore: Ignore,
    new_formats: Vec<HashFormat>,
    writer: Option<Mutex<Option<GenerationWriter>>>,
    /// The root folder's name and the run's start: the generation's file name.
    root_name: String,
    created: SystemTime,
    bucket: String,
    state_dir: PathBuf,
    summary: Mutex<Summary>,
}

impl Session {
    /// Opens the session for the tree at `root` uploaded to `prefix`: loads and checks the
    /// history; with `write` (`--mhl`) starts the new generation in the state directory.
    /// `None` when there is nothing to do (no history, no `--mhl`). Blocking.
    pub fn open(
        root: &Path,
        prefix: &ObjectUrl,
        write: bool,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let location = format!("s3://{}/{}", prefix.bucket, prefix.key);
        Session::start(
            root,
            prefix,
            location,
            prefix.bucket.clone(),
            write,
            state_dir,
        )
    }

    /// The session of a download of `source` into the folder `root` with `--mhl`: every file
    /// checked against the history that came with it, and a generation (location: the folder)
    /// written into `root/ascmhl/`. Blocking.
    pub fn open_download(
        root: &Path,
        source: &ObjectUrl,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let location = abs.display().to_string();
        Session::start(root, source, location, String::new(), true, state_dir)
    }

    fn start(
        root: &Path,
        prefix: &ObjectUrl,
        location: String,
        bucket: String,
        write: bool,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let history = History::load(root)?;
        if history.is_none() && !write {
            return Ok(None);
        }
        refuse_nested(root)?;
        let abs = std::path::absolute(root).map_err(|e| Error::Source {
            path: root.to_owned(),
            why: e.to_string(),
        })?;
        // `..` (or a path ending in it) names the folder it resolves to, as the reference tool's
        // `basename(normpath(root))` does.
        let named = match abs.file_name() {
            Some(_) => abs.clone(),
            None => std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone()),
        };
        let root_name = named
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("root")
            .to_owned();
        let ignore_patterns = match &history {
            Some(h) if !h.ignore.is_empty() => h.ignore.clone(),
            _ => default_patterns(),
        };
        // What the new generation carries on: the newest generation file's patterns, as the
        // reference tool's `create` does (docs/mhl.md).
        let carried = match &history {
            Some(h) if !h.carried_ignore.is_empty() => h.carried_ignore.clone(),
            _ => default_patterns(),
        };
        let new_formats = match &history {
            Some(h) if !h.formats.is_empty() => h.formats.clone(),
            _ => DEFAULT_FORMATS.to_vec(),
        };
        let number = history.as_ref().map_or(1, History::next_number);
        let created = SystemTime::now();
        let dir = work_dir(state_dir, &abs, prefix);
        let writer = if write {
            std::fs::create_dir_all(&dir).map_err(|e| write_error(&dir, &e))?;
            // Unique to this run: two runs of one tree never share it (the final name is chosen
            // under the history's lock, see `place`).
            let nanos = created
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = dir.join(format!(
                "{}.{}-{nanos}.part",
                generation::file_name(number, &root_name, created),
                std::process::id()
            ));
            let header = Header {
                created,
                hostname: gethostname::gethostname().to_string_lossy().into_owned(),
                tool_version: env!("CARGO_PKG_VERSION").to_owned(),
                location,
                ignore: carried,
            };
            let w = GenerationWriter::create(&path, &header).map_err(|e| write_error(&path, &e))?;
            Some(Mutex::new(Some(w)))
        } else {
            None
        };
        let summary = Summary {
            history: history.is_some(),
            ..Summary::default()
        };
        Ok(Some(Session {
            root: abs,
            history,
            ignore: Ignore::new(&ignore_patterns),
            new_formats,
            writer,
            root_name,
            created,
            bucket,
            state_dir: dir,
            summary: Mutex::new(summary),
        }))
    }

    /// A session that only checks the folder `root` against its history (no generation):
    /// `None` when it has none. Blocking.
    pub fn for_check(root: &Path) -> Result<Option<Session>, Error> {
        let Some(history) = History::load(root)? else {
            return Ok(None);
        };
        refuse_nested(root)?;
        let patterns = if history.ignore.is_empty() {
            default_patterns()
        } else {
            history.ignore.clone()
        };
        Ok(Some(Session {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_owned()),
            ignore: Ignore::new(&patterns),
            new_formats: history.formats.clone(),
            history: Some(history),
            writer: None,
            root_name: String::new(),
            created: UNIX_EPOCH,
            bucket: String::new(),
            state_dir: PathBuf::new(),
            summary: Mutex::new(Summary {
                history: true,
                ..Summary::default()
            }),
        }))
    }

    /// What the check of `entry` needs, without reading it: `None` when there is nothing to
    /// compute (outside the history, or new with no generation to write), else the formats to
    /// hash it in and the values its history recorded (`Expected`). Marks the file as seen.
    ///
    /// A file the history lists is checked whatever the ignore patterns say.
    pub fn plan(&self, entry: &FileEntry) -> Result<Expected, Checked> {
        if entry.rel.starts_with(&format!("{FOLDER}/")) {
            return Err(Checked::Outside);
        }
        let known = self.history.as_ref().and_then(|h| h.known(&entry.rel));
        let unsealed = self
            .history
            .as_ref()
            .and_then(|h| h.unsealed_original(&entry.rel));
        if known.is_none() && unsealed.is_none() && self.ignore.ignores(&entry.rel) {
            return Err(Checked::Outside);
        }
        if let Some(k) = known {
            k.mark_seen();
        }
        let history = self.history.as_ref();
        let with_unsealed = |mut e: Expected| {
            if let Some((f, v, g)) = unsealed
                && !e.recorded.iter().any(|r| r.0 == *f && r.1 == *v)
            {
                if !e.formats.contains(f) {
                    e.formats.push(*f);
                    e.formats.sort();
                }
                e.recorded.push((*f, v.clone(), g.clone()));
            }
            e
        };
        match known {
            Some(k) if !k.values.is_empty() => Ok(with_unsealed(Expected {
                formats: k.formats(),
                recorded: k
                    .values
                    .iter()
                    .map(|(f, recorded, g)| {
                        let g = history.map(|h| h.generation_name(*g).to_owned());
                        (*f, recorded.clone(), g.unwrap_or_default())
                    })
                    .collect(),
            })),
            _ if unsealed.is_some() => Ok(with_unsealed(Expected {
                formats: if self.writer.is_some() {
                    self.new_formats.clone()
                } else {
                    Vec::new()
                },
                recorded: Vec::new(),
            })),
            _ if self.writer.is_some() => Ok(Expected {
                formats: self.new_formats.clone(),
                recorded: Vec::new(),
            }),
            _ => Err(Checked::New(None)),
        }
    }

    /// The verdict on a file whose whole-file `hashes` (at least `expected.formats`) were
    /// computed at `at`: by the upload's own read, or by [`Session::check`].
    pub fn judge(&self, expected: &Expected, hashes: FileHashes, at: SystemTime) -> Checked {
        let mut hashes = hashes;
        // Only the formats the history or the generation asks for (not every `--file-hash`).
        let extra: Vec<HashFormat> = hashes
            .iter()
            .map(|(f, _)| f)
            .filter(|f| !expected.formats.contains(f))
            .collect();
        if !extra.is_empty() {
            let mut kept = FileHashes::default();
            for (f, v) in hashes.iter().filter(|(f, _)| !extra.contains(f)) {
                kept.insert(f, v.to_owned());
            }
            hashes = kept;
        }
        if expected.recorded.is_empty() {
            return Checked::New(Some((hashes, at)));
        }
        let differ = expected.differences(&hashes);
        if differ.is_empty() {
            Checked::Verified(hashes, at)
        } else {
            Checked::Mismatch(hashes, at, differ)
        }
    }

    /// Checks `entry` against the history, reading it for that alone (when there is something
    /// to compare or a generation to write): for a folder after a download or verify, and for a
    /// tree file the upload did not read (skipped as proven identical). A file uploaded is
    /// checked on its upload's own read instead (`UploadConfig::mhl_check`).
    pub async fn check(&self, entry: &FileEntry) -> Checked {
        match self.plan(entry) {
            Ok(expected) => self.check_reading(entry, &expected).await,
            Err(checked) => checked,
        }
    }

    /// [`Session::check`] for a file already planned: reads and hashes it, then judges.
    pub async fn check_reading(&self, entry: &FileEntry, expected: &Expected) -> Checked {
        let formats = expected.formats.clone();
        let (path, walked) = (entry.path.clone(), (entry.size, entry.mtime_ns));
        let hashed = blocking(move || {
            let unreadable = |e: &dyn std::fmt::Display| {
                format!("cannot be read for the ASC MHL check: {e} (not uploaded)")
            };
            let h = file_hashes(&path, &formats).map_err(|e| unreadable(&e))?;
            // A file still being written (or replaced) since the walk saw it: its hash says
            // nothing about what will be sent.
            let now = std::fs::metadata(&path).map_err(|e| unreadable(&e))?;
            let mtime_ns = now
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(now.mtime_nsec());
            if (now.len(), mtime_ns) != walked {
                return Err("changed while it was being checked against its ASC MHL history: run again once it is complete (not uploaded)".into());
            }
            Ok::<_, String>((h, SystemTime::now()))
        })
        .await;
        match hashed {
            Ok((hashes, at)) => self.judge(expected, hashes, at),
            Err(e) => Checked::Unreadable(e),
        }
    }

    /// The line of a file the check stops (a mismatch, an unreadable file): it is not uploaded.
    pub fn refusal(&self, checked: &Checked, entry: &FileEntry, key: &str) -> Option<FileLine> {
        let (reason, code, tag) = match checked {
            Checked::Mismatch(_, _, differ) => (
                format!(
                    "does not match its ASC MHL history: {}: not uploaded",
                    crate::mhl::describe(differ)
                ),
                EXIT_MISMATCH,
                "mismatch",
            ),
            Checked::Unreadable(why) => (why.clone(), EXIT_ERROR, "unreadable"),
            _ => return None,
        };
        let mut line = FileLine::for_entry(entry, key);
        line.reason = Some(reason);
        line.exit_code = code;
        line.mhl = Some(tag.into());
        Some(line)
    }

    /// Records what happened to `entry` (its `line`, after the upload or the refusal): counts it,
    /// tags the line, and adds its `<hash>` to the generation when it is in S3 or failed its check.
    pub fn record(&self, entry: &FileEntry, checked: Checked, line: &mut FileLine) {
        // In S3 (uploaded or proven there), or here after a download.
        let in_s3 = matches!(
            line.action,
            LineAction::Uploaded | LineAction::Skipped | LineAction::Downloaded
        );
        let (hashes, at, action_of): (FileHashes, SystemTime, Box<dyn Fn(HashFormat) -> Action>) =
            match checked {
                Checked::Outside | Checked::Unreadable(_) | Checked::Unchecked => return,
                Checked::New(h) => {
                    self.summary.lock().expect("lock").new += 1;
                    line.mhl = Some("new".into());
                    match h {
                        Some((h, at)) if in_s3 => (h, at, Box::new(|_| Action::Original)),
                        _ => return,
                    }
                }
                Checked::Verified(h, at) => {
                    self.summary.lock().expect("lock").verified += 1;
                    line.mhl = Some("verified".into());
                    if !in_s3 {
                        return;
                    }
                    let known: Vec<HashFormat> = self
                        .history
                        .as_ref()
                        .and_then(|hist| hist.known(&entry.rel))
                        .map(|k| k.formats())
                        .unwrap_or_default();
                    (
                        h,
                        at,
                        Box::new(move |f| {
                            if known.contains(&f) {
                                Action::Verified
                            } else {
                                Action::Original
                            }
                        }),
                    )
                }
                Checked::Mismatch(h, at, _) => {
                    self.summary.lock().expect("lock").mismatched += 1;
                    // Every value of a file that differs is recorded failed: nothing about it is
                    // vouched for.
                    (h, at, Box::new(|_| Action::Failed))
                }
            };
        let Some(writer) = &self.writer else { return };
        let s3 = (in_s3 && !self.bucket.is_empty()).then(|| S3Facts {
            bucket: self.bucket.clone(),
            key: line.key.clone().unwrap_or_default(),
            version_id: line.version_id.clone(),
            etag: line.etag.clone(),
            checksum: line.checksum.clone(),
        });
        let e = HashEntry {
            path: entry.rel.clone(),
            size: entry.size,
            modified: Some(mtime(entry.mtime_ns)),
            hashdate: at,
            hashes: hashes
                .iter()
                .map(|(f, v)| (f, v.to_owned(), action_of(f)))
                .collect(),
            s3,
        };
        let mut w = writer.lock().expect("lock");
        if let Some(gw) = w.as_mut()
            && let Err(err) = gw.add(&e)
        {
            tracing::warn!(
                "the ASC MHL generation {} cannot be written ({err}); none will be written",
                gw.path().display()
            );
            *w = None;
        }
    }

    /// The lines of the files the history lists that the folder lacks (left out: files
    /// `filters` exclude and ignored ones; keys under `key_prefix`), and the summary so far with
    /// them counted. Call after every file was checked.
    pub fn missing(
        &self,
        filters: &crate::tree::Filters,
        key_prefix: &str,
    ) -> (Vec<FileLine>, Summary) {
        let mut lines = Vec::new();
        let mut summary = self.summary.lock().expect("lock").clone();
        if let Some(h) = &self.history {
            for (rel, size) in h.unseen() {
                if !included(filters, rel) || self.ignore.ignores(rel) {
                    continue;
                }
                summary.missing += 1;
                lines.push(FileLine {
                    path: self.root.join(rel).display().to_string(),
                    rel: rel.to_owned(),
                    key: Some(format!("{}{rel}", key_prefix)),
                    size: None,
                    reason: Some(format!(
                        "missing: listed in the ASC MHL history ({size}) but not in the folder",
                        size = size.map_or("size unknown".into(), |s| format!("{s} bytes"))
                    )),
                    exit_code: EXIT_MISMATCH,
                    mhl: Some("missing".into()),
                    ..FileLine::default()
                });
            }
        }
        (lines, summary)
    }

    /// Closes the generation (after every file was recorded) and puts it with the updated chain
    /// into `ascmhl/` (the source's, or the state directory's when the source is read-only). A
    /// failure becomes a line. `None` without `--mhl`, or when it failed.
    pub async fn write_generation(
        &self,
        lines: &mut Vec<FileLine>,
        summary: &mut Summary,
    ) -> Option<Placed> {
        let writer = self
            .writer
            .as_ref()
            .and_then(|w| w.lock().expect("lock").take())?;
        let placed = {
            let this = &self;
            let temp = writer.path().to_owned();
            let (root, dir) = (this.root.clone(), this.state_dir.clone());
            let name = (this.root_name.clone(), this.created);
            blocking(move || place(writer, &temp, &root, &dir, &name)).await
        };
        let placed = match placed {
            Ok(p) => p,
            Err(e) => {
                lines.push(FileLine {
                    path: self.root.join(FOLDER).display().to_string(),
                    reason: Some(e.to_string()),
                    exit_code: EXIT_ERROR,
                    ..FileLine::default()
                });
                return None;
            }
        };
        summary.generation = Some(placed.name.clone());
        summary.written_to = Some(placed.dir.display().to_string());
        summary.source_read_only = placed.read_only.clone();
        Some(placed)
    }

    /// Ends the session: the lines of missing files, then (with `--mhl`, after a complete run)
    /// the generation and chain written and uploaded under the prefix. Lines for what failed
    /// there are returned with the missing ones.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish<C: S3Api>(
        self,
        engine: &Engine,
        s3: &C,
        base: &UploadConfig,
        prefix: &ObjectUrl,
        filters: &crate::tree::Filters,
        complete: bool,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> (Vec<FileLine>, Summary) {
        if !complete {
            let summary = self.summary.lock().expect("lock").clone();
            let lines = Vec::new();
            // Interrupted: what was not reached is not missing, and no generation is written.
            if let Some(w) = self
                .writer
                .as_ref()
                .and_then(|w| w.lock().expect("lock").take())
            {
                let _ = std::fs::remove_file(w.path());
            }
            return (lines, summary);
        }
        let (mut lines, summary) = self.missing(filters, &prefix.key);
        let mut summary = summary;
        let Some(placed) = self.write_generation(&mut lines, &mut summary).await else {
            return (lines, summary);
        };
        for name in [placed.name.as_str(), CHAIN] {
            let key = format!("{}{FOLDER}/{name}", prefix.key);
            let mut cfg = base.clone();
            cfg.source = placed.dir.join(name);
            cfg.target = ObjectUrl {
                bucket: prefix.bucket.clone(),
                key: key.clone(),
            };
            match crate::upload::upload_file(engine, s3, &cfg, progress, cancel).await {
                Ok(_) => summary.uploaded.push(key),
                Err(e) => lines.push(FileLine {
                    path: cfg.source.display().to_string(),
                    rel: format!("{FOLDER}/{name}"),
                    key: Some(key),
                    reason: Some(crate::redact::redact(&e.to_string())),
                    exit_code: e.exit_code(),
                    ..FileLine::default()
                }),
            }
        }
        (lines, summary)
    }
}

/// [`MhlError::Nested`] when the tree at `root` has a history below its root.
fn refuse_nested(root: &Path) -> Result<(), MhlError> {
    match crate::mhl::history::find_nested(root) {
        Some(nested) => Err(MhlError::Nested {
            root: root.to_owned(),
            nested,
        }),
        None => Ok(()),
    }
}

/// Whether `rel` passes `--include`/`--exclude` (its directories included).
fn included(filters: &crate::tree::Filters, rel: &str) -> bool {
    let mut dir = String::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        if !dir.is_empty() {
            dir.push('/');
        }
        dir.push_str(p);
        if !filters.allows(&dir, true) {
            return false;
        }
    }
    filters.allows(rel, false)
}

/// Where the finished generation went.
pub struct Placed {
    /// The generation's file name.
    pub name: String,
    /// The `ascmhl/` folder it is in.
    pub dir: PathBuf,
    /// Why the source's own `ascmhl/` could not be written, when it could not.
    pub read_only: Option<String>,
}

/// Closes the generation, computes its C4, and puts it with the updated chain into the source's
/// `ascmhl/`, or, when the source refuses writes, into `<work dir>/ascmhl/`. Blocking.
///
/// Under an exclusive lock on the `ascmhl/` folder (flock), the chain is read again and the
/// generation takes the next number after every generation file and chain entry there: two runs
/// finishing at once (even in the same second) get different numbers, so different names, and
/// each chain keeps both.
fn place(
    writer: GenerationWriter,
    temp: &Path,
    root: &Path,
    work: &Path,
    (root_name, created): &(String, SystemTime),
) -> Result<Placed, MhlError> {
    writer.finish().map_err(|e| write_error(temp, &e))?;
    let c4 = file_hashes(temp, &[HashFormat::C4])
        .map_err(|e| MhlError::Write {
            path: temp.to_owned(),
            why: e.to_string(),
        })?
        .get(HashFormat::C4)
        .unwrap_or_default()
        .to_owned();
    let source_dir = root.join(FOLDER);
    let local = work.join(FOLDER);
    let read_only = match seal_into(&source_dir, temp, &c4, root_name, *created, None) {
        Ok(name) => {
            let _ = std::fs::remove_file(temp);
            return Ok(Placed {
                name,
                dir: source_dir,
                read_only: None,
            });
        }
        Err(Sealing::Io(e)) if refuses_writes(&e) => e.to_string(),
        Err(Sealing::Io(e)) => return Err(write_error(&source_dir, &e)),
        Err(Sealing::History(e)) => return Err(e),
    };
    // The source's own generations and chain come with it, so the folder uploaded is whole.
    let name = match seal_into(&local, temp, &c4, root_name, *created, Some(&source_dir)) {
        Ok(name) => name,
        Err(Sealing::Io(e)) => return Err(write_error(&local, &e)),
        Err(Sealing::History(e)) => return Err(e),
    };
    let _ = std::fs::remove_file(temp);
    Ok(Placed {
        name,
        dir: local,
        read_only: Some(read_only),
    })
}

enum Sealing {
    Io(std::io::Error),
    History(MhlError),
}

impl From<std::io::Error> for Sealing {
    fn from(e: std::io::Error) -> Sealing {
        Sealing::Io(e)
    }
}

/// Puts the generation `temp` (C4 `c4`) into the `ascmhl/` folder `dir` under the next number,
/// and the chain with it, holding the folder's lock. `copy_from`: a read-only source's
/// `ascmhl/`, whose chain this folder's starts from. Returns the name. Blocking.
fn seal_into(
    dir: &Path,
    temp: &Path,
    c4: &str,
    root_name: &str,
    created: SystemTime,
    copy_from: Option<&Path>,
) -> Result<String, Sealing> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::File::open(dir)?;
    lock.lock()?;
    // A read-only source: its chain starts this folder's (once; later runs continue it).
    if let Some(from) = copy_from
        && !dir.join(CHAIN).exists()
        && from.join(CHAIN).is_file()
    {
        let bytes = std::fs::read(from.join(CHAIN))?;
        crate::fsx::write_atomic(&dir.join(CHAIN), &bytes, 0o644)?;
    }
    let chain_path = dir.join(CHAIN);
    let mut chain = if chain_path.exists() {
        crate::mhl::history::read_chain(&chain_path).map_err(Sealing::History)?
    } else {
        Vec::new()
    };
    let mut last = chain.iter().map(|c| c.sequence).max().unwrap_or(0);
    for e in std::fs::read_dir(dir)?.flatten() {
        if let Some(n) = e.file_name().to_str()
            && let Some(g) = crate::mhl::history::generation_number(n)
        {
            last = last.max(g.number);
        }
    }
    let number = last + 1;
    let name = generation::file_name(number, root_name, created);
    let to = dir.join(&name);
    // Copied into a temporary created exclusively (never through a link placed there).
    let part = crate::fsx::temp_path(&to);
    let mut out = crate::fsx::create_new(&part, 0o644)?;
    let copied = std::io::copy(&mut std::fs::File::open(temp)?, &mut out)
        .and_then(|_| out.sync_all())
        .and_then(|()| crate::fsx::rename_into_place(&part, &to));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&part);
        return Err(e.into());
    }
    chain.push(ChainEntry {
        sequence: number,
        path: name.clone(),
        format: HashFormat::C4,
        value: c4.to_owned(),
    });
    let bytes = generation::chain_bytes(&chain)?;
    crate::fsx::write_atomic(&chain_path, &bytes, 0o644)?;
    drop(lock);
    Ok(name)
}

/// Errors that mean "this folder cannot be written" (a read-only card or mount).
fn refuses_writes(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

fn write_error(path: &Path, e: &std::io::Error) -> MhlError {
    MhlError::Write {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// `<state dir>/mhl/<digest of root, bucket, prefix>`: this tree's generations in progress, and its
/// history when the source is read-only.
fn work_dir(state_dir: &Path, root: &Path, prefix: &ObjectUrl) -> PathBuf {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [
        root.as_os_str().as_encoded_bytes(),
        prefix.bucket.as_bytes(),
        prefix.key.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    state_dir
        .join("mhl")
        .join(crate::vocab::hex(&h.finalize()[..16]))
}

fn mtime(ns: i64) -> SystemTime {
    if ns <= 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mhl::hashes::data_hashes;

    /// A folder with `a` = "hello world" and a history (written with tally's own writer) holding
    /// its xxh64 from the reference tool's test vector.
    fn card() -> (tempfile::TempDir, FileEntry) {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello world").unwrap();
        let hist = dir.path().join(FOLDER);
        std::fs::create_dir_all(&hist).unwrap();
        let name = "0001_x_2020-01-16_091500Z.mhl";
        let header = Header {
            created: UNIX_EPOCH,
            hostname: "h".into(),
            tool_version: "1".into(),
            location: "s3://b/p/".into(),
            ignore: vec![],
        };
        let mut w = GenerationWriter::create(&hist.join(name), &header).unwrap();
        w.add(&HashEntry {
            path: "a".into(),
            size: 11,
            modified: None,
            hashdate: UNIX_EPOCH,
            hashes: vec![(
                HashFormat::Xxh64,
                "45ab6734b21e6968".into(),
                Action::Original,
            )],
            s3: None,
        })
        .unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(hist.join(name)).unwrap();
        let c4 = data_hashes(&bytes, &[HashFormat::C4]);
        let chain = [ChainEntry {
            sequence: 1,
            path: name.into(),
            format: HashFormat::C4,
            value: c4.get(HashFormat::C4).unwrap().into(),
        }];
        std::fs::write(hist.join(CHAIN), generation::chain_bytes(&chain).unwrap()).unwrap();
        let meta = std::fs::metadata(&a).unwrap();
        let entry = FileEntry {
            path: a,
            rel: "a".into(),
            size: 11,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        (dir, entry)
    }

    #[tokio::test]
    async fn a_file_that_is_not_what_the_walk_saw_is_not_checked_as_if_it_were() {
        let (dir, entry) = card();
        let s = Session::for_check(dir.path()).unwrap().unwrap();
        assert!(matches!(s.check(&entry).await, Checked::Verified(..)));
        let mut stale = entry.clone();
        stale.mtime_ns -= 1;
        match s.check(&stale).await {
            Checked::Unreadable(why) => assert!(why.contains("changed while"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A changed byte is a mismatch naming the recorded value and the generation.
        std::fs::write(&entry.path, b"hello worle").unwrap();
        let meta = std::fs::metadata(&entry.path).unwrap();
        let now = FileEntry {
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ..entry
        };
        let checked = s.check(&now).await;
        let line = s.refusal(&checked, &now, "p/a").expect("refused");
        assert_eq!(line.exit_code, EXIT_MISMATCH);
        let why = line.reason.unwrap();
        assert!(
            why.contains("45ab6734b21e6968") && why.contains("0001_x_2020-01-16_091500Z.mhl"),
            "{why}"
        );
    }

    /// Issue 25 case 6: two runs of one folder finishing in the same second get different
    /// generation numbers (so names), and the chain keeps both.
    #[test]
    fn two_generations_sealed_in_the_same_second_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let hist = dir.path().join(FOLDER);
        let created = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let mut names = Vec::new();
        for run in 0..2 {
            let temp = dir.path().join(format!("run{run}.part"));
            std::fs::write(&temp, format!("generation of run {run}")).unwrap();
            let c4 = data_hashes(
                format!("generation of run {run}").as_bytes(),
                &[HashFormat::C4],
            );
            let name = match seal_into(
                &hist,
                &temp,
                c4.get(HashFormat::C4).unwrap(),
                "card",
                created,
                None,
            ) {
                Ok(n) => n,
                Err(_) => panic!("sealing failed"),
            };
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "0001_card_2020-09-13_122640Z.mhl",
                "0002_card_2020-09-13_122640Z.mhl"
            ]
        );
        let chain = crate::mhl::history::read_chain(&hist.join(CHAIN)).unwrap();
        let listed: Vec<(u32, &str)> = chain
            .iter()
            .map(|c| (c.sequence, c.path.as_str()))
            .collect();
        assert_eq!(listed, [(1, names[0].as_str()), (2, names[1].as_str())]);
        assert_eq!(
            std::fs::read_to_string(hist.join(&names[1])).unwrap(),
            "generation of run 1"
        );
    }
}
