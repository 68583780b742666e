//! `tally download s3://BUCKET/KEY DEST`: the object's own part layout decides the ranges, each
//! part is streamed into `DEST.tally-partial` at its offset and hashed as it arrives, checked
//! before it counts, and recorded in a journal; only a fully proven file is renamed to DEST.
//!
//! The stages, in order:
//! 1. [`dest`]: DEST (a file, or a folder the key's last segment goes into), checked before
//!    anything is fetched; an existing DEST is kept unless `--force` or proven identical (with
//!    `verify`'s comparison, nothing fetched).
//! 2. [`crate::remote::facts`]: size, ETag, version, checksums, part layout; [`proof::plan`]:
//!    what each part and the whole object can be checked against.
//! 3. [`journal`]: resume from a journal whose header still matches the object, else start over.
//! 4. [`fetch`]: the parts through the shared [`Engine`] (its request slots and byte budget),
//!    every GET pinned with `If-Match` (and the version id), each part checked on arrival where
//!    S3 knows its checksum and fetched again when it does not match. The bytes go into the
//!    partial file in 1 MiB [`partial::Block`]s, written around the page cache where the file
//!    system allows it (`O_DIRECT`) while they are hashed.
//! 5. The whole-object check ([`crate::verify::compare`]): composite checksum, full-object CRC,
//!    multipart ETag. A failure there cannot name a part: every part is fetched once more, then
//!    the run stops with exit 1.
//! 6. fsync the file, rename it to DEST, fsync the folder ([`crate::fsx`]), remove the journal.

pub(crate) mod dest;
pub(crate) mod etag_search;
pub(crate) mod fetch;
pub(crate) mod journal;
pub(crate) mod partial;
pub(crate) mod proof;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt as _;
use serde::Serialize;

use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::hash::RangeHash;
use crate::progress::Progress;
use crate::remote::facts::{Method, remote_facts};
use crate::s3::S3Api;
use crate::verify::{self, Compared, Verdict, VerifyOptions};
use crate::vocab::ObjectUrl;

use self::fetch::{Ctx, Fetched};
use self::journal::{Header, Journal, PartLine};
use self::partial::PartialFile;
use self::proof::{Against, Proof};

/// Options of `tally download`.
#[derive(Debug, Clone)]
pub(crate) struct DownloadOptions {
    /// Replace an existing DEST that is not proven identical.
    pub force: bool,
    /// Parts in flight at most.
    pub concurrency: usize,
    /// Prefix downloads: which keys are taken (`--include`, `--exclude`, as for directories).
    pub filters: crate::tree::Filters,
    /// Fetch a part again when it arrives far slower than the others (`--hedge`; off by default:
    /// on a busy machine a part also lags because tally is still hashing it, and fetching it
    /// again from its start then only adds work; see docs/link.md).
    pub hedge: bool,
}

/// The report of one download.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DownloadReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The file written (or found identical).
    pub dest: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Parts in the object.
    pub parts: u32,
    /// Where the part layout and checksums came from.
    pub method: Method,
    /// Why that method.
    pub why: String,
    /// Whether anything proved the bytes (false: nothing could be compared, see `not_verified`).
    pub verified: bool,
    /// Everything the bytes were checked against (empty when nothing could be).
    pub checked: Vec<Proof>,
    /// Why nothing could be checked, when nothing was.
    pub not_verified: Option<String>,
    /// Parts checked on their own (each against its own checksum).
    pub parts_checked_alone: u32,
    /// The object checksum as computed and as S3 reports it, when compared.
    pub checksum: Option<Compared>,
    /// The ETag as computed and as S3 reports it, when compared.
    pub etag: Option<Compared>,
    /// DEST already held the object (proven identical): nothing was fetched.
    pub already_present: bool,
    /// Parts found verified in the journal of an interrupted run (not fetched again).
    pub parts_resumed: u32,
    /// Why an earlier partial download was discarded, if one was.
    pub restarted_because: Option<String>,
    /// GETs of parts made (fetches again included).
    pub parts_fetched: u32,
    /// Parts whose bytes arrived different from S3's checksum and were fetched again.
    pub parts_refetched: Vec<u32>,
    /// Whether every part was fetched a second time because the whole-object check failed.
    pub refetched_whole: bool,
    /// Seconds spent.
    pub seconds: f64,
    /// Bytes fetched per second, MiB/s.
    pub mib_per_s: f64,
}

/// Bytes of the engine's budget a part holds while it streams: two buffers, whatever its size.
const WINDOW: u64 = 2 * fetch::BUFFER as u64;

/// The engine of a download command: `concurrency` request slots, two buffers per part each.
pub(crate) fn engine(concurrency: usize) -> Engine {
    let concurrency = concurrency.max(1);
    Engine::new(Limits {
        concurrency,
        bytes_ahead: WINDOW * concurrency as u64,
    })
}

/// Refuses options no download can run with (as upload does): `--concurrency` outside
/// 1..=[`crate::config::MAX_CONCURRENCY`].
pub(crate) fn check_options(opts: &DownloadOptions) -> Result<(), Error> {
    let c = opts.concurrency;
    if !(1..=crate::config::MAX_CONCURRENCY).contains(&c) {
        return Err(Error::Usage(format!(
            "--concurrency {c} is out of range: choose 1 to {}",
            crate::config::MAX_CONCURRENCY
        )));
    }
    Ok(())
}

/// Downloads `obj` to `dest` (a file path, or a folder: see [`dest::resolve`]).
pub(crate) async fn download<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    opts: &DownloadOptions,
    progress: &dyn Progress,
) -> Result<DownloadReport, Error> {
    match download_with(&engine(opts.concurrency), s3, obj, dest, opts, progress).await {
        Err(e) if no_such_key(&e) => Err(prefix_hint(s3, obj).await.unwrap_or(e)),
        r => r,
    }
}

fn no_such_key(e: &Error) -> bool {
    matches!(e, Error::S3 { source, .. }
        if source.kind == crate::s3::S3ErrorKind::NotFound
            && source.code.as_deref() != Some("NoSuchBucket"))
}

/// For a key that names no object: objects under `KEY/` mean the user meant that prefix.
async fn prefix_hint<C: S3Api>(s3: &C, obj: &ObjectUrl) -> Option<Error> {
    use futures::StreamExt as _;
    let under = format!("{}/", obj.key);
    let listing = crate::remote::listing::objects(s3, &obj.bucket, &under);
    let first = Box::pin(listing).next().await?.ok()?;
    tracing::debug!("{} is under {obj}/", first.key);
    Some(Error::Usage(format!(
        "{obj} is not an object, but objects exist under {obj}/: add the trailing / (s3://{}/{under}) to download them all into a folder",
        obj.bucket
    )))
}

/// The error for a download of `obj` to `dest` stopped by Ctrl-C / SIGTERM: what is kept, and
/// how to go on.
pub(crate) fn interrupted(obj: &ObjectUrl, dest: &Path) -> Error {
    let target = dest::resolve(dest, &obj.key).unwrap_or_else(|_| dest.to_owned());
    let partial = dest::partial_path(&target);
    let kept = if partial.exists() {
        format!(
            "the parts fetched and checked so far are kept in {} (and its .journal)",
            partial.display()
        )
    } else {
        format!("nothing was written to {}", target.display())
    };
    Error::Stopped(format!(
        "interrupted: {kept}: run the same command again to go on"
    ))
}

/// [`download`] under the budget of `engine`, shared with the other transfers of the command.
pub(crate) async fn download_with<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    opts: &DownloadOptions,
    progress: &dyn Progress,
) -> Result<DownloadReport, Error> {
    check_options(opts)?;
    if obj.key.is_empty() || obj.key.ends_with('/') {
        return Err(Error::Usage(format!(
            "{obj} names a prefix, not an object: give the object's full key, or DIR/ as the destination"
        )));
    }
    let (d, key) = (dest.to_owned(), obj.key.clone());
    let dest = blocking(move || dest::resolve(&d, &key)).await?;
    download_to(engine, s3, obj, &dest, opts, progress).await
}

/// [`download_with`] to exactly the file `dest` (never into it, were it a folder): a folder, a
/// link, a device there is refused before anything is written. Holds the destination's lock
/// ([`dest::DestLock`]) for the whole run.
pub(crate) async fn download_to<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    opts: &DownloadOptions,
    progress: &dyn Progress,
) -> Result<DownloadReport, Error> {
    let started = Instant::now();
    let d = dest.to_owned();
    blocking(move || dest::check_target(&d)).await?;
    let dest = dest.to_owned();
    let s3l = engine.limit(s3);
    let learned = remote_facts(&s3l, obj, None).await?;
    // The folder is made once the object is found (a missing object makes none), then the lock
    // is taken in it and held for the rest of the run.
    let d = dest.clone();
    let lock = blocking(move || {
        dest::make_parent(&d)?;
        let lock = dest::DestLock::acquire_or_read_only(&d)?;
        // Again under the lock: nothing else of tally's changes it now.
        dest::check_target(&d)?;
        Ok::<_, Error>(lock)
    })
    .await?;
    let facts = learned.facts;
    let mut report = DownloadReport {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        dest: dest.clone(),
        size: facts.size,
        parts: facts.layout.len() as u32,
        method: learned.method,
        why: learned.why,
        verified: false,
        checked: Vec::new(),
        not_verified: None,
        parts_checked_alone: 0,
        checksum: None,
        etag: None,
        already_present: false,
        parts_resumed: 0,
        restarted_because: None,
        parts_fetched: 0,
        parts_refetched: Vec::new(),
        refetched_whole: false,
        seconds: 0.0,
        mib_per_s: 0.0,
    };
    let d = dest.clone();
    if blocking(move || std::fs::symlink_metadata(&d).is_ok()).await && !opts.force {
        // A file already there in a folder nobody can write into is proven without a lock.
        return already_there(&s3l, obj, &dest, report, started).await;
    }
    let _lock = match lock {
        dest::Lock::Held(lock) => lock,
        dest::Lock::ReadOnly(e) => return Err(e),
    };
    let plan = proof::plan(&facts);
    let header = Header {
        format: journal::FORMAT,
        endpoint: s3.endpoint_label(),
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        etag: facts.etag.as_ref().map(|e| e.as_str().to_owned()),
        version_id: facts.version_id.clone(),
        size: facts.size,
        layout: facts.layout.clone(),
        checksum: plan.alg,
        md5: plan.md5,
    };
    let partial = dest::partial_path(&dest);
    let jpath = dest::journal_path(&dest);
    let (p, j, h) = (partial.clone(), jpath.clone(), header.clone());
    let Opened {
        file,
        journal,
        done,
        restarted,
        damaged,
    } = blocking(move || open_or_start(&p, &j, &h)).await?;
    if let Some(why) = &restarted {
        progress.note(&format!("starting over: {why}"));
    }
    if !damaged.is_empty() {
        progress.note(&format!(
            "part(s) {} of {} no longer hold the bytes the journal recorded: fetching them again",
            damaged
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            partial.display()
        ));
    }
    report.restarted_because = restarted;
    let ranges = facts.ranges();
    let mut hashes: Vec<Option<RangeHash>> = vec![None; ranges.len()];
    let mut alone: Vec<Option<Against>> = vec![None; ranges.len()];
    for line in &done {
        let i = line.number as usize - 1;
        hashes[i] = line.hash();
        if line.checked_alone {
            // Checked against a part checksum known up front, else against the one its GET
            // carried (recorded as the part's own checksum, which matched it).
            alone[i] = plan.against(i, None).or_else(|| {
                plan.alg
                    .zip(line.checksum.clone())
                    .map(|(a, v)| Against::ReplyChecksum(a, v))
            });
        }
    }
    report.parts_resumed = hashes.iter().filter(|h| h.is_some()).count() as u32;
    if report.parts_resumed > 0 {
        progress.note(&format!(
            "resuming: {} of {} parts already verified in {}",
            report.parts_resumed,
            ranges.len(),
            partial.display()
        ));
    }
    let pin = facts.pinned();
    let ctx = Ctx {
        obj,
        pin: &pin,
        file: Arc::new(file),
        path: partial.clone(),
        plan: &plan,
        progress,
        flights: Default::default(),
        by_range: std::sync::atomic::AtomicBool::new(false),
        hedge: opts.hedge,
    };
    let journal = Arc::new(journal);
    progress.start(facts.size, ranges.len() as u32);
    let todo: Vec<usize> = (0..ranges.len()).filter(|i| hashes[*i].is_none()).collect();
    if todo.len() < ranges.len() {
        // A resumed download starts from what the journal holds.
        let held: u64 = (0..ranges.len())
            .filter(|i| hashes[*i].is_some())
            .map(|i| ranges[i].end - ranges[i].start)
            .sum();
        progress.already(held, (ranges.len() - todo.len()) as u32);
    }
    let mut searched = None;
    let outcome = async {
        fetch_all(engine, s3, &ctx, &journal, &ranges, todo, &mut report)
            .await?
            .into_iter()
            .for_each(|(i, f)| {
                hashes[i] = Some(f.hash);
                alone[i] = f.against;
            });
        let mut first_bad: Option<String> = None;
        loop {
            let local: Vec<RangeHash> = hashes.iter().flatten().cloned().collect();
            let mut c = verify::compare::compare(facts.size, &local, &facts);
            searched = search_hidden_layout(&ctx, &facts, &mut c).await?;
            if !proof::differs(&c) {
                return Ok(c);
            }
            let etag_matched = c.etag.as_ref().is_some_and(|e| e.matches);
            if etag_matched && c.differing_parts.is_empty() {
                // The ETag, the MD5 of the bytes the server stored, matches what arrived: only
                // the checksum it reports disagrees (moto names a CRC32 CRC32C). The server's
                // answer, not the data's: the ETag decides, the checksum proves nothing.
                if let Some(x) = c.checksum.take() {
                    progress.note(&format!(
                        "the server reports {} as the object checksum, not {} (the bytes'), but \
                         its ETag, the MD5 of the bytes, matches: its checksum is set aside",
                        x.remote, x.local
                    ));
                }
                return Ok(c);
            }
            let (what, computed, expected) =
                proof::failing(&c, &facts).unwrap_or_default();
            if report.refetched_whole {
                return Err(Error::Corrupt {
                    url: obj.to_string(),
                    what: "the object".into(),
                    against: what,
                    same_each_time: first_bad.as_ref() == Some(&computed),
                    computed,
                    expected,
                    attempts: 2,
                });
            }
            first_bad = Some(computed);
            progress.note(&format!(
                "the parts together do not match {what}, and no part can be named: fetching every part again"
            ));
            report.refetched_whole = true;
            progress.start(facts.size, ranges.len() as u32);
            let all: Vec<usize> = (0..ranges.len()).collect();
            for (i, f) in fetch_all(engine, s3, &ctx, &journal, &ranges, all, &mut report).await? {
                hashes[i] = Some(f.hash);
                alone[i] = f.against;
            }
        }
    }
    .await;
    progress.finish();
    let c = match outcome {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, Error::ObjectChanged { .. }) {
                // The journal and the bytes are of the old object: nothing is worth keeping.
                let (p, j) = (partial.clone(), jpath.clone());
                blocking(move || {
                    let _ = std::fs::remove_file(&p);
                    let _ = std::fs::remove_file(&j);
                })
                .await;
            }
            return Err(e);
        }
    };
    report.checked = proof::proofs(&facts, &alone, &c);
    report.parts_checked_alone = alone.iter().filter(|a| a.is_some()).count() as u32;
    if let Some(etag_search::Found::PartSize(p)) = &searched {
        report.checked.push(Proof {
            kind: "multipart_etag_searched",
            algorithm: None,
            text: format!(
                "the multipart ETag, recomputed with parts of {p} (the server gives no part layout: {p} is the whole-MiB part size that reproduces it)",
                p = etag_search::mib(*p)
            ),
        });
    }
    report.verified = !report.checked.is_empty();
    if !report.verified {
        let mut why = proof::nothing_because(&facts);
        if searched == Some(etag_search::Found::NotTried) {
            why += "; too many whole-MiB part sizes fit its part count to search for the one that reproduces its ETag";
        }
        report.not_verified = Some(why);
    }
    report.checksum = c.checksum;
    report.etag = c.etag;
    let file = ctx.file.clone();
    let (p, j, d) = (partial, jpath, dest.clone());
    blocking(move || put_in_place(file.file(), &p, &j, &d)).await?;
    Ok(finish(report, started))
}

/// On a server that hides the part layout (it ignores `?partNumber`) and reports no checksum, the
/// multipart ETag recomputed by searching the part size ([`etag_search`]): `c.etag` is filled
/// when the search decides. `None` when the object is not such a case.
async fn search_hidden_layout(
    ctx: &Ctx<'_>,
    facts: &crate::remote::facts::RemoteFacts,
    c: &mut verify::compare::Comparison,
) -> Result<Option<etag_search::Found>, Error> {
    let hidden = facts.etag_kind == crate::vocab::EtagKind::Unpredictable
        && facts.set_aside.is_some()
        && c.etag.is_none()
        && c.checksum.is_none();
    let Some(etag) = facts.etag.as_ref().filter(|_| hidden) else {
        return Ok(None);
    };
    let (file, path) = (ctx.file.clone(), ctx.path.clone());
    let (etag, size) = (etag.as_str().to_owned(), facts.size);
    let e = etag.clone();
    let found = blocking(move || etag_search::search(file.file(), size, &e))
        .await
        .map_err(|err| dest::io_error(&path, &err))?;
    match &found {
        etag_search::Found::PartSize(_) => c.etag = Some(Compared::new(etag.clone(), etag)),
        etag_search::Found::NoneOfAll(got) => {
            let local = got
                .iter()
                .map(|(p, e)| format!("{e} with {}", etag_search::mib(*p)))
                .collect::<Vec<_>>()
                .join(", ");
            c.etag = Some(Compared::new(local, etag));
        }
        etag_search::Found::NotTried => {}
    }
    Ok(Some(found))
}

/// Runs the parts `todo` through the engine: fetch, write, check, sync, record.
async fn fetch_all<C: S3Api>(
    engine: &Engine,
    s3: &C,
    ctx: &Ctx<'_>,
    journal: &Arc<Journal>,
    ranges: &[std::ops::Range<u64>],
    todo: Vec<usize>,
    report: &mut DownloadReport,
) -> Result<Vec<(usize, Fetched)>, Error> {
    let s3l = engine.limit(s3);
    let concurrency = engine.limits().concurrency;
    let s3l = &s3l;
    let done: Vec<(usize, Fetched)> = engine
        .parts(
            todo,
            |i| (ranges[*i].end - ranges[*i].start).min(WINDOW),
            |i| async move { Ok(i) },
            |i| async move { Ok(i) },
            move |i| async move {
                let range = ranges[i].clone();
                let f = fetch::part(s3l, ctx, i, range.clone()).await?;
                let line = PartLine::new(i as u32 + 1, range.start, &f.hash, f.against.is_some());
                let (file, j, path) = (ctx.file.clone(), journal.clone(), ctx.path.clone());
                blocking(move || {
                    file.file()
                        .sync_data()
                        .map_err(|e| dest::io_error(&path, &e))?;
                    j.record(&line)
                })
                .await?;
                ctx.progress.part_counted(range.end - range.start);
                crate::seam::pause("dlpart").await;
                Ok((i, f))
            },
            concurrency,
        )
        .try_collect()
        .await?;
    for (i, f) in &done {
        report.parts_fetched += f.attempts;
        if f.corrupt > 0 {
            report.parts_refetched.push(*i as u32 + 1);
        }
    }
    report.parts_refetched.sort_unstable();
    report.parts_refetched.dedup();
    Ok(done)
}

/// The partial file and its journal, opened.
struct Opened {
    file: PartialFile,
    journal: Journal,
    /// Parts recorded by an earlier run (valid for this layout).
    done: Vec<PartLine>,
    /// Why an earlier partial download was discarded.
    restarted: Option<String>,
    /// Parts the journal recorded whose bytes no longer match (fetched again).
    damaged: Vec<u32>,
}

/// Opens the partial file and its journal: resumed when the journal's header matches `header`
/// and the partial file has the object's size, else started over (and why). Blocking.
fn open_or_start(partial: &Path, jpath: &Path, header: &Header) -> Result<Opened, Error> {
    let loaded = journal::load(jpath)?;
    // Never through a link: anything but a regular file at the partial's name is started over.
    let existing = match crate::fsx::open_regular(partial, true, false) {
        Ok(f) => {
            let len = f.metadata().map_err(|e| dest::io_error(partial, &e))?.len();
            Some(Ok((f, len)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Some(Err(e.to_string())),
        Err(e) => return Err(dest::io_error(partial, &e)),
    };
    let why = match (&loaded, existing) {
        (None, None) => None,
        (_, Some(Err(not_regular))) => Some(not_regular),
        (None, Some(Ok(_))) => Some(format!("{} has no journal beside it", partial.display())),
        (Some((h, _)), _) if h != header => Some(format!(
            "the object is not the one {} was a copy of ({})",
            partial.display(),
            what_changed(h, header)
        )),
        (Some(_), None) => Some(format!("{} is missing", partial.display())),
        (Some(_), Some(Ok((_, len)))) if len != header.size => Some(format!(
            "{} is {len} bytes, not {}",
            partial.display(),
            header.size
        )),
        (Some(_), Some(Ok((file, _)))) => {
            let parts = loaded.map(|(_, p)| p).unwrap_or_default();
            let layout = &header.layout;
            let starts: Vec<u64> = layout
                .iter()
                .scan(0, |at, len| {
                    let s = *at;
                    *at += len;
                    Some(s)
                })
                .collect();
            let parts = parts
                .into_iter()
                .filter(|p| {
                    let i = p.number as usize;
                    i >= 1
                        && i <= layout.len()
                        && p.offset == starts[i - 1]
                        && p.len == layout[i - 1]
                        && p.hash().is_some()
                })
                .collect();
            let (done, damaged) = recheck(&file, parts, header);
            return Ok(Opened {
                file: PartialFile::new(file, partial),
                journal: Journal::open(jpath)?,
                done,
                restarted: None,
                damaged,
            });
        }
    };
    // Whatever is at these names is not a resumable download of this object: removed (a link
    // is removed, never followed), then the partial file is created exclusively.
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(jpath);
    let file = crate::fsx::create_new(partial, 0o666).map_err(|e| dest::io_error(partial, &e))?;
    if let Err(e) = partial::preallocate(&file, header.size) {
        // Nothing of this run is in it yet: a full disk leaves nothing behind.
        drop(file);
        let _ = std::fs::remove_file(partial);
        return Err(dest::io_error(partial, &e));
    }
    let journal = Journal::create(jpath, header)?;
    Ok(Opened {
        file: PartialFile::new(file, partial),
        journal,
        done: Vec::new(),
        restarted: why,
        damaged: Vec::new(),
    })
}

/// Hashes each part the journal recorded again, from the partial file, and keeps only those whose
/// bytes still give the recorded hashes: a part changed since (a disk error, another program)
/// is fetched again, never counted. Returns the parts kept and the numbers of those dropped.
/// Blocking (reads every kept byte once).
fn recheck(
    file: &std::fs::File,
    parts: Vec<PartLine>,
    header: &Header,
) -> (Vec<PartLine>, Vec<u32>) {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; partial::BLOCK];
    let mut kept = Vec::with_capacity(parts.len());
    let mut damaged = Vec::new();
    for p in parts {
        let mut h = crate::hash::RangeHasher::new(header.checksum, header.md5);
        let mut at = p.offset;
        let end = p.offset + p.len;
        let mut ok = true;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            if file.read_exact_at(&mut buf[..n], at).is_err() {
                ok = false;
                break;
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        if ok && Some(h.finish()) == p.hash() {
            kept.push(p);
        } else {
            damaged.push(p.number);
        }
    }
    (kept, damaged)
}

/// Puts the proven partial file (open as `file`) in place as `dest`: fsync, rename, fsync the
/// folder, remove the journal. Only the very file written is renamed (its name is checked to still
/// be it), and DEST is checked to be it afterwards. A folder that appeared at DEST meanwhile
/// (another key of the prefix made it) ends the download with the partial file and journal
/// removed. Blocking.
fn put_in_place(file: &std::fs::File, p: &Path, j: &Path, d: &Path) -> Result<(), Error> {
    file.sync_all().map_err(|e| dest::io_error(p, &e))?;
    let replaced = |what: &Path| {
        Error::Destination {
        path: what.to_owned(),
        why: "was replaced by another program during the download: nothing was put in place; run the same command again".into(),
    }
    };
    if !crate::fsx::is_same_file(p, file) {
        return Err(replaced(p));
    }
    if let Err(e) = dest::check_target(d) {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(j);
        return Err(e);
    }
    if let Err(e) = crate::fsx::rename_into_place(p, d) {
        if std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(j);
            return Err(Error::Destination {
                path: d.to_owned(),
                why: "became a directory during the download (another key names a folder here): not downloaded".into(),
            });
        }
        return Err(dest::io_error(d, &e));
    }
    if !crate::fsx::is_same_file(d, file) {
        return Err(replaced(d));
    }
    let _ = std::fs::remove_file(j);
    let _ = crate::fsx::sync_dir(crate::fsx::parent_dir(d));
    Ok(())
}

fn what_changed(old: &Header, new: &Header) -> String {
    if old.etag != new.etag {
        format!(
            "ETag {} then, {} now",
            old.etag.as_deref().unwrap_or("none"),
            new.etag.as_deref().unwrap_or("none")
        )
    } else if old.size != new.size {
        format!("{} bytes then, {} now", old.size, new.size)
    } else if old.version_id != new.version_id {
        "another version".into()
    } else if old.endpoint != new.endpoint {
        format!("endpoint {} then, {} now", old.endpoint, new.endpoint)
    } else {
        "another object or another tally version".into()
    }
}

/// DEST exists and `--force` was not given: proven identical (nothing fetched), or refused.
async fn already_there<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    mut report: DownloadReport,
    started: Instant,
) -> Result<DownloadReport, Error> {
    let v = verify::verify(s3, dest, obj, &VerifyOptions::default()).await?;
    if v.verdict != Verdict::Identical {
        return Err(Error::Destination {
            path: dest.to_owned(),
            why: format!(
                "already exists and is not the object ({}): pass --force to replace it, or choose another destination",
                if v.size.matches {
                    "its content differs".to_owned()
                } else {
                    format!("{} bytes, the object {}", v.size.local, v.size.remote)
                }
            ),
        });
    }
    report.already_present = true;
    report.method = v.method;
    report.why = v.why;
    report.checksum = v.checksum.clone();
    report.etag = v.etag.clone();
    report.parts_checked_alone = v.parts_compared;
    let mut checked = Vec::new();
    if v.parts_compared > 0 {
        checked.push(Proof {
            kind: if v.method == Method::Download {
                "bytes"
            } else {
                "part_checksums"
            },
            algorithm: v.checksum_algorithm.clone(),
            text: format!(
                "{} parts of the existing file compared one by one with the object",
                v.parts_compared
            ),
        });
    }
    if v.checksum.as_ref().is_some_and(|c| c.matches) {
        checked.push(Proof {
            kind: "object_checksum",
            algorithm: v.checksum_algorithm.clone(),
            text: format!(
                "the existing file against the object's {} checksum",
                v.checksum_algorithm.as_deref().unwrap_or("")
            ),
        });
    }
    if v.etag.as_ref().is_some_and(|e| e.matches) {
        checked.push(Proof {
            kind: "etag",
            algorithm: None,
            text: "the existing file against the object's ETag".into(),
        });
    }
    report.verified = !checked.is_empty();
    report.checked = checked;
    Ok(finish(report, started))
}

fn finish(mut r: DownloadReport, started: Instant) -> DownloadReport {
    r.seconds = started.elapsed().as_secs_f64();
    let fetched = if r.already_present { 0 } else { r.size };
    r.mib_per_s = fetched as f64 / (1u64 << 20) as f64 / r.seconds.max(1e-9);
    r
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::error::EXIT_MISMATCH;
    use crate::hash;
    use crate::progress::Silent;
    use crate::s3::fake::FakeS3;
    use crate::s3::tamper::Tamper;
    use crate::s3::{CompletedPart, MultipartWrite as _};
    use crate::vocab::{ChecksumAlgorithm, ChecksumType};

    fn url(key: &str) -> ObjectUrl {
        ObjectUrl::parse(&format!("s3://bkt/{key}")).unwrap()
    }

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    async fn put_single(s3: &FakeS3, key: &str, body: &[u8]) {
        let alg = ChecksumAlgorithm::Sha256;
        s3.put_object(
            &url(key),
            alg,
            Bytes::copy_from_slice(body),
            &hash::hash_part(alg, true, body),
            &crate::vocab::ObjectSettings::default(),
        )
        .await
        .unwrap();
    }

    async fn put_multipart(
        s3: &FakeS3,
        key: &str,
        body: &[u8],
        part: usize,
        alg: ChecksumAlgorithm,
    ) {
        let obj = url(key);
        let kind = alg.multipart_type();
        let id = s3
            .create_multipart(&obj, alg, kind, &crate::vocab::ObjectSettings::default())
            .await
            .unwrap();
        let mut parts = Vec::new();
        let mut hashes = Vec::new();
        for (i, c) in body.chunks(part).enumerate() {
            let h = hash::hash_part(alg, true, c);
            let r = s3
                .upload_part(&obj, &id, i as u32 + 1, alg, Bytes::copy_from_slice(c), &h)
                .await
                .unwrap();
            parts.push(CompletedPart {
                number: i as u32 + 1,
                etag: r.etag.unwrap(),
                checksum: h.checksum.base64(),
            });
            hashes.push(h);
        }
        let full = (kind == ChecksumType::FullObject)
            .then(|| hash::full_object_crc(alg, &hashes).base64());
        s3.complete_multipart(&obj, &id, alg, &parts, full.as_deref())
            .await
            .unwrap();
    }

    fn opts() -> DownloadOptions {
        DownloadOptions {
            force: false,
            concurrency: 3,
            filters: Default::default(),
            hedge: false,
        }
    }

    fn kinds(r: &DownloadReport) -> Vec<&'static str> {
        r.checked.iter().map(|p| p.kind).collect()
    }

    /// Nothing but DEST is left in its folder.
    fn only_dest(dir: &Path, dest: &Path) {
        let names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names, vec![dest.to_owned()]);
    }

    #[tokio::test]
    async fn each_kind_of_object_is_checked_against_what_s3_has() {
        let body = data(70_000, 1);
        type Case = (
            &'static str,
            bool,
            Option<ChecksumAlgorithm>,
            Vec<&'static str>,
            u32,
        );
        let cases: [Case; 5] = [
            (
                "sha256 parts, GetObjectAttributes",
                true,
                Some(ChecksumAlgorithm::Sha256),
                vec!["part_checksums", "composite_checksum"],
                4,
            ),
            (
                "sha256 parts, no GetObjectAttributes",
                false,
                Some(ChecksumAlgorithm::Sha256),
                vec!["composite_checksum"],
                0,
            ),
            (
                "crc64nvme full object",
                false,
                Some(ChecksumAlgorithm::Crc64nvme),
                vec!["full_object_crc"],
                0,
            ),
            (
                "crc32c parts, GetObjectAttributes, MD5 for the weak CRC",
                true,
                Some(ChecksumAlgorithm::Crc32c),
                vec!["part_checksums", "composite_checksum", "multipart_etag"],
                4,
            ),
            ("single PUT", false, None, vec!["object_checksum"], 1),
        ];
        for (what, attrs, alg, want, alone) in cases {
            let s3 = FakeS3::default();
            if attrs {
                s3.answer_attributes();
            }
            match alg {
                Some(a) => put_multipart(&s3, "k", &body, 20_000, a).await,
                None => put_single(&s3, "k", &body).await,
            }
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out");
            let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(std::fs::read(&dest).unwrap(), body, "{what}: byte-exact");
            assert_eq!(kinds(&r), want, "{what}");
            assert_eq!(r.parts_checked_alone, alone, "{what}");
            assert!(r.verified, "{what}");
            only_dest(dir.path(), &dest);
        }
    }

    #[tokio::test]
    async fn an_object_nothing_can_check_is_written_and_said_to_be_not_verified() {
        // No checksum, and an ETag that is not an MD5 (SSE-KMS): nothing to compare with.
        let s3 = Tamper::new(FakeS3::default()).head_reply(|h| {
            h.checksum = None;
            h.sse = Some("aws:kms".into());
        });
        let body = data(30_000, 8);
        put_single(s3.inner(), "kms", &body).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k");
        let r = download(&s3, &url("kms"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        assert!(!r.verified);
        assert!(r.checked.is_empty());
        assert_eq!(
            r.not_verified.as_deref(),
            Some("S3 reports no checksum for this object and its ETag is not an MD5 under SSE-KMS")
        );
        assert!(r.etag.is_none(), "the ETag was not compared");
    }

    #[tokio::test]
    async fn an_empty_object_is_checked_without_a_get() {
        let s3 = Tamper::new(FakeS3::default()).body_received(|_, _, _| {});
        put_single(s3.inner(), "empty", b"").await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("e");
        let r = download(&s3, &url("empty"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
        assert_eq!(kinds(&r), vec!["object_checksum"]);
        assert_eq!(s3.streamed_gets(), 0);
    }

    /// Flips one bit in the bytes of part `part` (of `size`-byte parts) on the GETs `when` says.
    fn flipper(
        size: u64,
        part: u32,
        when: impl Fn(u32) -> bool + Send + Sync + 'static,
    ) -> impl Fn(u32, u64, &mut Vec<u8>) + Send + Sync + 'static {
        let seen = std::sync::atomic::AtomicU32::new(0);
        move |_, at, piece| {
            let first = (part as u64 - 1) * size;
            if at == first {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if when(n) {
                    piece[7] ^= 0x04;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_corrupted_part_is_fetched_again_or_named() {
        let body = data(80_000, 2);
        // Once: the part is fetched again and the file is exact.
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 2, |n| n == 1));
        s3.inner().answer_attributes();
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        assert_eq!(r.parts_refetched, vec![2]);
        assert_eq!(r.parts_fetched, 5, "4 parts and part 2 again");
        // Every time: exit 1 naming part 2, nothing renamed; the good parts stay for a resume.
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 2, |_| true));
        s3.inner().answer_attributes();
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dest2 = dir.path().join("out2");
        let e = download(&s3, &url("k"), &dest2, &opts(), &Silent)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_MISMATCH, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("part 2 (bytes 20000..40000)") && text.contains("SHA256 part checksum"),
            "{text}"
        );
        // The same wrong bytes on the second fetch: no more fetches, and no blame on a passing
        // network fault.
        assert!(
            text.contains("on each of 2 fetches")
                && text.contains("a passing network fault is ruled out")
                && !text.contains("check the network path"),
            "{text}"
        );
        assert!(!dest2.exists());
        let (_, parts) = journal::load(&dest::journal_path(&dest2)).unwrap().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.number).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
    }

    #[tokio::test]
    async fn without_part_checksums_a_failed_whole_check_fetches_everything_once() {
        let body = data(80_000, 3);
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 3, |n| n == 1));
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        assert!(r.refetched_whole);
        assert_eq!(r.parts_fetched, 8);
        assert_eq!(kinds(&r), vec!["composite_checksum"]);
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 3, |_| true));
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dest2 = dir.path().join("out2");
        let e = download(&s3, &url("k"), &dest2, &opts(), &Silent)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_MISMATCH);
        assert!(
            e.to_string()
                .contains("the object arrived different from S3's SHA256 object checksum"),
            "{e}"
        );
        assert!(!dest2.exists());
    }

    #[tokio::test]
    async fn a_resumed_download_fetches_only_the_parts_not_recorded() {
        let body = data(100_000, 4);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        // First run: part 4 never arrives intact; parts 1, 2, 3 and 5 are recorded.
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 4, |_| true));
        s3.inner().answer_attributes();
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap_err();
        let inner = s3.into_inner();
        let s3 = Tamper::new(inner).body_received(|_, _, _| {});
        let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        assert_eq!(s3.streamed_gets(), 1, "only part 4 fetched");
        assert_eq!(r.parts_resumed, 4);
        assert_eq!(r.parts_checked_alone, 5, "resumed parts were checked alone");
        only_dest(dir.path(), &dest);
        // Part 2's bytes changed in the partial file after it was recorded: hashed again on
        // resume, found changed, fetched again; the file is exact.
        std::fs::remove_file(&dest).unwrap();
        let s3 = Tamper::new(s3.into_inner()).body_received(flipper(20_000, 4, |_| true));
        download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap_err();
        let partial = dest::partial_path(&dest);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 100], 25_000).unwrap();
        drop(f);
        let s3 = Tamper::new(s3.into_inner()).body_received(|_, _, _| {});
        let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body, "byte-exact");
        assert_eq!(r.parts_resumed, 3, "part 2 not counted");
        assert_eq!(s3.streamed_gets(), 2, "parts 2 and 4 fetched");
        only_dest(dir.path(), &dest);
        // A journal for another object: started over, and said so.
        let s3 = Tamper::new(FakeS3::default()).body_received(flipper(20_000, 4, |_| true));
        s3.inner().answer_attributes();
        put_multipart(s3.inner(), "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dest2 = dir.path().join("out2");
        download(&s3, &url("k"), &dest2, &opts(), &Silent)
            .await
            .unwrap_err();
        let other = data(100_000, 5);
        let inner = s3.into_inner();
        put_multipart(&inner, "k", &other, 20_000, ChecksumAlgorithm::Sha256).await;
        let s3 = Tamper::new(inner).body_received(|_, _, _| {});
        let r = download(&s3, &url("k"), &dest2, &opts(), &Silent)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest2).unwrap(), other);
        assert_eq!(s3.streamed_gets(), 5);
        assert!(
            r.restarted_because
                .as_deref()
                .is_some_and(|w| w.contains("ETag")),
            "{:?}",
            r.restarted_because
        );
    }

    /// Replaces the object once the first part is recorded.
    struct ReplaceAfterFirst<'a>(&'a FakeS3, std::sync::atomic::AtomicBool);

    impl Progress for ReplaceAfterFirst<'_> {
        fn start(&self, _: u64, _: u32) {}
        fn part_done(&self, _: u64) {
            if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.0
                    .replace_object("k", b"another writer's bytes".to_vec());
            }
        }
        fn finish(&self) {}
        fn note(&self, _: &str) {}
    }

    #[tokio::test]
    async fn an_object_replaced_mid_way_stops_the_download_and_leaves_nothing() {
        let body = data(60_000, 6);
        let s3 = FakeS3::default();
        put_multipart(&s3, "k", &body, 20_000, ChecksumAlgorithm::Sha256).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let watcher = ReplaceAfterFirst(&s3, Default::default());
        let one = DownloadOptions {
            force: false,
            concurrency: 1,
            filters: Default::default(),
            hedge: false,
        };
        let e = download(&s3, &url("k"), &dest, &one, &watcher)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ObjectChanged { .. }), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_ERROR);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no DEST, no partial, no journal: {left:?}");
    }

    #[tokio::test]
    async fn an_existing_destination_is_kept_unless_proven_identical_or_forced() {
        let body = data(50_000, 7);
        let s3 = Tamper::new(FakeS3::default()).body_received(|_, _, _| {});
        put_single(s3.inner(), "k", &body).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::write(&dest, &body).unwrap();
        let r = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap();
        assert!(r.already_present && r.verified);
        assert_eq!(s3.streamed_gets(), 0, "nothing fetched");
        let mut other = body.clone();
        other[100] ^= 1;
        std::fs::write(&dest, &other).unwrap();
        let e = download(&s3, &url("k"), &dest, &opts(), &Silent)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Destination { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), other, "kept");
        let force = DownloadOptions {
            force: true,
            ..opts()
        };
        let r = download(&s3, &url("k"), &dest, &force, &Silent)
            .await
            .unwrap();
        assert!(!r.already_present);
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        only_dest(dir.path(), &dest);
    }
}
