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
mod place;
pub(crate) mod proof;
mod resume;

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
use crate::verify::compare::Comparison;
use crate::verify::{self, Compared};
use crate::vocab::ObjectUrl;

use self::fetch::{Ctx, Fetched};
use self::journal::{Journal, PartLine};
use self::proof::Proof;

/// Options of `tally download`.
#[derive(Debug, Clone)]
pub(crate) struct DownloadOptions {
    /// Replace an existing DEST that is not proven identical.
    pub force: bool,
    /// Requests in flight at most (`--concurrency`).
    pub concurrency: usize,
    /// Prefix downloads: a small object's one GET waits only for a place among the objects
    /// downloading (twice `concurrency`), not for a request slot, so that twice as many go at
    /// once. Set when `--concurrency` was left out; a number given caps every request.
    pub small_by_places: bool,
    /// Prefix downloads: which keys are taken (`--include`, `--exclude`, as for directories).
    pub filters: crate::tree::Filters,
    /// Fetch a part again when it arrives far slower than the others (on by default;
    /// `--no-hedge` turns it off). A busy client is not taken for a slow link: the rule pauses
    /// while tally's own threads lag (`upload::hedge`; see docs/link.md).
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
    /// GETs made for the object's bytes: one per part, and one more for every fetch again,
    /// each range GET of a part fetched again in ranges included.
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
    let s3l = engine.limit(s3);
    let (learned, lock) = find_and_lock(&s3l, obj, dest).await?;
    let facts = learned.facts;
    let mut report = DownloadReport::new(obj, dest, &facts, learned.method, learned.why);
    let d = dest.to_owned();
    if blocking(move || std::fs::symlink_metadata(&d).is_ok()).await && !opts.force {
        // A file already there in a folder nobody can write into is proven without a lock.
        return place::already_there(&s3l, obj, dest, report, started).await;
    }
    let _lock = match lock {
        dest::Lock::Held(lock) => lock,
        dest::Lock::ReadOnly(e) => return Err(e),
    };
    let plan = proof::plan(&facts);
    let (file, journal, mut parts, restarted) =
        resume::open(s3.endpoint_label(), obj, &facts, &plan, dest, progress).await?;
    report.restarted_because = restarted;
    let partial = dest::partial_path(dest);
    let ranges = facts.ranges();
    report.parts_resumed = parts.held();
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
        flights: crate::upload::hedge::Flights::with_window(crate::upload::hedge::DOWNLOAD_WINDOW),
        by_range: std::sync::atomic::AtomicBool::new(false),
        hedge: opts.hedge,
    };
    let run = Run {
        engine,
        ctx: &ctx,
        journal: &Arc::new(journal),
        facts: &facts,
        ranges: &ranges,
    };
    let outcome = fetch_and_prove(&run, s3, &mut parts, &mut report).await;
    progress.finish();
    let (c, searched) = match outcome {
        Ok(c) => c,
        Err(e) => return Err(forget_if_changed(e, dest).await),
    };
    conclude(&mut report, &facts, &parts, c, searched);
    let file = ctx.file.clone();
    let (p, j, d) = (partial, dest::journal_path(dest), dest.to_owned());
    blocking(move || place::put_in_place(file.file(), &p, &j, &d)).await?;
    Ok(finish(report, started))
}

/// Checks DEST, learns the object's facts, makes DEST's folder (only once the object is found)
/// and takes the destination's lock, held for the rest of the run.
async fn find_and_lock<C: S3Api>(
    s3l: &C,
    obj: &ObjectUrl,
    dest: &Path,
) -> Result<(crate::remote::facts::Learned, dest::Lock), Error> {
    let d = dest.to_owned();
    blocking(move || dest::check_target(&d)).await?;
    let learned = remote_facts(s3l, obj, None).await?;
    let d = dest.to_owned();
    let lock = blocking(move || {
        dest::make_parent(&d)?;
        let lock = dest::DestLock::acquire_or_read_only(&d)?;
        // Again under the lock: nothing else of tally's changes it now.
        dest::check_target(&d)?;
        Ok::<_, Error>(lock)
    })
    .await?;
    Ok((learned, lock))
}

impl DownloadReport {
    /// The report of a download of `obj` to `dest` before anything is fetched.
    fn new(
        obj: &ObjectUrl,
        dest: &Path,
        facts: &crate::remote::facts::RemoteFacts,
        method: Method,
        why: String,
    ) -> DownloadReport {
        DownloadReport {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            dest: dest.to_owned(),
            size: facts.size,
            parts: facts.layout.len() as u32,
            method,
            why,
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
        }
    }
}

/// What the parts of one download share while they are fetched and proven.
struct Run<'a, 'c> {
    engine: &'a Engine,
    ctx: &'a Ctx<'c>,
    journal: &'a Arc<Journal>,
    facts: &'a crate::remote::facts::RemoteFacts,
    ranges: &'a [std::ops::Range<u64>],
}

/// Fetches the parts not held yet, then proves the whole object: on a whole-object failure no
/// part can name, every part is fetched once more; a second failure is [`Error::Corrupt`].
async fn fetch_and_prove<C: S3Api>(
    run: &Run<'_, '_>,
    s3: &C,
    parts: &mut resume::Parts,
    report: &mut DownloadReport,
) -> Result<(Comparison, Option<etag_search::Found>), Error> {
    let (facts, progress, n) = (run.facts, run.ctx.progress, run.ranges.len());
    progress.start(facts.size, n as u32);
    let todo = parts.todo();
    if todo.len() < n {
        // A resumed download starts from what the journal holds.
        let held: u64 = (0..n)
            .filter(|i| parts.hashes[*i].is_some())
            .map(|i| run.ranges[i].end - run.ranges[i].start)
            .sum();
        progress.already(held, (n - todo.len()) as u32);
    }
    parts.set(fetch_all(run, s3, todo, report).await?);
    let mut first_bad: Option<String> = None;
    loop {
        let local: Vec<RangeHash> = parts.hashes.iter().flatten().cloned().collect();
        let mut c = verify::compare::compare(facts.size, &local, facts);
        let searched = search_hidden_layout(run.ctx, facts, &mut c).await?;
        if !proof::differs(&c) || etag_decides(&mut c, progress) {
            return Ok((c, searched));
        }
        let (what, computed, expected) = proof::failing(&c, facts).unwrap_or_default();
        if report.refetched_whole {
            return Err(Error::Corrupt {
                url: run.ctx.obj.to_string(),
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
        progress.start(facts.size, n as u32);
        parts.set(fetch_all(run, s3, (0..n).collect(), report).await?);
    }
}

/// Whether the ETag, the MD5 of the bytes the server stored, matching what arrived settles a
/// comparison where only the checksum the server reports disagrees (moto names a CRC32 CRC32C):
/// the server's answer, not the data's; the checksum is then set aside (and said so).
fn etag_decides(c: &mut Comparison, progress: &dyn Progress) -> bool {
    let etag_matched = c.etag.as_ref().is_some_and(|e| e.matches);
    if !etag_matched || !c.differing_parts.is_empty() {
        return false;
    }
    if let Some(x) = c.checksum.take() {
        progress.note(&format!(
            "the server reports {} as the object checksum, not {} (the bytes'), but \
             its ETag, the MD5 of the bytes, matches: its checksum is set aside",
            x.remote, x.local
        ));
    }
    true
}

/// `e`, after removing the partial file and journal when the object changed (they hold the old
/// object: nothing is worth keeping).
async fn forget_if_changed(e: Error, dest: &Path) -> Error {
    if matches!(e, Error::ObjectChanged { .. }) {
        let (p, j) = (dest::partial_path(dest), dest::journal_path(dest));
        blocking(move || {
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_file(&j);
        })
        .await;
    }
    e
}

/// Fills the report with what proved the bytes (or why nothing could).
fn conclude(
    report: &mut DownloadReport,
    facts: &crate::remote::facts::RemoteFacts,
    parts: &resume::Parts,
    c: Comparison,
    searched: Option<etag_search::Found>,
) {
    report.checked = proof::proofs(facts, &parts.alone, &c);
    report.parts_checked_alone = parts.alone.iter().filter(|a| a.is_some()).count() as u32;
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
        let mut why = proof::nothing_because(facts);
        if searched == Some(etag_search::Found::NotTried) {
            why += "; too many whole-MiB part sizes fit its part count to search for the one that reproduces its ETag";
        }
        report.not_verified = Some(why);
    }
    report.checksum = c.checksum;
    report.etag = c.etag;
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
    run: &Run<'_, '_>,
    s3: &C,
    todo: Vec<usize>,
    report: &mut DownloadReport,
) -> Result<Vec<(usize, Fetched)>, Error> {
    let Run {
        engine,
        ctx,
        journal,
        ranges,
        ..
    } = *run;
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
            Bytes::copy_from_slice(body).into(),
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
            small_by_places: false,
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
            small_by_places: false,
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
