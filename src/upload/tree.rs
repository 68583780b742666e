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

use tokio_util::sync::CancellationToken;

use crate::config::{ObjectUrl, UploadConfig};
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::progress::Progress;
use crate::s3::{ObjectRead as _, S3Api};
use crate::tree::report::{Action, FileLine, TreeReport, stops_everything};
use crate::tree::{FileEntry, Found, WalkOptions};

use futures::StreamExt as _;

use self::record::{Proven, Record};
use super::{Listed, Sent, upload_or_skip};

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
    /// `--mhl`: write an ASC MHL generation for this transfer (a tree's `ascmhl/` history is
    /// checked with or without it).
    pub mhl: bool,
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
    let mhl = {
        let (root, prefix, write) = (cfg.root.clone(), cfg.prefix.clone(), cfg.mhl);
        let dir = cfg.base.resume.state_dir()?;
        blocking(move || crate::mhl::session::Session::open(&root, &prefix, write, &dir)).await?
    };
    let walk = {
        let (root, opts) = (cfg.root.clone(), cfg.walk.clone());
        blocking(move || crate::tree::walk(&root, opts)).await?
    };
    let stop = cancel.child_token();
    let mut report = TreeReport::new(&cfg.prefix);
    // The destination's listing, merged with the walk (both in key order): a file with no object,
    // or one of another size, is sent without asking the object first.
    let limited = engine.limit(s3);
    let listing = crate::remote::listing::objects(&limited, &cfg.prefix.bucket, &cfg.prefix.key);
    let lister = Lister {
        cursor: tokio::sync::Mutex::new(Some(crate::remote::listing::Cursor::new(Box::pin(
            listing,
        )))),
        known: std::sync::Mutex::new(std::collections::HashMap::new()),
    };
    let lister = &lister;
    let walk = walk.then(move |found| async move {
        if let Found::File(entry) = &found {
            let key = format!("{}{}", cfg.prefix.key, entry.rel);
            let listed = lister.find(&key).await;
            lister
                .known
                .lock()
                .expect("lock")
                .insert(entry.rel.clone(), listed);
        }
        Ok(found)
    });
    let ctx = Ctx {
        engine: &engine,
        s3,
        cfg,
        record: &record,
        progress,
        stop: &stop,
        mhl: mhl.as_ref(),
    };
    let ctx = &ctx;
    let fatal = crate::tree::run::run(
        Box::pin(walk),
        cfg.base.concurrency,
        &stop,
        progress,
        &mut report,
        on_line,
        |entry| {
            let listed = lister
                .known
                .lock()
                .expect("lock")
                .remove(&entry.rel)
                .unwrap_or_default();
            ctx.one_file(entry, listed)
        },
    )
    .await;
    if let Ok(record) = std::sync::Arc::try_unwrap(record) {
        let complete = report.complete;
        if let Err(e) = blocking(move || record.close(complete)).await {
            tracing::warn!("{e}");
        }
    }
    if let Some(mhl) = mhl {
        let complete = report.complete && fatal.is_none();
        let filters = &cfg.walk.filters;
        let (lines, summary) = mhl
            .finish(
                &engine,
                s3,
                &cfg.base,
                &cfg.prefix,
                filters,
                complete,
                progress,
                cancel,
            )
            .await;
        for line in &lines {
            on_line(line);
            report.add(line);
        }
        report.mhl = Some(summary);
    }
    let bytes = report.uploaded_bytes;
    report.end(started, bytes, fatal, cancel)
}

/// The destination's listing, asked in walk order; what it said about each file waits here until
/// the file's turn (at most the files in progress).
struct Lister<S> {
    /// `None` once the listing failed or was refused: every file then asks its object.
    cursor: tokio::sync::Mutex<Option<crate::remote::listing::Cursor<S>>>,
    known: std::sync::Mutex<std::collections::HashMap<String, Listed>>,
}

impl<S> Lister<S>
where
    S: futures::Stream<Item = Result<crate::s3::ListedObject, Error>> + Unpin,
{
    async fn find(&self, key: &str) -> Listed {
        let mut cursor = self.cursor.lock().await;
        let Some(c) = cursor.as_mut() else {
            return Listed::Unknown;
        };
        match c.find(key).await {
            Ok(Some(o)) => Listed::Size(o.size),
            Ok(None) => Listed::Absent,
            Err(e) => {
                // Not allowed to list (a policy with PutObject but no ListBucket), or the server
                // cannot: each file asks its own object instead.
                tracing::info!("listing the destination failed ({e}); each file asks its object");
                *cursor = None;
                Listed::Unknown
            }
        }
    }
}

/// What every file of one tree upload shares.
struct Ctx<'a, C> {
    engine: &'a Engine,
    s3: &'a C,
    cfg: &'a TreeConfig,
    record: &'a Record,
    progress: &'a dyn Progress,
    stop: &'a CancellationToken,
    mhl: Option<&'a crate::mhl::session::Session>,
}

impl<C: S3Api> Ctx<'_, C> {
    /// One file: checked against the tree's ASC MHL history first, when it has one (a file that
    /// does not match is not sent), then [`Ctx::send`]; what happened is recorded for `--mhl`.
    async fn one_file(
        &self,
        entry: FileEntry,
        listed: Listed,
    ) -> Result<FileLine, (FileLine, Error)> {
        let Some(mhl) = self.mhl else {
            return self.send(entry, listed).await;
        };
        let checked = mhl.check(&entry).await;
        let key = format!("{}{}", self.cfg.prefix.key, entry.rel);
        let mut out = match mhl.refusal(&checked, &entry, &key) {
            Some(line) => Ok(line),
            None => self.send(entry.clone(), listed).await,
        };
        let (Ok(line) | Err((line, _))) = &mut out;
        mhl.record(&entry, checked, line);
        out
    }

    /// One file: skipped on the record's word (`--trust-manifest`, object unchanged), else
    /// [`upload_or_skip`]. `Err` carries an error that stops the whole run.
    async fn send(&self, entry: FileEntry, listed: Listed) -> Result<FileLine, (FileLine, Error)> {
        let Ctx {
            engine,
            s3,
            cfg,
            record,
            progress,
            stop,
            ..
        } = *self;
        let target = ObjectUrl {
            bucket: cfg.prefix.bucket.clone(),
            key: format!("{}{}", cfg.prefix.key, entry.rel),
        };
        let mut line = FileLine::for_entry(&entry, &target.key);
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
        match upload_or_skip(engine, s3, &fcfg, &file_progress, stop, listed).await {
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
        // Version ids where both sides have one (Garage names a version in PutObject's reply but
        // none in HEAD's on an unversioned bucket); the ETag decides in any case.
        && match (&head.version_id, &known.version_id) {
            (Some(now), Some(then)) => now == then,
            _ => true,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::ListedObject;

    fn lister(
        items: Vec<Result<ListedObject, Error>>,
    ) -> Lister<futures::stream::Iter<std::vec::IntoIter<Result<ListedObject, Error>>>> {
        Lister {
            cursor: tokio::sync::Mutex::new(Some(crate::remote::listing::Cursor::new(
                futures::stream::iter(items),
            ))),
            known: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn obj(key: &str, size: u64) -> Result<ListedObject, Error> {
        Ok(ListedObject {
            key: key.into(),
            size,
        })
    }

    #[tokio::test]
    async fn the_listing_answers_in_walk_order_and_a_refused_listing_falls_back_to_asking() {
        let l = lister(vec![obj("p/a", 1), obj("p/c", 3)]);
        assert_eq!(l.find("p/a").await, Listed::Size(1));
        assert_eq!(l.find("p/b").await, Listed::Absent);
        assert_eq!(l.find("p/c").await, Listed::Size(3));
        assert_eq!(l.find("p/d").await, Listed::Absent);
        // A listing that fails (AccessDenied: PutObject allowed, ListBucket not) says nothing,
        // for this key and every later one: each file then asks its object.
        let denied = Error::s3("ListObjectsV2", None, None)(crate::error::S3Error::from_response(
            Some("AccessDenied"),
            Some(403),
            "denied".into(),
        ));
        let l = lister(vec![obj("p/a", 1), Err(denied), obj("p/z", 1)]);
        assert_eq!(l.find("p/a").await, Listed::Size(1));
        assert_eq!(l.find("p/b").await, Listed::Unknown);
        assert_eq!(l.find("p/z").await, Listed::Unknown);
    }
}
