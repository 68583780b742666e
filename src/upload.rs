//! `tally upload`: one file, or many under one budget, to S3 with a checksum per part.
//!
//! The stages, in the order a file meets them:
//! `single` (one PutObject) or `multipart`, which drives the multipart [`session`] (create or
//! `resume`, then `send` the parts through the engine, then `complete`, `reconcile`d); the
//! [`report`] says what S3's replies confirmed. The stages are private: `tally shard` drives
//! the same [`session`].
//! Every transfer of a command shares one [`Engine`]: see `engine.rs` for how parts of many files
//! are scheduled under one budget.

mod complete;
pub(crate) mod hedge;
mod multipart;
pub(crate) mod one;
pub(crate) mod proof;
mod reconcile;
pub(crate) mod report;
mod resume;
mod send;
pub(crate) mod session;
mod single;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt as _, stream};
use tokio_util::sync::CancellationToken;

use crate::config::UploadConfig;
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::hash::WholeFile;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::s3::S3Api;
use crate::source::Source;
use crate::vocab::PartHash;

pub use report::{Check, Checks, Method, UploadReport};

/// One file's upload in progress: what every stage of it shares.
pub struct Run<'a, C> {
    /// The S3 client, every request of which holds one of the engine's slots.
    pub s3: &'a C,
    /// The command's shared budget.
    pub engine: &'a Engine,
    /// What to upload where, and how.
    pub cfg: &'a UploadConfig,
    /// The file: mapped, or read whole if it is small ([`crate::source::HELD_MAX`]).
    pub src: Arc<Source>,
    /// Where progress and notes go.
    pub progress: &'a dyn Progress,
    /// Ctrl-C / SIGTERM.
    pub cancel: &'a CancellationToken,
    /// When this file's upload started.
    pub started: Instant,
    /// A check on the whole file's digests, made before the object is completed (a tree's ASC MHL
    /// custody), if the caller gave one.
    pub(crate) check: Option<&'a dyn DigestCheck>,
    /// Whether an earlier, interrupted multipart upload of this file to this key left its
    /// manifest (looked for when the file was opened; no state directory: none can be found).
    pub(crate) kept: bool,
    /// A small file read whole ([`Source::held`]): what the step that read it hashed.
    pub(crate) held: Option<Box<Held>>,
}

/// A small file read whole ([`Source::held`]) and hashed in the blocking step that read it.
pub(crate) struct Held {
    /// Its one PutObject's part hash (checksum and MD5).
    pub(crate) part: PartHash,
    /// Its whole-file hashes.
    pub(crate) whole: WholeFile,
    /// The engine's byte budget held for its bytes while the file's upload runs (taken before
    /// they were read, [`crate::source::HELD_MAX`], then cut to their size).
    _budget: crate::engine::Reservation,
}

/// A check of the whole file's digests that the caller of an upload asks for (`batch::custody`:
/// the file against its ASC MHL history): the formats are computed in the upload's own read (no
/// second read), and the check is made before the object is completed (before the single
/// PutObject, or before CompleteMultipartUpload); a file that fails it is not completed, its
/// multipart upload is aborted and its manifest removed.
pub(crate) trait DigestCheck: Send + Sync {
    /// The whole-file formats the check needs.
    fn formats(&self) -> &[crate::hash::FileHashFormat];
    /// `Ok` when the file's `hashes` pass; the error says why not (and stops the upload).
    fn check(&self, hashes: &crate::hash::FileHashes) -> Result<(), Error>;
}

/// Uploads `cfg.source` to `cfg.target` and checks S3's replies against the local hashes: the
/// one-file case of [`upload_many`], with the default budget for its part size and concurrency.
///
/// On failure after CreateMultipartUpload the upload is kept for resuming (the error names it and
/// its manifest), except when no manifest could be written: then it is aborted. `cancel` stops the
/// upload the same way.
pub async fn upload<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<UploadReport, Error> {
    let engine = Engine::new(Limits::for_parts(cfg.concurrency, cfg.part_size));
    upload_file(&engine, s3, cfg, progress, cancel).await
}

/// Uploads every file in `cfgs` under one budget (`limits`): at most `limits.concurrency` requests
/// in flight across all of them and at most `limits.bytes_ahead` bytes hashed ahead or in flight;
/// small files go many at a time and big files' parts interleave. Each file keeps its own manifest,
/// resume and checks. Results come back in the order of `cfgs`; one file failing does not stop the
/// others (`cancel` stops them all).
pub async fn upload_many<C: S3Api>(
    s3: &C,
    limits: Limits,
    cfgs: &[UploadConfig],
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Vec<Result<UploadReport, Error>> {
    let engine = Engine::new(limits);
    let engine = &engine;
    let mut out: Vec<(usize, Result<UploadReport, Error>)> = stream::iter(cfgs.iter().enumerate())
        .map(|(i, cfg)| async move { (i, upload_file(engine, s3, cfg, progress, cancel).await) })
        .buffer_unordered(engine.limits().concurrency)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Uploads one file through `engine`.
pub async fn upload_file<C: S3Api>(
    engine: &Engine,
    s3: &C,
    cfg: &UploadConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<UploadReport, Error> {
    let s3 = engine.limit(s3);
    let run = Run::open(&s3, engine, cfg, progress, cancel, None).await?;
    // Boxed: the pipeline's future type is deep, and callers' futures stay small.
    Box::pin(run.upload()).await
}

/// What [`upload_or_skip`] did.
#[derive(Debug)]
pub enum Sent {
    /// The file was uploaded (or an interrupted upload of it finished): `why` says why it was sent.
    Uploaded {
        /// The upload's report.
        report: Box<UploadReport>,
        /// Why it was sent: new, resumed, or how the object differed.
        why: String,
    },
    /// The object already is the file: nothing sent.
    Skipped {
        /// What S3 says about the object.
        facts: Box<crate::remote::facts::RemoteFacts>,
        /// What was compared.
        proof: String,
    },
}

/// What a listing of the destination said about a key, before a file is uploaded to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Listed {
    /// No listing (none made, or not allowed): ask the object itself.
    #[default]
    Unknown,
    /// The listing has no object at the key.
    Absent,
    /// The listing has an object of this size at the key, with this ETag (if it gave one).
    Object(u64, Option<crate::vocab::ETag>),
}

/// Uploads one file of a tree, unless the object at its key is already proven to be the file
/// (see [`crate::verify::prove`]: one HEAD and a local hash in the common case). An interrupted
/// upload of the file (a kept manifest) is resumed, never bypassed. `listed` spares the HEAD where
/// a listing already says there is no object, or one of another size. `check`, if any, is made on
/// the whole-file digests of the upload's read before the object is completed ([`DigestCheck`]).
pub(crate) async fn upload_or_skip<C: S3Api>(
    engine: &Engine,
    s3: &C,
    cfg: &UploadConfig,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    listed: Listed,
    check: Option<&dyn DigestCheck>,
) -> Result<Sent, Error> {
    let s3 = engine.limit(s3);
    let run = Run::open(&s3, engine, cfg, progress, cancel, check).await?;
    // --no-overwrite: an object that is there and not proven to be the file is left alone.
    let refuse = |why: String| Error::NotReplaced {
        url: cfg.target.to_string(),
        why,
    };
    let no_overwrite = cfg.object.if_absent;
    let why = if run.kept {
        "an interrupted upload of it was resumed".to_owned()
    } else if listed == Listed::Absent {
        "new".to_owned()
    } else if let Listed::Object(n, _) = listed
        && n != run.src.len()
    {
        if no_overwrite {
            return Err(refuse(format!(
                "exists ({n} bytes, the file {})",
                run.src.len()
            )));
        }
        format!("the object has {n} bytes, the file {}", run.src.len())
    } else if let Some(proof) = by_listed_etag(&run, &listed).await {
        return Ok(proof);
    } else {
        // Boxed, as every step a small file's upload may not take (the HEAD here, the tags, the
        // multipart path, the read-back by HEAD): each file in progress holds its future, so
        // it holds only the steps it is in (issue 30: 15.9 against 19.2 MB at the heap's peak
        // with 128 small files in progress, heaptrack; docs/many-files.md).
        let proof = tokio::select! {
            p = Box::pin(crate::verify::prove(run.s3, &run.src, &cfg.target, cfg.part_size)) => p,
            () = cancel.cancelled() => return Err(Error::Interrupted),
        };
        let proof = match proof {
            // Upload-only credentials may not read the object: it cannot be checked, so it is
            // sent (a refused signature shows up on the write, with S3's reason).
            Err(Error::S3 { source, .. })
                if source.kind == crate::s3::S3ErrorKind::AccessDenied =>
            {
                tracing::info!(
                    "{}: the object cannot be read ({source}): sending the file",
                    cfg.target
                );
                crate::verify::Proof::Missing
            }
            p => p?,
        };
        match proof {
            crate::verify::Proof::Same { facts, how } => {
                return Ok(Sent::Skipped {
                    facts: Box::new(facts),
                    proof: how,
                });
            }
            crate::verify::Proof::Missing => "new".to_owned(),
            crate::verify::Proof::Differs { why } if no_overwrite => {
                return Err(refuse(format!("exists and is not this file ({why})")));
            }
            crate::verify::Proof::Differs { why } => why,
        }
    };
    if no_overwrite {
        // Tests act here: an object written after the key was found free.
        crate::seam::pause("absent").await;
    }
    let report = Box::pin(run.upload()).await?;
    Ok(Sent::Uploaded {
        report: Box::new(report),
        why,
    })
}

/// A file this upload would send in one PutObject, whose object the listing gives with its size
/// and a single-part ETag: proven without a HEAD when that ETag is the file's MD5 (see
/// [`crate::verify::by_listed_etag`]). `None`: not decided here (the HEAD decides).
async fn by_listed_etag<C: S3Api>(run: &Run<'_, C>, listed: &Listed) -> Option<Sent> {
    let Listed::Object(_, Some(etag)) = listed else {
        return None;
    };
    let single = matches!(
        Plan::new(run.src.len(), run.cfg.part_size),
        Ok(Plan::Single { .. })
    );
    if !single {
        return None;
    }
    let crate::verify::Proof::Same { facts, how } =
        crate::verify::by_listed_etag(&run.src, etag, run.held.as_ref().map(|h| &h.part)).await?
    else {
        return None;
    };
    Some(Sent::Skipped {
        facts: Box::new(facts),
        proof: how,
    })
}

impl<'a, C: S3Api> Run<'a, C> {
    /// Opens the file of `cfg` (a small one read whole and hashed for its one PutObject), with the
    /// byte budget for its bytes, and looks for a manifest an earlier run kept.
    async fn open(
        s3: &'a C,
        engine: &'a Engine,
        cfg: &'a UploadConfig,
        progress: &'a dyn Progress,
        cancel: &'a CancellationToken,
        check: Option<&'a dyn DigestCheck>,
    ) -> Result<Run<'a, C>, Error> {
        let started = Instant::now();
        let path = cfg.source.clone();
        let resume = cfg.resume.clone();
        let (endpoint, target) = (s3.endpoint_label(), cfg.target.clone());
        let (alg, formats) = (cfg.checksum, whole_file_formats(cfg, check));
        // One blocking step for the file (a small one read whole, and hashed there as its one
        // PutObject needs) and the manifest an earlier run may have kept: a tree's small files
        // take no other, and no step on the pool (issue 30: each hand-off between threads cost
        // more than hashing 4 KiB). The bytes a small file may be read into are counted in the
        // byte budget before they are read, as long as the file's upload runs.
        let mut budget = engine.reserve(crate::source::HELD_MAX).await;
        let (src, kept, hashed) = blocking(move || {
            let src = Source::open(&path)?;
            let hashed = src.held().map(|bytes| {
                let mut h = crate::hash::SingleHasher::new(alg, &formats);
                h.update(bytes);
                h.finish()
            });
            // No state directory: no manifest of an earlier run can be found.
            let dir = || resume.state_dir.manifests_named();
            let manifest = multipart::manifest_at(
                resume.manifest.as_deref(),
                dir,
                src.path(),
                &endpoint,
                &target,
            );
            let kept = manifest.is_ok_and(|p| p.exists());
            Ok::<_, Error>((Arc::new(src), kept, hashed))
        })
        .await?;
        let held = hashed.map(|(part, whole)| {
            budget.keep(src.len());
            Box::new(Held {
                part,
                whole,
                _budget: budget,
            })
        });
        Ok(Run {
            s3,
            engine,
            cfg,
            src,
            progress,
            cancel,
            started,
            check,
            kept,
            held,
        })
    }

    /// Writes the object, then the read-back and MD5 tag; fills in the timings.
    async fn upload(&self) -> Result<UploadReport, Error> {
        // Boxed: the pipeline's future type is deep, and callers' futures stay small.
        let result = Box::pin(self.write()).await;
        self.progress.finish();
        let mut report = result?;
        Box::pin(after_completion(self.s3, self.cfg, &mut report)).await?;
        report.seconds = self.started.elapsed().as_secs_f64();
        report.mib_per_s = report.size as f64 / (1024.0 * 1024.0) / report.seconds.max(1e-9);
        Ok(report)
    }
}

impl<C: S3Api> Run<'_, C> {
    /// Writes the object: one PutObject, unless the file needs parts or an earlier multipart
    /// upload of it is kept (then that one is resumed, never bypassed, so it cannot be orphaned).
    async fn write(&self) -> Result<UploadReport, Error> {
        let plan = Plan::new(self.src.len(), self.cfg.part_size)?;
        match plan {
            Plan::Single { .. } if !self.kept => single::put(self).await,
            _ => {
                let manifest = multipart::manifest_path(self).await?;
                Box::pin(multipart::upload(self, &manifest)).await
            }
        }
    }
}

/// Read-back and the MD5 tag, once the object exists.
async fn after_completion<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    report: &mut UploadReport,
) -> Result<(), Error> {
    let tags: Vec<(&str, String)> = cfg
        .file_hash_tag_names()
        .into_iter()
        .zip(cfg.file_hashes.iter())
        .filter_map(|(name, f)| report.file_hashes.get(*f).map(|v| (name, v.to_owned())))
        .collect();
    if !tags.is_empty() {
        let wanted: Vec<(&str, &str)> = tags.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let version = report.version_id.clone();
        let consequence = "the file hashes were not stored as tags";
        match crate::remote::tags::tag_values(
            s3,
            &cfg.target,
            version.as_deref(),
            &wanted,
            consequence,
        )
        .await
        {
            Ok(outcomes) => {
                report.file_hash_tags = tags
                    .iter()
                    .map(|(n, _)| (*n).to_owned())
                    .zip(outcomes)
                    .collect();
            }
            Err(e) => report.file_hash_tag_error = Some(e.to_string()),
        }
    }
    let Some(md5) = report.md5.clone() else {
        return Ok(());
    };
    if let Some(budget) = cfg.read_back {
        report.read_back_reads =
            Some(crate::remote::md5::read_back(s3, &cfg.target, &md5, budget).await?);
    }
    if let Some(name) = &cfg.md5_tag {
        let version = report.version_id.clone();
        match crate::remote::tags::tag_md5(s3, &cfg.target, version.as_deref(), name, &md5).await {
            Ok(outcome) => report.md5_tag = Some((name.clone(), outcome)),
            Err(e) => report.md5_tag_error = Some(e.to_string()),
        }
    }
    Ok(())
}

/// The object's read-back after its upload ([`crate::verify::after_upload_or_bytes`], against
/// the parts' `hashes` of `alg`). A request of it that failed (not a difference found) leaves the
/// object written but not proven: that error becomes `unproven(cause)`, which says what became of
/// the object and what to run.
async fn read_back<C: S3Api>(
    run: &Run<'_, C>,
    alg: crate::vocab::ChecksumAlgorithm,
    hashes: &[crate::vocab::PartHash],
    upload_id: Option<&str>,
    unproven: impl FnOnce(Error) -> Error,
) -> Result<crate::verify::AfterUpload, Error> {
    let cfg = run.cfg;
    crate::verify::after_upload_or_bytes(run.s3, &cfg.target, alg, hashes, upload_id, &cfg.source)
        .await
        .map_err(|e| match e {
            e @ Error::S3 { .. } => unproven(e),
            e => e,
        })
}

/// The whole-file formats an upload computes in its one read: `--file-hash`, and those its
/// [`DigestCheck`] needs (a tree file's ASC MHL history's formats, or the new generation's).
fn whole_file_formats(
    cfg: &UploadConfig,
    check: Option<&dyn DigestCheck>,
) -> Vec<crate::hash::FileHashFormat> {
    let mut f = cfg.file_hashes.clone();
    if let Some(check) = check {
        f.extend(check.formats().iter().copied());
    }
    f.sort();
    f.dedup();
    f
}

/// The file's modification time in nanoseconds since the epoch, as manifests record it.
pub(crate) fn mtime_ns(src: &Source) -> i64 {
    src.fingerprint()
        .mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Removes an upload's local state (manifest, lock, link in the state directory), or, with
/// `--keep-manifest`, leaves the manifest as a record.
pub(crate) fn forget(cfg: &UploadConfig, manifest: &Path) {
    crate::manifest::remove(cfg.resume.state_dir.manifests().ok().as_deref(), manifest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Limits;
    use crate::progress::Silent;
    use crate::s3::fake::FakeS3;
    use crate::vocab::ChecksumAlgorithm;
    use crate::vocab::MIB;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    fn data(len: u64, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn config(dir: &Path, file: PathBuf, concurrency: usize, trust: bool) -> UploadConfig {
        let mut cfg = UploadConfig::new(
            file,
            "s3://bkt/obj",
            5 * MIB,
            concurrency,
            ChecksumAlgorithm::Sha256,
        )
        .unwrap();
        cfg.resume.manifest = Some(dir.join("m.manifest"));
        cfg.resume.state_dir = crate::state::StateDir::at(dir.join("state"));
        cfg.resume.trust_manifest = trust;
        cfg
    }

    /// Runs an upload until it ends or the fake crashes; a crash drops the upload future with
    /// everything in flight, as a kill -9 would (no cleanup code runs).
    async fn run(fake: &FakeS3, cfg: &UploadConfig) -> Option<Result<UploadReport, Error>> {
        let cancel = CancellationToken::new();
        tokio::select! {
            r = upload(fake, cfg, &Silent, &cancel) => Some(r),
            () = fake.crashed() => None,
        }
    }

    /// `len` pseudo-random bytes, eight at a time (fast enough unoptimized for 100+ MiB).
    fn data_fast(len: u64, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len as usize + 8);
        while (out.len() as u64) < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len as usize);
        out
    }

    /// Every algorithm, the five S3 added in 2026 included.
    const ALGORITHMS: [ChecksumAlgorithm; 10] = ChecksumAlgorithm::ALL;

    /// The tree's question, file by file: a file already uploaded is skipped with one request, a
    /// same-size edit is sent again, a missing object is sent; for each algorithm and both layouts.
    #[tokio::test]
    async fn upload_or_skip_skips_only_what_is_proven() {
        for alg in ALGORITHMS {
            for len in [3 * MIB, 12 * MIB + 7] {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("f");
                let mut bytes = data_fast(len, len + alg as u64);
                std::fs::write(&file, &bytes).unwrap();
                let mut cfg = config(dir.path(), file.clone(), 4, false);
                cfg.resume.manifest = None;
                let fake = FakeS3::default();
                let engine = Engine::new(Limits::for_parts(4, cfg.part_size));
                let cancel = CancellationToken::new();
                let go = || {
                    upload_or_skip(
                        &engine,
                        &fake,
                        &cfg,
                        &Silent,
                        &cancel,
                        Listed::Unknown,
                        None,
                    )
                };
                let first = go().await.unwrap();
                assert!(
                    matches!(&first, Sent::Uploaded { why, .. } if why == "new"),
                    "{alg:?} {len}: {first:?}"
                );
                let before = fake.requests();
                let again = go().await.unwrap();
                assert!(
                    matches!(again, Sent::Skipped { .. }),
                    "{alg:?} {len}: {again:?}"
                );
                assert_eq!(
                    fake.requests() - before,
                    1,
                    "{alg:?} {len}: one HEAD proves it"
                );
                // One byte changed in place, same size: sent again, and the object is the new file.
                let at = (len / 2) as usize;
                bytes[at] ^= 0x01;
                std::fs::write(&file, &bytes).unwrap();
                let edited = go().await.unwrap();
                assert!(
                    matches!(&edited, Sent::Uploaded { why, .. } if why.contains("differs")),
                    "{alg:?} {len}: {edited:?}"
                );
                assert_eq!(fake.object("obj").unwrap(), bytes, "{alg:?} {len}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Reference model: whatever the sequence of "send parts / crash (with the part in flight
        /// stored or not) / the server loses a stored part / resume", for every checksum algorithm
        /// (CRC64NVME's full-object CRC combined over adopted, skipped and sent parts), with and
        /// without Content-MD5, with ListParts in pages of any size and a last part of any size,
        /// the object ends equal to the file, completed once, with every part exactly once, and
        /// no more parts sent than the file's, plus those in flight at each crash, plus those
        /// the server lost.
        #[test]
        fn resume_after_crashes_ends_with_every_part_exactly_once(
            parts in prop_oneof![3 => 2u64..8, 1 => 8u64..25],
            short in prop_oneof![0u64..5000, (5 * MIB - 5000)..(5 * MIB)],
            concurrency in 1usize..4,
            crashes in proptest::collection::vec(
                (0u32..10, any::<bool>(), proptest::option::of(0u32..64)),
                1..4,
            ),
            alg in proptest::sample::select(ALGORITHMS.to_vec()),
            content_md5 in any::<bool>(),
            page in proptest::option::of(1usize..5),
            trust in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("src.bin");
                let bytes = data_fast(parts * 5 * MIB - short, seed);
                std::fs::write(&file, &bytes).unwrap();
                let mut cfg = config(dir.path(), file, concurrency, trust);
                cfg.checksum = alg;
                cfg.content_md5 = content_md5;
                let fake = FakeS3::default();
                if let Some(n) = page {
                    fake.set_page_size(n);
                }
                let mut crashed = 0;
                let mut lost = 0;
                let mut finished = false;
                for (after, store, lose) in crashes {
                    fake.crash_after(after, store);
                    match run(&fake, &cfg).await {
                        None => crashed += 1,
                        Some(r) => {
                            r.unwrap();
                            finished = true;
                            break;
                        }
                    }
                    // Let the dropped run's last journal write land or not, like a killed process's.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    // The server loses a part it stored (recorded or not): it must be sent again.
                    let held = fake.held_parts();
                    if let Some(k) = lose.filter(|_| !held.is_empty()) {
                        lost += fake.lose_part(held[k as usize % held.len()]) as u64;
                    }
                }
                fake.disarm();
                if !finished {
                    // S3 is the truth: every part it holds is the file's (kept, or adopted when
                    // never recorded), on every page; exactly the others are sent.
                    let held = fake.held_parts().len() as u64;
                    let before = fake.part_uploads();
                    let r = run(&fake, &cfg).await.unwrap().unwrap();
                    assert_eq!(u64::from(r.parts_skipped), held, "every part S3 holds is kept");
                    assert_eq!(u64::from(r.parts_sent), parts - held, "exactly the parts S3 lacks are sent");
                    assert_eq!(u64::from(fake.part_uploads() - before), parts - held);
                    assert_eq!(r.resumed, crashed > 0);
                }
                assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]), "{alg} md5={content_md5}");
                assert_eq!(fake.completes(), 1);
                assert_eq!(fake.uploads_in_progress(), 0);
                let bound = parts + crashed * concurrency as u64 + lost;
                assert!(
                    u64::from(fake.part_uploads()) <= bound,
                    "{} part uploads for {parts} parts, {crashed} crashes at concurrency {concurrency}, {lost} lost",
                    fake.part_uploads()
                );
                assert!(!dir.path().join("m.manifest").exists());
            });
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn whole_file_hashes_of_many_parts_in_flight_at_once_are_the_files() {
        // Eight parts, four in flight and the pool hashing ahead: the whole-file hasher goes from
        // part to part in file order whatever order the parts finish in. The expected values are
        // computed with xxhash-rust and md-5 directly over the file, not with tally's hashers.
        use md5::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let bytes = data_fast(8 * 5 * MIB - 11, 21);
        std::fs::write(&file, &bytes).unwrap();
        let mut cfg = config(dir.path(), file, 4, false);
        cfg.file_hashes = vec![
            crate::hash::FileHashFormat::Xxh64,
            crate::hash::FileHashFormat::Md5,
        ];
        let fake = FakeS3::default();
        let r = run(&fake, &cfg).await.unwrap().unwrap();
        assert_eq!(r.parts, 8);
        assert_eq!(
            r.file_hashes.get(crate::hash::FileHashFormat::Xxh64),
            Some(format!("{:016x}", xxhash_rust::xxh64::xxh64(&bytes, 0)).as_str())
        );
        assert_eq!(
            r.file_hashes.get(crate::hash::FileHashFormat::Md5),
            Some(crate::vocab::hex(&md5::Md5::digest(&bytes)).as_str())
        );
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_part_the_server_lost_is_sent_again() {
        // Three of four parts recorded; the server then loses part 2 (recorded in the manifest).
        // The resume must not trust the manifest over ListParts: part 2 goes again.
        for trust in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("src.bin");
            let bytes = data_fast(4 * 5 * MIB - 1, 12);
            std::fs::write(&file, &bytes).unwrap();
            let cfg = config(dir.path(), file, 1, trust);
            let fake = FakeS3::default();
            fake.crash_after(3, false);
            assert!(run(&fake, &cfg).await.is_none());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            fake.disarm();
            assert_eq!(fake.lose_part(2), 1);
            let r = run(&fake, &cfg).await.unwrap().unwrap();
            assert_eq!(
                (r.parts_skipped, r.parts_sent),
                (2, 2),
                "trust={trust}: parts 2 and 4 sent"
            );
            assert_eq!(fake.part_uploads(), 4 + 2, "trust={trust}");
            assert_eq!(
                fake.object("obj").as_deref(),
                Some(&bytes[..]),
                "trust={trust}"
            );
        }
    }

    /// A server that kept a dropped copy of a part sent twice (Garage 2.5, `upload/reconcile.rs`)
    /// refuses the Complete with InvalidPart: the part is sent once more and the upload
    /// completed, in the run that sent it twice and in a later run that resumes it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_part_sent_twice_whose_dropped_copy_the_server_kept_is_sent_once_more() {
        for resumed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("src.bin");
            let bytes = data_fast(3 * 5 * MIB + 11, 13);
            std::fs::write(&file, &bytes).unwrap();
            let cfg = config(dir.path(), file, 2, false);
            let fake = FakeS3::default();
            fake.leave_dropped_copy(2);
            if resumed {
                // The run stops while it sends part 2 once more (its journal is whole by then).
                fake.crash_after(4, false);
                assert!(run(&fake, &cfg).await.is_none(), "the first run stopped");
                let journal = std::fs::read_to_string(dir.path().join("m.manifest")).unwrap();
                assert_eq!(
                    journal.matches("\"sent_twice\":true").count(),
                    1,
                    "{journal}"
                );
                fake.disarm();
            }
            let r = run(&fake, &cfg).await.unwrap().unwrap();
            assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]), "{resumed}");
            assert_eq!(fake.completes(), 1, "{resumed}");
            // Four parts, part 2 once more (twice when the first re-send was lost in the stop).
            let sent = 4 + 1 + u32::from(resumed);
            assert_eq!(fake.part_uploads(), sent, "resumed={resumed}: {r:?}");
            assert_eq!(fake.uploads_in_progress(), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resume_after_an_in_place_change_in_the_sampled_bytes_is_refused() {
        // The file keeps its size and modification time, but a byte of its first MiB (inside the
        // fingerprint's samples, in part 1, which S3 already holds) changed: resuming would mix
        // old and new bytes. Only the fingerprint can tell: it must refuse, completing nothing.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let mut bytes = data_fast(3 * 5 * MIB, 13);
        std::fs::write(&file, &bytes).unwrap();
        let cfg = config(dir.path(), file.clone(), 1, false);
        let fake = FakeS3::default();
        fake.crash_after(2, false);
        assert!(run(&fake, &cfg).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        fake.disarm();
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        bytes[1000] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let e = run(&fake, &cfg)
            .await
            .unwrap()
            .expect_err("the resume must be refused");
        assert!(matches!(e, Error::ResumeRefused { .. }), "{e}");
        assert!(e.to_string().contains("changed since upload"), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(fake.completes(), 0, "nothing completed");
        assert_eq!(fake.part_uploads(), 3, "nothing sent");
        assert_eq!(fake.uploads_in_progress(), 1, "the upload is kept");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resume_reads_every_page_of_list_parts() {
        // Six parts in S3 (five recorded, the sixth stored but never acknowledged), two a page:
        // the resume must see all six over three pages, adopt the sixth and send only the seventh.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let bytes = data_fast(7 * 5 * MIB - 3, 14);
        std::fs::write(&file, &bytes).unwrap();
        let cfg = config(dir.path(), file, 1, false);
        let fake = FakeS3::default();
        fake.set_page_size(2);
        fake.crash_after(5, true);
        assert!(run(&fake, &cfg).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        fake.disarm();
        let pages = fake.list_parts_pages();
        let r = run(&fake, &cfg).await.unwrap().unwrap();
        assert_eq!(
            fake.list_parts_pages() - pages,
            3,
            "six parts at two a page"
        );
        assert_eq!((r.parts_skipped, r.parts_sent), (6, 1), "{r:?}");
        assert_eq!(fake.part_uploads(), 7, "no part sent twice");
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resume_re_hashes_skipped_parts_unless_trusted() {
        // Part 2 changes on disk after the crash, keeping size and time, outside the fingerprint's
        // samples. The default resume re-hashes it and sends it again; --trust-manifest does not
        // look, and keeps S3's old part 2: the documented trade-off.
        for trust in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("src.bin");
            let mut bytes = data(3 * 5 * MIB, 9);
            std::fs::write(&file, &bytes).unwrap();
            let cfg = config(dir.path(), file.clone(), 1, trust);
            let fake = FakeS3::default();
            fake.crash_after(2, false);
            assert!(run(&fake, &cfg).await.is_none());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
            bytes[6 * MIB as usize] ^= 1;
            std::fs::write(&file, &bytes).unwrap();
            let f = std::fs::File::options().write(true).open(&file).unwrap();
            f.set_modified(mtime).unwrap();
            drop(f);
            fake.disarm();
            let r = run(&fake, &cfg)
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("trust={trust}: {e}"));
            if trust {
                assert_eq!(
                    r.parts_skipped, 2,
                    "trusted: parts 1 and 2 taken from the manifest"
                );
                assert_ne!(fake.object("obj").as_deref(), Some(&bytes[..]));
            } else {
                assert_eq!(r.parts_skipped, 1, "part 1 verified, part 2 sent again");
                assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
            }
        }
    }

    /// The manifest as a run killed between CompleteMultipartUpload and removing it leaves it:
    /// every part recorded, no completion line.
    fn strip_completion(manifest: &Path) {
        let text = std::fs::read_to_string(manifest).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.last().unwrap().contains("completed"), "{text}");
        let kept = lines[..lines.len() - 1].join("\n") + "\n";
        std::fs::write(manifest, kept).unwrap();
    }

    /// An upload of an 18 MiB file in 5 MiB parts (its manifest at `--manifest` when `named`,
    /// else under the state directory) interrupted after two parts: its settings, the fake and
    /// the bytes.
    async fn interrupted_18_mib(
        dir: &Path,
        seed: u64,
        named: bool,
    ) -> (UploadConfig, FakeS3, Vec<u8>) {
        let file = dir.join("src.bin");
        let bytes = data(18 * MIB, seed);
        std::fs::write(&file, &bytes).unwrap();
        let mut cfg = config(dir, file, 1, false);
        if !named {
            cfg.resume.manifest = None;
        }
        let fake = FakeS3::default();
        fake.crash_after(2, true);
        assert!(run(&fake, &cfg).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        fake.disarm();
        (cfg, fake, bytes)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_kept_upload_is_resumed_even_when_the_file_now_fits_one_put() {
        // Interrupted with 5 MiB parts; run again at the default part size, which would take the
        // whole 18 MiB file in one PutObject and orphan the kept upload.
        let dir = tempfile::tempdir().unwrap();
        let (cfg, fake, bytes) = interrupted_18_mib(dir.path(), 3, true).await;
        let mut again = cfg.clone();
        again.part_size = 100 * MIB;
        let r = run(&fake, &again).await.unwrap().unwrap();
        assert_eq!(r.method, Method::Multipart, "resumed, not a single PUT");
        assert!(r.resumed && r.parts_skipped >= 2, "{r:?}");
        assert_eq!(r.part_size, 5 * MIB, "the manifest's part size");
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.completes(), 1);
        assert_eq!(fake.uploads_in_progress(), 0, "nothing left billed");
        assert!(!dir.path().join("m.manifest").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_kept_upload_found_by_its_name_in_the_state_directory_is_resumed() {
        // As above, with no --manifest: the manifest is written under the state directory's
        // name for this file and key, and the run that would send one PutObject finds it there.
        let dir = tempfile::tempdir().unwrap();
        let (cfg, fake, bytes) = interrupted_18_mib(dir.path(), 6, false).await;
        let manifests = dir.path().join("state");
        let kept = || std::fs::read_dir(&manifests).map_or(0, |d| d.count());
        assert!(kept() >= 1, "the interrupted run kept its manifest");
        let mut again = cfg.clone();
        again.part_size = 100 * MIB;
        let r = run(&fake, &again).await.unwrap().unwrap();
        assert_eq!(r.method, Method::Multipart, "resumed, not a single PUT");
        assert!(r.resumed && r.parts_skipped >= 2, "{r:?}");
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.uploads_in_progress(), 0, "nothing left billed");
        assert_eq!(kept(), 0, "its manifest is gone");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restart_to_one_put_aborts_the_kept_upload_and_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let bytes = data(18 * MIB, 4);
        std::fs::write(&file, &bytes).unwrap();
        let cfg = config(dir.path(), file.clone(), 1, false);
        let fake = FakeS3::default();
        fake.crash_after(1, true);
        assert!(run(&fake, &cfg).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        fake.disarm();
        assert_eq!(fake.uploads_in_progress(), 1);
        let mut again = cfg.clone();
        again.part_size = 100 * MIB;
        again.resume.restart = true;
        let r = run(&fake, &again).await.unwrap().unwrap();
        assert_eq!(r.method, Method::SinglePut);
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.uploads_in_progress(), 0, "the kept upload was aborted");
        assert_eq!(fake.completes(), 0);
        for left in ["m.manifest", "m.lock"] {
            assert!(!dir.path().join(left).exists(), "{left} left behind");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_completed_before_its_manifest_was_removed_is_done_without_sending() {
        for trust in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("src.bin");
            let bytes = data(3 * 5 * MIB + 7, 5);
            std::fs::write(&file, &bytes).unwrap();
            let mut cfg = config(dir.path(), file.clone(), 2, trust);
            cfg.resume.keep_manifest = true;
            let fake = FakeS3::default();
            let first = run(&fake, &cfg).await.unwrap().unwrap();
            strip_completion(&dir.path().join("m.manifest"));
            let (sent, completes) = (fake.part_uploads(), fake.completes());
            cfg.resume.keep_manifest = false;
            let r = run(&fake, &cfg).await.unwrap().unwrap();
            assert_eq!((r.parts_sent, r.parts_skipped), (0, 4), "trust={trust}");
            assert!(r.resumed);
            assert_eq!(r.checksum, first.checksum);
            assert_eq!(fake.part_uploads(), sent, "no part sent again");
            assert_eq!(fake.completes(), completes, "not completed again");
            assert!(!dir.path().join("m.manifest").exists(), "manifest settled");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replaced_object_is_not_taken_for_the_completed_upload() {
        // Same state as above, but another writer replaced the object since: the upload is gone
        // and the object is not this file, so a new upload is made.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let bytes = data(2 * 5 * MIB + 1, 6);
        std::fs::write(&file, &bytes).unwrap();
        let mut cfg = config(dir.path(), file.clone(), 2, false);
        cfg.resume.keep_manifest = true;
        let fake = FakeS3::default();
        run(&fake, &cfg).await.unwrap().unwrap();
        strip_completion(&dir.path().join("m.manifest"));
        fake.replace_object("obj", b"someone else's bytes".to_vec());
        cfg.resume.keep_manifest = false;
        let r = run(&fake, &cfg).await.unwrap().unwrap();
        assert_eq!(r.parts_sent, 3, "uploaded again");
        assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]));
        assert_eq!(fake.uploads_in_progress(), 0);
    }

    /// Files `f{i}.bin` in `dir` of the lengths given (contents seeded from `seed + i`), each
    /// with its upload to `s3://bkt/f{i}` in 5 MiB parts, `concurrency` requests, `alg`, and its
    /// own manifest: the configs and the contents.
    fn files(
        dir: &Path,
        lens: impl Iterator<Item = u64>,
        seed: u64,
        concurrency: usize,
        alg: ChecksumAlgorithm,
    ) -> (Vec<UploadConfig>, Vec<Vec<u8>>) {
        lens.enumerate()
            .map(|(i, len)| {
                let file = dir.join(format!("f{i}.bin"));
                let bytes = data(len, seed + i as u64);
                std::fs::write(&file, &bytes).unwrap();
                let mut cfg =
                    UploadConfig::new(file, &format!("s3://bkt/f{i}"), 5 * MIB, concurrency, alg)
                        .unwrap();
                cfg.resume.manifest = Some(dir.join(format!("m{i}.manifest")));
                cfg.resume.state_dir = crate::state::StateDir::at(dir.join("state"));
                (cfg, bytes)
            })
            .unzip()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_files_share_one_budget_and_small_files_go_together() {
        // Twelve small files (one PutObject each) and one of four parts; each file may send eight
        // requests at once, the command three. The fake holds requests until four are in flight
        // (for 5 s at most): three arrive together, and the fourth never does.
        let dir = tempfile::tempdir().unwrap();
        let lens = (0..13u64).map(|i| if i == 12 { 4 * 5 * MIB - 9 } else { 1000 + i });
        let (cfgs, contents) = files(dir.path(), lens, 100, 8, ChecksumAlgorithm::Sha256);
        let fake = FakeS3::default();
        fake.gather(4, std::time::Duration::from_secs(5));
        let limits = Limits {
            concurrency: 3,
            bytes_ahead: 12 * MIB,
        };
        let cancel = CancellationToken::new();
        let reports = upload_many(&fake, limits, &cfgs, &Silent, &cancel).await;
        for (i, (r, bytes)) in reports.into_iter().zip(&contents).enumerate() {
            let r = r.unwrap_or_else(|e| panic!("file {i}: {e}"));
            assert_eq!(r.key, format!("f{i}"), "results in the order given");
            assert_eq!(fake.object(&format!("f{i}")).as_deref(), Some(&bytes[..]));
        }
        assert_eq!(
            fake.peak_in_flight(),
            3,
            "three requests in flight together across files, never more"
        );
        assert_eq!(fake.uploads_in_progress(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_sent_in_one_put_hold_no_budget_while_s3_answers() {
        // Six files of 2 MiB, one PutObject each, under a byte budget of one file: the bytes are
        // held only while a file is hashed, so all six PutObjects are in flight together (the fake
        // holds them until six are, for 60 s at most). Were a file's budget held until S3
        // answered, one would go at a time.
        let dir = tempfile::tempdir().unwrap();
        let lens = std::iter::repeat_n(2 * MIB, 6);
        let (cfgs, contents) = files(dir.path(), lens, 200, 6, ChecksumAlgorithm::Crc32c);
        let fake = FakeS3::default();
        fake.gather(6, std::time::Duration::from_secs(60));
        let limits = Limits {
            concurrency: 6,
            bytes_ahead: 2 * MIB,
        };
        let cancel = CancellationToken::new();
        let reports = upload_many(&fake, limits, &cfgs, &Silent, &cancel).await;
        for (i, (r, bytes)) in reports.into_iter().zip(&contents).enumerate() {
            let r = r.unwrap_or_else(|e| panic!("file {i}: {e}"));
            assert_eq!(r.method, Method::SinglePut);
            assert_eq!(fake.object(&format!("f{i}")).as_deref(), Some(&bytes[..]));
        }
        assert_eq!(
            fake.peak_in_flight(),
            6,
            "every PutObject in flight together under a budget of one file"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_sent_in_one_put_leaves_nothing_in_the_state_directory() {
        // Looking for a manifest an earlier run kept makes no folder: only a multipart upload's
        // own manifest needs one. A small file (read whole) and a larger one (mapped).
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [("small.bin", 4096), ("larger.bin", 3 * MIB)] {
            let file = dir.path().join(name);
            let bytes = data(len, 5);
            std::fs::write(&file, &bytes).unwrap();
            let mut cfg = config(dir.path(), file, 1, false);
            cfg.resume.manifest = None;
            let fake = FakeS3::default();
            let r = run(&fake, &cfg).await.unwrap().unwrap();
            assert_eq!(r.method, Method::SinglePut, "{name}");
            assert_eq!(fake.object("obj").as_deref(), Some(&bytes[..]), "{name}");
        }
        assert!(!dir.path().join("state").exists(), "no state folder made");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_cut_short_after_it_was_hashed_is_reported_changed_and_not_stored() {
        // The file is hashed, then cut short when its PutObject is sent and before the body is
        // read: the body (read again from the file) ends early, the request fails, and the error
        // says the file changed.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        std::fs::write(&file, data(3 * MIB, 9)).unwrap();
        let cfg = config(dir.path(), file.clone(), 1, false);
        let cut = file.clone();
        let s3 = crate::s3::tamper::Tamper::new(FakeS3::default()).put_sent(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&cut)
                .unwrap()
                .set_len(MIB)
                .unwrap();
        });
        let cancel = CancellationToken::new();
        let err = upload(&s3, &cfg, &Silent, &cancel).await.unwrap_err();
        assert!(
            matches!(err, Error::SourceChanged { .. }),
            "reported as a changed file: {err}"
        );
        assert_eq!(s3.inner().object("obj"), None, "nothing stored");
    }
}
