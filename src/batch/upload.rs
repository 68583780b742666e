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

pub(crate) mod read_back;
pub(crate) mod record;

use std::path::PathBuf;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, TreeReport, stops_everything};
use crate::config::UploadConfig;
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::progress::Progress;
use crate::s3::{ObjectRead as _, S3Api};
use crate::tree::{FileEntry, Found, WalkOptions};
use crate::vocab::ObjectUrl;

use futures::StreamExt as _;

use self::record::{Proven, Record};
use crate::batch::custody::Checked;
use crate::upload::{Listed, Sent, upload_or_skip};

/// A checked tree upload.
#[derive(Debug, Clone)]
pub(crate) struct TreeConfig {
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
    /// `--concurrency` left out: twice as many files in progress, and a small file's one
    /// PutObject (at most [`crate::engine::BY_PLACES_MAX`]) holds no request slot, only its
    /// place; larger files stay at `concurrency` in progress and their requests hold slots.
    pub small_by_places: bool,
}

/// Uploads the tree of `cfg`, handing each entry's outcome to `on_line` as it finishes.
///
/// Returns the summary; `Err` only when nothing can be done (the root cannot be read) or an error
/// stopped everything (credentials, a missing bucket, an unreachable endpoint): files finished before
/// it were reported through `on_line`, files in flight are kept for resuming.
pub(crate) async fn upload_tree<C: S3Api>(
    s3: &C,
    cfg: &TreeConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let engine = Engine::new(Limits::for_parts(cfg.base.concurrency, cfg.base.part_size));
    let engine = if cfg.small_by_places {
        engine.small_puts_by_places()
    } else {
        engine
    };
    // Files in progress: `concurrency`, or with small files by places twice as many, of which at
    // most `concurrency` larger ones.
    let places = if cfg.small_by_places { 2 } else { 1 } * cfg.base.concurrency;
    let larger = &tokio::sync::Semaphore::new(cfg.base.concurrency);
    let record = std::sync::Arc::new(open_record(s3, cfg).await?);
    let mhl = open_custody(cfg).await?;
    let walk = {
        let (root, opts) = (cfg.root.clone(), cfg.walk.clone());
        blocking(move || crate::tree::walk(&root, opts)).await?
    };
    let stop = cancel.child_token();
    let mut report = TreeReport::new(&cfg.prefix);
    // The destination's listing, merged with the walk (both in key order): a file with no object,
    // or one of another size, is sent without asking the object first.
    let limited = engine.limit(s3);
    let (reader, listing) =
        crate::remote::listing::read_ahead(&limited, &cfg.prefix.bucket, &cfg.prefix.key);
    let lister = &Lister::new(Box::pin(listing));
    let trust = cfg.base.resume.trust_manifest;
    let rec = &record;
    let walk = walk.then(move |found| async move {
        if let Found::File(entry) = &found {
            rec.started(&entry.rel);
            lister
                .note(&cfg.prefix.key, entry, trust.then_some(rec))
                .await;
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
    // The read-back holds no request slot: the run may await it while the files that hold slots
    // are not polled (a full next batch waits for it), and a slot held by an unpolled request is
    // never given back. One check runs at a time: one listing request, or a few HEADs.
    let read_back = read_back::ByListing {
        s3,
        bucket: &cfg.prefix.bucket,
        prefix: &cfg.prefix.key,
    };
    let run = crate::batch::run::run_settled(
        Box::pin(walk),
        places,
        &stop,
        progress,
        &mut report,
        on_line,
        &read_back,
        |entry| async move {
            let _larger = if entry.size > crate::engine::BY_PLACES_MAX {
                Some(larger.acquire().await.expect("never closed"))
            } else {
                None
            };
            let (listed, earlier) = lister.take(&entry.rel);
            let rel = entry.rel.clone();
            let line = ctx.one_file(entry, listed, earlier).await;
            rec.finished(&rel);
            line
        },
    );
    // The listing's pages are read beside the files, one ahead of the walk.
    let fatal = crate::remote::listing::beside(reader, run).await;
    close_record(record, report.complete).await;
    if let Some(mhl) = mhl {
        let complete = report.complete && fatal.is_none();
        let end = End {
            engine: &engine,
            progress,
            cancel,
            on_line,
        };
        finish_custody(mhl, s3, cfg, complete, &end, &mut report).await;
    }
    let bytes = report.uploaded_bytes;
    report.end(started, bytes, fatal, cancel)
}

/// The tree's ASC MHL custody (its `ascmhl/` history, the generation with `--mhl`), if it has one.
async fn open_custody(cfg: &TreeConfig) -> Result<Option<crate::batch::custody::Session>, Error> {
    let (root, prefix, write) = (cfg.root.clone(), cfg.prefix.clone(), cfg.mhl);
    let dir = cfg.base.resume.state_dir.manifests()?;
    blocking(move || crate::batch::custody::Session::open(&root, &prefix, write, &dir)).await
}

/// Closes the tree's record once no file holds it (`complete`: every file was handled).
async fn close_record(record: std::sync::Arc<Record>, complete: bool) {
    if let Ok(record) = std::sync::Arc::try_unwrap(record)
        && let Err(e) = blocking(move || record.close(complete)).await
    {
        tracing::warn!("{e}");
    }
}

/// What the end of a tree upload hands on to the ASC MHL side.
struct End<'a> {
    engine: &'a Engine,
    progress: &'a dyn Progress,
    cancel: &'a CancellationToken,
    on_line: &'a (dyn Fn(&FileLine) + Send + Sync),
}

/// Finishes the tree's ASC MHL custody (the files its history lists that the tree lacks, the
/// generation with `--mhl`; `complete`: every file was handled), its lines added to `report`.
async fn finish_custody<C: S3Api>(
    mhl: crate::batch::custody::Session,
    s3: &C,
    cfg: &TreeConfig,
    complete: bool,
    end: &End<'_>,
    report: &mut TreeReport,
) {
    let (lines, summary) = mhl
        .finish(
            end.engine,
            s3,
            &cfg.base,
            &cfg.prefix,
            &cfg.walk.filters,
            complete,
            end.progress,
            end.cancel,
        )
        .await;
    for line in &lines {
        (end.on_line)(line);
        report.add(line);
    }
    report.mhl = Some(summary);
}

/// The tree's record in the state directory (what earlier runs proved, for `--trust-manifest`),
/// opened for this run.
async fn open_record<C: S3Api>(s3: &C, cfg: &TreeConfig) -> Result<Record, Error> {
    let root = std::path::absolute(&cfg.root).map_err(|e| Error::Source {
        path: cfg.root.clone(),
        why: format!("{e}"),
    })?;
    let dir = cfg.base.resume.state_dir.manifests()?;
    let path = record::path_for(
        &dir,
        &root,
        &s3.endpoint_label(),
        &cfg.prefix.bucket,
        &cfg.prefix.key,
    );
    let trust = cfg.base.resume.trust_manifest;
    blocking(move || Record::open(&path, trust)).await
}

/// The destination's listing, asked in walk order; what it said about each file waits here until
/// the file's turn (at most the files in progress).
struct Lister<S> {
    /// `None` once the listing failed or was refused: every file then asks its object.
    cursor: tokio::sync::Mutex<Option<crate::remote::listing::Cursor<S>>>,
    /// Per file waiting for its turn: the listing's answer and the record's entry.
    known: std::sync::Mutex<std::collections::HashMap<String, (Listed, Option<Proven>)>>,
}

impl<S> Lister<S>
where
    S: futures::Stream<Item = Result<crate::s3::ListedObject, Error>> + Unpin,
{
    fn new(listing: S) -> Self {
        Lister {
            cursor: tokio::sync::Mutex::new(Some(crate::remote::listing::Cursor::new(listing))),
            known: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Asks the listing (and, with `record`, the tree's record) about `entry`, in the walk's
    /// order, and keeps the answers until the file's turn.
    async fn note(
        &self,
        prefix: &str,
        entry: &crate::tree::FileEntry,
        record: Option<&std::sync::Arc<Record>>,
    ) {
        let listed = self.find(&format!("{prefix}{}", entry.rel)).await;
        // The record is read as a cursor, in the walk's order (this stage's).
        let earlier = match record {
            Some(r) => {
                let (r, rel) = (r.clone(), entry.rel.clone());
                blocking(move || r.lookup(&rel)).await
            }
            None => None,
        };
        self.known
            .lock()
            .expect("lock")
            .insert(entry.rel.clone(), (listed, earlier));
    }

    /// What the listing and the record said of the file at `rel`, on its turn (nothing known:
    /// the defaults, and the file asks its object).
    fn take(&self, rel: &str) -> (Listed, Option<Proven>) {
        self.known
            .lock()
            .expect("lock")
            .remove(rel)
            .unwrap_or_default()
    }

    async fn find(&self, key: &str) -> Listed {
        let mut cursor = self.cursor.lock().await;
        let Some(c) = cursor.as_mut() else {
            return Listed::Unknown;
        };
        match c.find(key).await {
            Ok(Some(o)) => Listed::Object(o.size, o.etag),
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
    mhl: Option<&'a crate::batch::custody::Session>,
}

/// What a file's upload read of it, for the ASC MHL check.
enum Read {
    /// The upload read it: its whole-file hashes (the formats asked for among them).
    Hashed(crate::hash::FileHashes),
    /// The history check stopped it before completion: what differs, every hash read, and what
    /// to do about its upload when aborting it failed.
    Mismatch(
        Vec<crate::mhl::Difference>,
        crate::hash::FileHashes,
        Option<String>,
    ),
    /// Not read by an upload (skipped, or failed before its hashes were complete).
    Not,
}

/// What to do about the upload `e` left open, when aborting it failed.
fn abort_failed(e: &Error) -> Option<String> {
    match e {
        Error::UploadFailed {
            outcome,
            bucket,
            key,
            upload_id,
            ..
        } if matches!(**outcome, crate::error::Outcome::AbortFailed(_)) => {
            Some(outcome.describe(bucket, key, upload_id))
        }
        _ => None,
    }
}

/// The history mismatch inside `e` (an aborted multipart upload wraps it), if that is what it is.
fn history_mismatch(e: &Error) -> Option<(&[crate::mhl::Difference], &crate::hash::FileHashes)> {
    match e {
        Error::UploadFailed { source, .. } => history_mismatch(source),
        _ => match e.domain::<crate::mhl::MhlError>() {
            Some(crate::mhl::MhlError::Mismatch { differ, hashes }) => Some((differ, hashes)),
            _ => None,
        },
    }
}

impl<C: S3Api> Ctx<'_, C> {
    /// One file: [`Ctx::send`], checked against the tree's ASC MHL history when it has one, on
    /// the upload's own read (a file that does not match is not completed); what happened is
    /// recorded for `--mhl`. A file the upload did not read (skipped) is read for the check.
    async fn one_file(
        &self,
        entry: FileEntry,
        listed: Listed,
        earlier: Option<Proven>,
    ) -> Result<FileLine, (FileLine, Error)> {
        let Some(mhl) = self.mhl else {
            return self
                .send(entry, listed, earlier, None)
                .await
                .map(|(line, _)| line);
        };
        let key = format!("{}{}", self.cfg.prefix.key, entry.rel);
        let expected = match mhl.plan(&entry) {
            Ok(expected) => expected,
            Err(checked) => {
                let mut out = self
                    .send(entry.clone(), listed, earlier, None)
                    .await
                    .map(|(l, _)| l);
                let (Ok(line) | Err((line, _))) = &mut out;
                mhl.record(&entry, checked, line);
                return out;
            }
        };
        let sent = self.send(entry.clone(), listed, earlier, Some(&expected));
        let (mut line, read, stop) = match sent.await {
            Ok((line, read)) => (line, read, None),
            Err((line, e)) => (line, Read::Not, Some(e)),
        };
        // Whether the object exists although the file may not match: only an upload an earlier
        // run completed (found by this one) is not checked before its completion.
        let completed = matches!(read, Read::Hashed(_));
        let mut left_open = None;
        let checked = match read {
            Read::Hashed(hashes) => mhl.judge(&expected, hashes, std::time::SystemTime::now()),
            Read::Mismatch(differ, hashes, abort) => {
                left_open = abort;
                Checked::Mismatch(hashes, std::time::SystemTime::now(), differ)
            }
            // Skipped (proven identical or trusted): the check reads the file itself.
            Read::Not if line.action == Action::Skipped => {
                // Boxed, as the other steps most files never take: a file's future is held for
                // every file in progress (128 small ones at defaults), so it keeps only its own path.
                Box::pin(mhl.check_reading(&entry, &expected)).await
            }
            // The upload failed before its hashes were complete: nothing to judge.
            Read::Not => Checked::Unchecked,
        };
        if let Some(mut refused) = mhl.refusal(&checked, &entry, &key) {
            if completed {
                refused.reason = refused.reason.map(|r| {
                    r.replace(
                        ": not uploaded",
                        ": an earlier run had completed its upload: check the object, and delete it if the file is wrong",
                    )
                });
            }
            if let Some(todo) = left_open {
                refused.reason = refused.reason.map(|r| format!("{r}, but {todo}"));
            }
            line = refused;
        }
        mhl.record(&entry, checked, &mut line);
        match stop {
            None => Ok(line),
            Some(e) => Err((line, e)),
        }
    }

    /// One file: skipped on the record's word (`--trust-manifest`, object unchanged), else
    /// [`upload_or_skip`], with the ASC MHL check `mhl` on the upload's read. `Err` carries an
    /// error that stops the whole run.
    async fn send(
        &self,
        entry: FileEntry,
        listed: Listed,
        earlier: Option<Proven>,
        mhl: Option<&crate::mhl::Expected>,
    ) -> Result<(FileLine, Read), (FileLine, Error)> {
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
        if let Some(known) = earlier.as_ref().filter(|k| k.same_file(&proven))
            && let Some(why) = still_there(engine, s3, &target, known, &listed).await
        {
            line.action = Action::Skipped;
            line.reason = Some(why);
            line.checksum = known.checksum.clone();
            line.etag = known.etag.clone();
            line.version_id = known.version_id.clone();
            record.add(known);
            return Ok((line, Read::Not));
        }
        let mut fcfg = cfg.base.clone();
        fcfg.source = entry.path.clone();
        fcfg.target = target;
        // With an ASC MHL session the file's outcome is recorded for the generation as it
        // finishes: its read-back is its own (a HEAD), not one that comes later.
        fcfg.read_back_by_listing = self.mhl.is_none();
        let mut read = Read::Not;
        let file_progress = FileProgress(progress);
        let check = mhl.map(|e| e as &dyn crate::upload::DigestCheck);
        match upload_or_skip(engine, s3, &fcfg, &file_progress, stop, listed, check).await {
            Ok(Sent::Skipped { facts, proof }) => skipped(&mut line, &facts, &proof),
            Ok(Sent::Uploaded { report, why }) => {
                read = uploaded(&mut line, *report, &why, cfg.base.verify);
            }
            Err(e) => {
                line.reason = Some(crate::redact::redact(&e.to_string()));
                line.exit_code = e.exit_code();
                if let Some((differ, hashes)) = history_mismatch(&e) {
                    read = Read::Mismatch(differ.to_vec(), hashes.clone(), abort_failed(&e));
                }
                if stops_everything(&e) {
                    return Err((line, e));
                }
                return Ok((line, read));
            }
        }
        proven.etag = line.etag.clone();
        proven.version_id = line.version_id.clone();
        proven.checksum = line.checksum.clone();
        record.add(&proven);
        Ok((line, read))
    }
}

/// A file whose object is proven identical (`proof`), as its line says it.
fn skipped(line: &mut FileLine, facts: &crate::remote::facts::RemoteFacts, proof: &str) {
    line.action = Action::Skipped;
    line.reason = Some(format!("proven identical: {proof}"));
    line.checksum = facts
        .checksum
        .as_ref()
        .map(|c| format!("{} {}", c.algorithm, c.value));
    line.etag = facts.etag.as_ref().map(|e| e.as_str().to_owned());
    line.version_id = facts.version_id.clone();
}

/// An uploaded file (sent because `why`), as its line says it; its whole-file hashes, read by
/// the upload, for the ASC MHL side.
fn uploaded(
    line: &mut FileLine,
    report: crate::upload::UploadReport,
    why: &str,
    verify: bool,
) -> Read {
    line.action = Action::Uploaded;
    line.reason = Some(format!("{why}; {}", proven_by(&report, verify)));
    if report.read_back_by_listing {
        line.read_back = report.md5.clone();
    }
    line.checksum = Some(format!(
        "{} {}",
        report.checksum.algorithm, report.checksum.value
    ));
    line.etag = report.stored_etag.clone();
    line.version_id = report.version_id.clone();
    line.file_hashes = report.file_hashes.clone();
    line.proof = Some(crate::upload::proof::proof_text(&report));
    Read::Hashed(report.file_hashes)
}

/// What proved an uploaded file, in words for its line: S3's reply, and the read-back made (or,
/// by listing, to come).
fn proven_by(report: &crate::upload::UploadReport, verify: bool) -> String {
    let alg = report.checksum.algorithm;
    let mut said = vec![if report.checks.object_checksum.matched() {
        format!("S3 verified the {alg} checksum on receipt and echoed it")
    } else {
        format!("the server did not echo the {alg} checksum (not verified by the server)")
    }];
    if report.checks.etag.matched() {
        said.push("ETag = the file's MD5".into());
    }
    said.push(match &report.verified {
        _ if report.read_back_by_listing => return said.join(", "),
        Some(v) => format!("read back per file ({})", v.method),
        None if verify => "read back per file".into(),
        None => "not read back (--no-verify)".into(),
    });
    said.join(", ")
}

/// With `--trust-manifest`: whether the object the record proved is still there, unchanged: the
/// same size and ETag in the destination's listing, or where the listing did not say, in one HEAD
/// (and the same version id where both have one). Returns the reason for the report.
async fn still_there<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    known: &Proven,
    listed: &Listed,
) -> Option<String> {
    if let Listed::Object(size, Some(etag)) = listed {
        let same = *size == known.size && known.etag.as_deref() == Some(etag.as_str());
        return same.then(|| {
            "trusted the record (--trust-manifest): file unchanged in size, mtime and inode; object ETag unchanged in the listing"
                .to_owned()
        });
    }
    if *listed == Listed::Absent {
        // Not there any more: the record is not enough.
        return None;
    }
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

    /// `len` pseudo-random bytes.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// xxh64 as ASC MHL writes it (canonical big-endian hex), computed with xxhash-rust directly,
    /// not with tally's whole-file hasher.
    fn xxh64_hex(bytes: &[u8]) -> String {
        format!("{:016x}", xxhash_rust::xxh64::xxh64(bytes, 0))
    }

    /// Writes `root/ascmhl/` with one generation recording `files` (rel path, xxh64) and its chain.
    fn history(root: &std::path::Path, files: &[(&str, u64, String)]) {
        use crate::mhl::generation::{self, Action, GenerationWriter, HashEntry, Header};
        use crate::mhl::history::ChainEntry;
        let hist = root.join("ascmhl");
        std::fs::create_dir_all(&hist).unwrap();
        let name = "0001_root_2020-01-16_091500Z.mhl";
        let header = Header {
            created: std::time::UNIX_EPOCH,
            hostname: "h".into(),
            tool_version: "1".into(),
            location: root.display().to_string(),
            ignore: vec![],
        };
        let mut w = GenerationWriter::create(&hist.join(name), &header).unwrap();
        for (rel, size, xxh64) in files {
            w.add(&HashEntry {
                path: (*rel).into(),
                size: *size,
                modified: None,
                hashdate: std::time::UNIX_EPOCH,
                hashes: vec![(
                    crate::mhl::HashFormat::Xxh64,
                    xxh64.clone(),
                    Action::Original,
                )],
                s3: None,
            })
            .unwrap();
        }
        w.finish_with(&[]).unwrap();
        let bytes = std::fs::read(hist.join(name)).unwrap();
        let c4 = crate::mhl::hashes::data_hashes(&bytes, &[crate::mhl::HashFormat::C4]);
        let chain = [ChainEntry {
            sequence: 1,
            path: name.into(),
            format: crate::mhl::HashFormat::C4,
            value: c4.get(crate::mhl::HashFormat::C4).unwrap().into(),
        }];
        std::fs::write(
            hist.join("ascmhl_chain.xml"),
            generation::chain_bytes(&chain).unwrap(),
        )
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_read_back_never_waits_for_a_slot_a_big_files_part_holds() {
        // At a concurrency of 1, by places: a big file's part holds the one request slot (the
        // fake keeps it until two batches of small files' lines are out; the last, partial
        // batch is read back when the run ends), while 2,100 small files go by places. Their
        // read-back must not wait for that slot: the run stops polling the files while a full
        // next batch waits for the check, so the part could never give it back.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("card");
        std::fs::create_dir(&root).unwrap();
        let big = vec![5u8; 8 * 1024 * 1024 + 1];
        std::fs::write(root.join("a-big"), &big).unwrap();
        const SMALL: usize = 2100;
        for i in 0..SMALL {
            std::fs::write(root.join(format!("b{i:05}")), format!("{i}")).unwrap();
        }
        let fake = crate::s3::fake::FakeS3::default();
        fake.hold_parts(true);
        let small_done = std::sync::atomic::AtomicUsize::new(0);
        let mut cfg = card_config(dir.path(), &root);
        cfg.base.concurrency = 1;
        cfg.small_by_places = true;
        let on_line = |l: &FileLine| {
            if l.rel.starts_with('b')
                && small_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
                    == 2 * crate::batch::run::HELD
            {
                fake.hold_parts(false);
            }
        };
        let cancel = CancellationToken::new();
        let run = upload_tree(&fake, &cfg, &crate::progress::Silent, &cancel, &on_line);
        let report = tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| {
                let out = small_done.load(std::sync::atomic::Ordering::SeqCst);
                panic!("the run hung with {out} small lines out: the read-back waits for a slot")
            })
            .unwrap();
        assert_eq!(report.uploaded, SMALL as u64 + 1);
        assert_eq!(fake.object("p/a-big").unwrap(), big);
        assert_eq!(fake.object("p/b02099").unwrap(), b"2099");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_files_go_twice_concurrency_at_once_by_default_and_never_past_a_given_one() {
        // Forty small files, one PutObject each, at a concurrency of 4. The fake holds requests
        // until the number asked for are in flight together (at most the time given).
        for (by_places, gather, within, peak) in [
            // --concurrency left out: eight PutObjects in flight together (the places: twice 4).
            (true, 8, 60, 8),
            // --concurrency 4 given: the fake waits 2 s for a fifth, which never comes.
            (false, 5, 2, 4),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("card");
            std::fs::create_dir(&root).unwrap();
            for i in 0..40u8 {
                std::fs::write(
                    root.join(format!("f{i:02}")),
                    vec![i; 1000 + usize::from(i)],
                )
                .unwrap();
            }
            let fake = crate::s3::fake::FakeS3::default();
            fake.gather(gather, std::time::Duration::from_secs(within));
            let (report, lines) = upload_card_with(&fake, dir.path(), &root, |cfg| {
                cfg.small_by_places = by_places;
            })
            .await;
            assert_eq!(report.uploaded, 40, "{lines:?}");
            for i in 0..40u8 {
                let key = format!("p/f{i:02}");
                assert_eq!(fake.object(&key).unwrap(), vec![i; 1000 + usize::from(i)]);
            }
            assert_eq!(fake.peak_in_flight(), peak, "small_by_places {by_places}");
        }
    }

    /// `tally upload ROOT s3://bkt/p/` through `fake` (5 MiB parts, SHA-256, the state under
    /// `state`): its report and every file's line.
    async fn upload_card(
        fake: &crate::s3::fake::FakeS3,
        state: &std::path::Path,
        root: &std::path::Path,
    ) -> (TreeReport, Vec<FileLine>) {
        upload_card_trusting(fake, state, root, false).await
    }

    /// [`upload_card`], with `--trust-manifest` when `trust`.
    async fn upload_card_trusting(
        fake: &crate::s3::fake::FakeS3,
        state: &std::path::Path,
        root: &std::path::Path,
        trust: bool,
    ) -> (TreeReport, Vec<FileLine>) {
        upload_card_with(fake, state, root, |cfg| {
            cfg.base.resume.trust_manifest = trust;
        })
        .await
    }

    /// The settings of `tally upload ROOT s3://bkt/p/` (5 MiB parts, SHA-256, a concurrency of 4,
    /// the state under `state`).
    fn card_config(state: &std::path::Path, root: &std::path::Path) -> TreeConfig {
        let mut base = UploadConfig::new(
            root.join("any"),
            "s3://bkt/p/x",
            5 * crate::vocab::MIB,
            4,
            crate::vocab::ChecksumAlgorithm::Sha256,
        )
        .unwrap();
        base.resume.state_dir = crate::state::StateDir::at(state.join("state"));
        TreeConfig {
            root: root.to_owned(),
            prefix: ObjectUrl {
                bucket: "bkt".into(),
                key: "p/".into(),
            },
            base,
            walk: WalkOptions::default(),
            mhl: false,
            small_by_places: false,
        }
    }

    /// [`upload_card`] at a concurrency of 4, its settings changed by `change`.
    async fn upload_card_with(
        fake: &crate::s3::fake::FakeS3,
        state: &std::path::Path,
        root: &std::path::Path,
        change: impl FnOnce(&mut TreeConfig),
    ) -> (TreeReport, Vec<FileLine>) {
        let mut cfg = card_config(state, root);
        change(&mut cfg);
        let cancel = CancellationToken::new();
        let lines = std::sync::Mutex::new(Vec::<FileLine>::new());
        let on_line = |l: &FileLine| lines.lock().unwrap().push(l.clone());
        let report = upload_tree(fake, &cfg, &crate::progress::Silent, &cancel, &on_line)
            .await
            .unwrap();
        (report, lines.into_inner().unwrap())
    }

    /// Where a tree file's manifest is kept (the default state directory: it is named after the
    /// file and its destination).
    /// The manifest path the upload of `root/rel` uses, under the state directory `upload_card`
    /// gives it (`state/state`).
    fn manifest_of(
        fake: &crate::s3::fake::FakeS3,
        state: &std::path::Path,
        root: &std::path::Path,
        rel: &str,
    ) -> std::path::PathBuf {
        crate::manifest::default_path(
            &state.join("state"),
            &std::fs::canonicalize(root.join(rel)).unwrap(),
            &crate::s3::MultipartWrite::endpoint_label(fake),
            "bkt",
            &format!("p/{rel}"),
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_history_check_rides_the_uploads_one_read_and_a_mismatch_leaves_nothing() {
        // Two files as their history recorded them (one multipart, one single PUT), the same two
        // kinds with one byte changed since the history was made, and one new file.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("card");
        std::fs::create_dir_all(&root).unwrap();
        const MIB: usize = 1024 * 1024;
        let files: [(&str, Vec<u8>, bool); 5] = [
            ("clip.mov", data(12 * MIB + 7, 1), false),
            ("notes.txt", data(1000, 2), false),
            ("take2.mov", data(11 * MIB, 3), true),
            ("take2.txt", data(500, 4), true),
            ("new.wav", data(3000, 5), false),
        ];
        let mut recorded = Vec::new();
        for (rel, bytes, changed) in &files {
            if *rel != "new.wav" {
                recorded.push((*rel, bytes.len() as u64, xxh64_hex(bytes)));
            }
            let mut on_disk = bytes.clone();
            if *changed {
                on_disk[bytes.len() / 2] ^= 1;
            }
            std::fs::write(root.join(rel), &on_disk).unwrap();
        }
        history(&root, &recorded);
        let fake = crate::s3::fake::FakeS3::default();
        let (report, lines) = upload_card(&fake, dir.path(), &root).await;
        for (rel, bytes, changed) in &files {
            assert_eq!(
                crate::source::opens::of(&root.join(rel)),
                1,
                "{rel}: read once, by its upload, for the history check too"
            );
            let line = lines.iter().find(|l| l.rel == *rel).unwrap();
            let object = fake.object(&format!("p/{rel}"));
            if *changed {
                assert_eq!(object, None, "{rel}: a mismatch is not in S3");
                assert_eq!(line.exit_code, 1, "{line:?}");
                let mut now = bytes.clone();
                now[bytes.len() / 2] ^= 1;
                let reason = line.reason.as_deref().unwrap_or_default();
                assert!(
                    reason.contains(&xxh64_hex(bytes)) && reason.contains(&xxh64_hex(&now)),
                    "{rel}: recorded and current values named: {reason}"
                );
                assert_eq!(line.mhl.as_deref(), Some("mismatch"));
            } else {
                assert_eq!(object.as_deref(), Some(&bytes[..]), "{rel}");
                assert_eq!(line.exit_code, 0, "{line:?}");
            }
        }
        assert_eq!(
            fake.uploads_in_progress(),
            0,
            "the mismatching upload was aborted"
        );
        // Where the aborted upload's manifest was (the state directory the tree was given: a tree
        // file's manifest is named after its source and destination).
        let manifest = manifest_of(&fake, dir.path(), &root, "take2.mov");
        assert!(
            !manifest.exists(),
            "no manifest left claiming the aborted upload: {}",
            manifest.display()
        );
        assert_eq!(report.exit_code, 1);
        let mhl = report.mhl.expect("the tree has a history");
        assert_eq!(
            (mhl.verified, mhl.mismatched, mhl.new),
            (2, 2, 1),
            "{mhl:?}"
        );
    }

    /// A mismatching multipart file whose abort fails: the upload is not orphaned silently. Its
    /// manifest stays (a later run checks the file again and aborts it) and the file's line says
    /// what to run.
    #[tokio::test]
    async fn a_mismatch_whose_abort_fails_keeps_its_manifest_and_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("card");
        std::fs::create_dir_all(&root).unwrap();
        let bytes = data(11 * 1024 * 1024, 3);
        history(
            &root,
            &[("take2.mov", bytes.len() as u64, xxh64_hex(&bytes))],
        );
        let mut on_disk = bytes.clone();
        on_disk[bytes.len() / 2] ^= 1;
        std::fs::write(root.join("take2.mov"), &on_disk).unwrap();
        let fake = crate::s3::fake::FakeS3::default();
        fake.refuse_aborts();
        let (report, lines) = upload_card(&fake, dir.path(), &root).await;
        let line = lines.iter().find(|l| l.rel == "take2.mov").unwrap();
        let reason = line.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("does not match its ASC MHL history") && reason.contains("tally abort"),
            "{reason}"
        );
        assert_ne!(report.exit_code, 0);
        assert_eq!(fake.object("p/take2.mov"), None, "not completed");
        assert_eq!(fake.uploads_in_progress(), 1, "the abort failed");
        let manifest = manifest_of(&fake, dir.path(), &root, "take2.mov");
        assert!(
            manifest.exists(),
            "the manifest of the upload left open is kept: {}",
            manifest.display()
        );
        let _ = std::fs::remove_file(&manifest);
    }

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
            etag: None,
        })
    }

    /// `n` files of 1,000 bytes in folders of 100, under `root`.
    fn many_small(root: &std::path::Path, n: u64) {
        for i in 0..n {
            let d = root.join(format!("reel{}", i / 100));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f.{i:06}.dpx")), data(1000, i + 1)).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn small_files_are_read_back_by_a_listing_per_thousand_not_a_head_each() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("card");
        many_small(&root, 2500);
        let fake = crate::s3::fake::FakeS3::default();
        let (report, lines) = upload_card(&fake, dir.path(), &root).await;
        assert_eq!((report.uploaded, report.exit_code), (2500, 0), "{report:?}");
        assert_eq!(fake.heads(), 0, "no HEAD per file");
        // One page of the destination before (empty), then per 1,000 files read back one
        // listing (two pages where the 1,000 straddle a page).
        assert!(
            (3..=7).contains(&fake.list_pages()),
            "{} listing pages",
            fake.list_pages()
        );
        for l in &lines {
            let reason = l.reason.as_deref().unwrap_or_default();
            assert!(
                reason.contains("S3 verified the SHA256 checksum on receipt and echoed it")
                    && reason
                        .contains("read back by listing: size and ETag (the file's MD5) match"),
                "{reason}"
            );
            assert!(l.read_back.is_none());
            let bytes = std::fs::read(root.join(&l.rel)).unwrap();
            assert_eq!(fake.object(&format!("p/{}", l.rel)), Some(bytes));
        }
        // Again over the unchanged tree: proven by the listing's ETags, each file re-hashed.
        let (pages, requests) = (fake.list_pages(), fake.requests());
        let (report, lines) = upload_card(&fake, dir.path(), &root).await;
        assert_eq!((report.skipped, report.exit_code), (2500, 0), "{report:?}");
        assert_eq!(fake.heads(), 0, "no HEAD per file on a re-run");
        assert_eq!(
            fake.list_pages() - pages,
            3,
            "a listing page per 1,000 files"
        );
        assert_eq!(fake.requests() - requests, 3, "and nothing else");
        for l in &lines {
            let reason = l.reason.as_deref().unwrap_or_default();
            assert!(
                reason.contains("from the listing = the file's MD5"),
                "{reason}"
            );
            assert_eq!(
                crate::source::opens::of(&root.join(&l.rel)),
                2,
                "{}: read once per run",
                l.rel
            );
        }
        // With --trust-manifest: the record (read as a cursor) and the listing's ETags; no file
        // read, no HEAD.
        let requests = fake.requests();
        let (report, lines) = upload_card_trusting(&fake, dir.path(), &root, true).await;
        assert_eq!((report.skipped, report.exit_code), (2500, 0), "{report:?}");
        assert_eq!(fake.requests() - requests, 3, "the listing's 3 pages only");
        for l in &lines {
            let reason = l.reason.as_deref().unwrap_or_default();
            assert!(
                reason.contains("object ETag unchanged in the listing"),
                "{reason}"
            );
            assert_eq!(crate::source::opens::of(&root.join(&l.rel)), 2, "not read");
        }
    }

    #[test]
    fn the_listing_read_back_fails_a_file_whose_object_is_not_what_was_sent() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let sent = |key: &str| FileLine {
            rel: key.into(),
            key: Some(key.into()),
            size: Some(10),
            action: Action::Uploaded,
            reason: Some("new".into()),
            read_back: Some(md5.into()),
            ..FileLine::default()
        };
        let listed = |size: u64, etag: &str| ListedObject {
            key: "k".into(),
            size,
            etag: Some(crate::vocab::ETag::new(etag)),
        };
        let mut ok = sent("k");
        read_back::judge(&mut ok, Some(&listed(10, &format!("\"{md5}\""))));
        assert_eq!((ok.action, ok.exit_code), (Action::Uploaded, 0));
        for (what, l) in [
            ("ETag", Some(listed(10, "ffffffffffffffffffffffffffffffff"))),
            ("bytes", Some(listed(11, md5))),
            ("does not show", None),
        ] {
            let mut bad = sent("k");
            read_back::judge(&mut bad, l.as_ref());
            assert_eq!((bad.action, bad.exit_code), (Action::Failed, 1), "{what}");
            assert!(bad.reason.unwrap().contains(what), "{what}");
        }
    }

    #[tokio::test]
    async fn the_listing_answers_in_walk_order_and_a_refused_listing_falls_back_to_asking() {
        let l = lister(vec![obj("p/a", 1), obj("p/c", 3)]);
        assert_eq!(l.find("p/a").await, Listed::Object(1, None));
        assert_eq!(l.find("p/b").await, Listed::Absent);
        assert_eq!(l.find("p/c").await, Listed::Object(3, None));
        assert_eq!(l.find("p/d").await, Listed::Absent);
        // A listing that fails (AccessDenied: PutObject allowed, ListBucket not) says nothing,
        // for this key and every later one: each file then asks its object.
        let denied = Error::s3("ListObjectsV2", None, None)(crate::s3::S3Error::from_response(
            Some("AccessDenied"),
            Some(403),
            "denied".into(),
        ));
        let l = lister(vec![obj("p/a", 1), Err(denied), obj("p/z", 1)]);
        assert_eq!(l.find("p/a").await, Listed::Object(1, None));
        assert_eq!(l.find("p/b").await, Listed::Unknown);
        assert_eq!(l.find("p/z").await, Listed::Unknown);
    }
}
