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
//!    S3 knows its checksum and fetched again when it does not match.
//! 5. The whole-object check ([`crate::verify::compare`]): composite checksum, full-object CRC,
//!    multipart ETag. A failure there cannot name a part: every part is fetched once more, then
//!    the run stops with exit 1.
//! 6. fsync the file, rename it to DEST, fsync the folder ([`crate::fsx`]), remove the journal.

pub mod dest;
pub mod fetch;
pub mod journal;
pub mod proof;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt as _;
use serde::Serialize;

use crate::config::ObjectUrl;
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::hash::RangeHash;
use crate::progress::Progress;
use crate::remote::facts::{Method, remote_facts};
use crate::s3::S3Api;
use crate::verify::{self, Compared, Verdict, VerifyOptions};

use self::fetch::{Ctx, Fetched};
use self::journal::{Header, Journal, PartLine};
use self::proof::{Against, Proof};

/// Options of `tally download`.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Replace an existing DEST that is not proven identical.
    pub force: bool,
    /// Parts in flight at most.
    pub concurrency: usize,
}

/// The report of one download.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
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

/// Downloads `obj` to `dest` (a file path, or a folder: see [`dest::resolve`]).
pub async fn download<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    opts: &DownloadOptions,
    progress: &dyn Progress,
) -> Result<DownloadReport, Error> {
    let started = Instant::now();
    if obj.key.is_empty() || obj.key.ends_with('/') {
        return Err(Error::Usage(format!(
            "{obj} names a prefix, not an object: give the object's full key"
        )));
    }
    let concurrency = opts.concurrency.max(1);
    let engine = Engine::new(Limits {
        concurrency,
        bytes_ahead: WINDOW * concurrency as u64,
    });
    let s3l = engine.limit(s3);
    let (d, key) = (dest.to_owned(), obj.key.clone());
    let dest = blocking(move || dest::resolve(&d, &key)).await?;
    let learned = remote_facts(&s3l, obj, None).await?;
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
    if blocking(move || d.exists()).await && !opts.force {
        return already_there(&s3l, obj, &dest, report, started).await;
    }
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
    let opened = blocking(move || open_or_start(&p, &j, &h)).await?;
    let (file, journal, done, restarted) = opened;
    if let Some(why) = &restarted {
        progress.note(&format!("starting over: {why}"));
    }
    report.restarted_because = restarted;
    let ranges = facts.ranges();
    let mut hashes: Vec<Option<RangeHash>> = vec![None; ranges.len()];
    let mut alone: Vec<Option<Against>> = vec![None; ranges.len()];
    for line in &done {
        let i = line.number as usize - 1;
        hashes[i] = line.hash();
        if line.checked_alone {
            alone[i] = plan.against(i, None);
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
    };
    let journal = Arc::new(journal);
    progress.start(facts.size, ranges.len() as u32);
    let todo: Vec<usize> = (0..ranges.len()).filter(|i| hashes[*i].is_none()).collect();
    let outcome = async {
        fetch_all(&engine, s3, &ctx, &journal, &ranges, todo, &mut report)
            .await?
            .into_iter()
            .for_each(|(i, f)| {
                hashes[i] = Some(f.hash);
                alone[i] = f.against;
            });
        loop {
            let local: Vec<RangeHash> = hashes.iter().flatten().cloned().collect();
            let c = verify::compare::compare(facts.size, &local, &facts);
            if !proof::differs(&c) {
                return Ok(c);
            }
            let (what, computed, expected) =
                proof::failing(&c, &facts).unwrap_or_default();
            if report.refetched_whole {
                return Err(Error::Corrupt {
                    url: obj.to_string(),
                    what: "the object".into(),
                    against: what,
                    computed,
                    expected,
                    attempts: 2,
                });
            }
            progress.note(&format!(
                "the parts together do not match {what}, and no part can be named: fetching every part again"
            ));
            report.refetched_whole = true;
            let all: Vec<usize> = (0..ranges.len()).collect();
            for (i, f) in fetch_all(&engine, s3, &ctx, &journal, &ranges, all, &mut report).await? {
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
    report.verified = !report.checked.is_empty();
    if !report.verified {
        report.not_verified = Some(proof::nothing_because(&facts));
    }
    report.checksum = c.checksum;
    report.etag = c.etag;
    let file = ctx.file.clone();
    let (p, j, d) = (partial, jpath, dest.clone());
    blocking(move || -> Result<(), Error> {
        file.sync_all().map_err(|e| dest::io_error(&p, &e))?;
        crate::fsx::rename_into_place(&p, &d).map_err(|e| dest::io_error(&d, &e))?;
        let _ = std::fs::remove_file(&j);
        let _ = crate::fsx::sync_dir(crate::fsx::parent_dir(&d));
        Ok(())
    })
    .await?;
    Ok(finish(report, started))
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
                    file.sync_data().map_err(|e| dest::io_error(&path, &e))?;
                    j.record(&line)
                })
                .await?;
                ctx.progress.part_done(range.end - range.start);
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

/// Opens the partial file and its journal: resumed when the journal's header matches `header`
/// and the partial file has the object's size, else started over (and why). Blocking.
#[allow(clippy::type_complexity)]
fn open_or_start(
    partial: &Path,
    jpath: &Path,
    header: &Header,
) -> Result<(std::fs::File, Journal, Vec<PartLine>, Option<String>), Error> {
    let loaded = journal::load(jpath)?;
    let partial_len = std::fs::metadata(partial).ok().map(|m| m.len());
    let why = match (&loaded, partial_len) {
        (None, None) => None,
        (None, Some(_)) => Some(format!(
            "{} has no journal beside it",
            partial.display()
        )),
        (Some((h, _)), _) if h != header => Some(format!(
            "the object is not the one {} was a copy of ({})",
            partial.display(),
            what_changed(h, header)
        )),
        (Some(_), None) => Some(format!("{} is missing", partial.display())),
        (Some(_), Some(len)) if len != header.size => Some(format!(
            "{} is {len} bytes, not {}",
            partial.display(),
            header.size
        )),
        (Some(_), Some(_)) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(partial)
                .map_err(|e| dest::io_error(partial, &e))?;
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
            return Ok((file, Journal::open(jpath)?, parts, None));
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(partial)
        .map_err(|e| dest::io_error(partial, &e))?;
    file.set_len(header.size)
        .map_err(|e| dest::io_error(partial, &e))?;
    let journal = Journal::create(jpath, header)?;
    Ok((file, journal, Vec::new(), why))
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
