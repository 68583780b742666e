//! Where a multipart upload starts: a kept upload found in its manifest and confirmed by S3, an
//! upload an earlier run already completed, or a new one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt as _, stream};

use crate::error::Error;
use crate::exec::{blocking, hash_ahead, on_pool};
use crate::hash;
use crate::manifest::{self, Header, Journal, PartRecord};
use crate::plan::{Part, Plan};
use crate::s3::S3ErrorKind;
use crate::s3::{HeldPart, S3Api};
use crate::vocab::{ChecksumAlgorithm, PartHash};

use super::send::part_record;
use super::session::{DonePart, Session, abort};
use super::{Run, UploadReport, complete, forget, mtime_ns};

/// How a multipart run begins.
pub(crate) enum Begun {
    /// Send the parts not in `Session::done`, then complete.
    Parts(Session),
    /// No upload is kept (or `--restart` discarded it) and the file fits one PutObject.
    Single,
    /// An earlier run completed this upload but was stopped before removing its manifest: the
    /// object in S3 is this file. Nothing is sent.
    Done(Box<UploadReport>),
}

/// Finds where to start: resumes the upload in a matching manifest (after checking the file and
/// asking S3 what it holds), or creates a new upload and its manifest.
pub(crate) async fn begin<C: S3Api>(
    run: &Run<'_, C>,
    manifest_path: &Path,
) -> Result<Begun, Error> {
    let (cfg, src) = (run.cfg, &run.src);
    let endpoint = run.s3.endpoint_label();
    let mut loaded = load_manifest(run, manifest_path).await?;
    if cfg.resume.restart
        && let Some(old) = loaded.take()
    {
        restart(run, old, manifest_path).await?;
    }
    let fingerprint = {
        let src = src.clone();
        blocking(move || manifest::fingerprint(src.bytes())).await
    };
    if let Some(old) = loaded
        && let Some(begun) = resume_kept(run, old, &fingerprint, &endpoint, manifest_path).await?
    {
        return Ok(begun);
    }
    start_new(run, fingerprint, endpoint, manifest_path).await
}

/// Reads the manifest, if there is one. A manifest whose header cannot be read names no upload
/// to abort: --restart (the remedy its error names) removes it and starts over.
async fn load_manifest<C: S3Api>(
    run: &Run<'_, C>,
    manifest_path: &Path,
) -> Result<Option<manifest::Loaded>, Error> {
    let path = manifest_path.to_owned();
    match blocking(move || manifest::load(&path)).await {
        Err(Error::ManifestUnreadable { .. }) if run.cfg.resume.restart => {
            remove_manifest(manifest_path).await?;
            run.progress.note(&format!(
                "--restart: removed the unreadable manifest {} (a multipart upload it named, if any, is kept in S3: `tally uploads` lists it)",
                manifest_path.display()
            ));
            Ok(None)
        }
        r => r,
    }
}

/// Removes the manifest at `manifest_path`.
async fn remove_manifest(manifest_path: &Path) -> Result<(), Error> {
    let path = manifest_path.to_owned();
    blocking(move || std::fs::remove_file(&path))
        .await
        .map_err(|e| Error::Manifest {
            path: manifest_path.to_owned(),
            why: e.to_string(),
        })
}

/// `--restart`: aborts the kept upload (already gone is fine) and discards its manifest.
async fn restart<C: S3Api>(
    run: &Run<'_, C>,
    old: manifest::Loaded,
    manifest_path: &Path,
) -> Result<(), Error> {
    let id = old.header.upload_id;
    match run.s3.abort_multipart(&run.cfg.target, &id).await {
        Ok(()) => {}
        Err(e) if e.kind == S3ErrorKind::NotFound => {}
        Err(e) => return Err(Error::s3("AbortMultipartUpload", None, Some(&id))(e)),
    }
    remove_manifest(manifest_path).await?;
    run.progress.note(&format!(
        "--restart: aborted upload {id} and discarded its manifest"
    ));
    Ok(())
}

/// Resumes the upload the manifest keeps, after checking it is this file's: its parts that S3
/// holds are done. `Begun::Done` when an earlier run already completed it; `None` when it no
/// longer exists (the manifest is removed and a new upload starts).
async fn resume_kept<C: S3Api>(
    run: &Run<'_, C>,
    old: manifest::Loaded,
    fingerprint: &str,
    endpoint: &str,
    manifest_path: &Path,
) -> Result<Option<Begun>, Error> {
    let (s3, cfg, src) = (run.s3, run.cfg, &run.src);
    check_header(&old.header, run, fingerprint, endpoint, manifest_path)?;
    let alg = old.header.checksum;
    let plan = Plan::new(src.len(), old.header.part_size)?;
    let id = old.header.upload_id.clone();
    // A part size left to tally (auto) takes the upload's own without a word.
    let given = cfg.part_size != crate::plan::AUTO;
    if alg != cfg.checksum
        || (given && plan.part_size() != Plan::new(src.len(), cfg.part_size)?.part_size())
    {
        run.progress.note(&format!(
            "resuming upload {id} with its own part size ({} bytes) and checksum ({alg}), not the ones given; --restart starts over with yours",
            plan.part_size()
        ));
    }
    match s3.list_parts(&cfg.target, &id, alg).await {
        Ok(held) => resume_parts(run, &old, plan, &held, manifest_path)
            .await
            .map(Some),
        Err(e) if e.kind == S3ErrorKind::NotFound => {
            if let Some(report) = already_complete(run, &old, &plan, manifest_path).await? {
                return Ok(Some(Begun::Done(Box::new(report))));
            }
            run.progress.note(&format!(
                "upload {id} from the manifest no longer exists in S3 (aborted, or expired by a lifecycle rule): starting a new upload"
            ));
            let path = manifest_path.to_owned();
            blocking(move || std::fs::remove_file(path)).await.ok();
            Ok(None)
        }
        Err(e) => Err(Error::s3("ListParts", None, Some(&id))(e)),
    }
}

/// The kept upload exists: reconciles the manifest's parts with the ones S3 `held`, and starts
/// from there.
async fn resume_parts<C: S3Api>(
    run: &Run<'_, C>,
    old: &manifest::Loaded,
    plan: Plan,
    held: &[HeldPart],
    manifest_path: &Path,
) -> Result<Begun, Error> {
    let alg = old.header.checksum;
    let id = old.header.upload_id.clone();
    let journal = {
        let p = manifest_path.to_owned();
        Arc::new(blocking(move || Journal::open(&p)).await?)
    };
    let done = reconcile(run, plan.parts(), alg, &old.parts, held, Some(&journal)).await?;
    run.progress.note(&format!(
        "resuming upload {id}: {} of {} parts already in S3{} (manifest {})",
        done.len(),
        plan.count(),
        if old.damaged_lines > 0 {
            format!(", {} damaged manifest lines skipped", old.damaged_lines)
        } else {
            String::new()
        },
        manifest_path.display()
    ));
    Ok(Begun::Parts(Session {
        upload_id: id,
        journal: Some(journal),
        alg,
        plan,
        done,
        resumed: true,
        manifest: manifest_path.to_owned(),
        slice: 1..=plan.count(),
    }))
}

/// No upload is kept: a single PutObject if the file fits one, otherwise a new multipart upload
/// and its manifest (the upload is aborted if the manifest cannot be written).
async fn start_new<C: S3Api>(
    run: &Run<'_, C>,
    fingerprint: String,
    endpoint: String,
    manifest_path: &Path,
) -> Result<Begun, Error> {
    let (s3, cfg, src) = (run.s3, run.cfg, &run.src);
    let target = &cfg.target;
    let alg = cfg.checksum;
    let plan = Plan::new(src.len(), cfg.part_size)?;
    if let Plan::Single { .. } = plan {
        return Ok(Begun::Single);
    }
    let settings = cfg.object.for_file(&cfg.source);
    let upload_id = super::session::create(s3, target, alg, &settings).await?;
    let header = Header {
        format: manifest::FORMAT,
        source: src.path().to_owned(),
        size: src.len(),
        mtime_ns: mtime_ns(src),
        fingerprint,
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        endpoint,
        upload_id: upload_id.clone(),
        part_size: plan.part_size(),
        checksum: alg,
        object: cfg.object.clone(),
    };
    let path = manifest_path.to_owned();
    let custom = cfg.resume.manifest.is_some();
    let resume = cfg.resume.clone();
    let created = blocking(move || {
        let journal = Journal::create(&path, &header)?;
        if custom {
            manifest::register(&resume.state_dir.manifests()?, &path)?;
        }
        Ok(journal)
    });
    let journal = match created.await {
        Ok(j) => Arc::new(j),
        Err(e) => return Err(abort(s3, target, upload_id, e).await),
    };
    run.progress.note(&format!(
        "upload {upload_id} started; manifest {} (run the same command to resume if interrupted)",
        manifest_path.display()
    ));
    Ok(Begun::Parts(Session {
        upload_id,
        journal: Some(journal),
        alg,
        plan,
        done: Vec::new(),
        resumed: false,
        manifest: manifest_path.to_owned(),
        slice: 1..=plan.count(),
    }))
}

/// Refuses to resume from a manifest that belongs to another file or destination, or whose file
/// changed since: completing would mix old and new bytes.
fn check_header<C: S3Api>(
    h: &Header,
    run: &Run<'_, C>,
    fingerprint: &str,
    endpoint: &str,
    manifest: &Path,
) -> Result<(), Error> {
    let (target, src) = (&run.cfg.target, &run.src);
    if h.bucket != target.bucket
        || h.key != target.key
        || h.endpoint != endpoint
        || h.source != src.path()
    {
        return Err(Error::ResumeRefused {
            manifest: manifest.to_owned(),
            why: format!(
                "it belongs to another upload ({} to s3://{}/{} at {}): pass the right --manifest, or --restart to discard it",
                h.source.display(),
                h.bucket,
                h.key,
                h.endpoint
            ),
        });
    }
    let changed = h.object.differences(&run.cfg.object);
    if !changed.is_empty() {
        return Err(Error::ResumeRefused {
            manifest: manifest.to_owned(),
            why: format!(
                "the interrupted upload of {} was started with other object settings ({}): run the same command with the same settings, or add --restart",
                src.path().display(),
                changed.join("; ")
            ),
        });
    }
    if h.size != src.len() || h.mtime_ns != mtime_ns(src) || h.fingerprint != fingerprint {
        return Err(Error::ResumeRefused {
            manifest: manifest.to_owned(),
            why: format!(
                "{} changed since upload {} was interrupted (size, modification time or content); nothing was completed: run with --restart to upload it again from the start",
                src.path().display(),
                h.upload_id
            ),
        });
    }
    Ok(())
}

/// The manifest's upload no longer exists. If a run completed it and was stopped before removing
/// the manifest, the object in S3 is this file: its size and checksum equal what the manifest's
/// parts predict (re-hashed from the file unless `--trust-manifest`). Then the manifest is settled
/// and the upload reported done, with nothing sent. `None` when that cannot be shown.
async fn already_complete<C: S3Api>(
    run: &Run<'_, C>,
    old: &manifest::Loaded,
    plan: &Plan,
    manifest_path: &Path,
) -> Result<Option<UploadReport>, Error> {
    let alg = old.header.checksum;
    let Some(recorded) = recorded_parts(old, plan) else {
        return Ok(None);
    };
    let head = match run.s3.head_object(&run.cfg.target, None).await {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::s3("HeadObject", None, None)(e)),
    };
    let Some(remote) = head.checksum.clone().filter(|_| head.size == plan.len()) else {
        return Ok(None);
    };
    let Some(hashes) = recorded_hashes(run, alg, &recorded).await else {
        return Ok(None);
    };
    let local = hash::multipart_checksum(alg, alg.multipart_type(), &hashes);
    if !crate::compare::checksum(&local.value, Some(&remote.value)).matched() {
        return Ok(None);
    }
    run.progress.note(&format!(
        "upload {} had already completed (the run that completed it stopped before removing its manifest): s3://{}/{} has this file's size and checksum; nothing sent",
        old.header.upload_id, run.cfg.target.bucket, run.cfg.target.key
    ));
    let done: Vec<DonePart> = recorded
        .into_iter()
        .zip(hashes)
        .map(|((part, r), hash)| DonePart {
            part,
            hash,
            checksum_echoed: false,
            sent_twice: r.sent_twice,
            etag: r.etag,
        })
        .collect();
    let journal = {
        let p = manifest_path.to_owned();
        Arc::new(blocking(move || Journal::open(&p)).await?)
    };
    let start = Session {
        upload_id: old.header.upload_id.clone(),
        journal: Some(journal),
        alg,
        plan: *plan,
        done: done.clone(),
        resumed: true,
        manifest: manifest_path.to_owned(),
        slice: 1..=plan.count(),
    };
    let reply = complete::reply_from_head(head);
    let report = complete::finish(run, &start, &done, local, reply, Default::default()).await;
    if report.is_err() {
        // Do not leave the manifest of an upload that no longer exists behind a failed check.
        let (cfg, p) = (run.cfg.clone(), manifest_path.to_owned());
        blocking(move || forget(&cfg, &p)).await;
    }
    report.map(Some)
}

/// Each part of `plan` with its manifest record, or `None` if a part was never recorded (then
/// no run could have completed this upload).
fn recorded_parts(old: &manifest::Loaded, plan: &Plan) -> Option<Vec<(Part, PartRecord)>> {
    let records: HashMap<u32, &PartRecord> = old.parts.iter().map(|r| (r.number, r)).collect();
    let mut recorded = Vec::new();
    for part in plan.parts() {
        match records.get(&part.number) {
            Some(r) if r.offset == part.offset && r.len == part.len => {
                recorded.push((part, (*r).clone()));
            }
            _ => return None,
        }
    }
    Some(recorded)
}

/// The hashes of the `recorded` parts: from the manifest under `--trust-manifest` (`None` if a
/// record lacks one), otherwise re-hashed from the file.
async fn recorded_hashes<C: S3Api>(
    run: &Run<'_, C>,
    alg: ChecksumAlgorithm,
    recorded: &[(Part, PartRecord)],
) -> Option<Vec<PartHash>> {
    let hashes: Vec<Option<PartHash>> = if run.cfg.resume.trust_manifest {
        recorded.iter().map(|(_, r)| record_hash(r, alg)).collect()
    } else {
        stream::iter(recorded.iter().cloned())
            .map(|(part, r)| {
                let body = run.src.part(&part);
                let md5 = !r.md5.is_empty();
                async move { Some(on_pool(move || hash::hash_part(alg, md5, &body)).await) }
            })
            .buffered(hash_ahead())
            .collect()
            .await
    };
    hashes.into_iter().collect::<Option<Vec<PartHash>>>()
}

/// Decides, for each of `parts`, whether S3 already holds it equal to the local file. S3 is the
/// truth: a recorded part it lacks is sent again; a part it holds that was not recorded (a crash
/// between send and record, or a part sent by another `tally shard run` worker) is adopted when
/// its checksum matches the local bytes, and recorded in `journal` if there is one; a part whose
/// checksum differs is sent again. Unless `--trust-manifest`, recorded parts are re-hashed from
/// the file.
pub(crate) async fn reconcile<C: S3Api>(
    run: &Run<'_, C>,
    parts: impl IntoIterator<Item = Part>,
    alg: ChecksumAlgorithm,
    records: &[PartRecord],
    held: &[HeldPart],
    journal: Option<&Arc<Journal>>,
) -> Result<Vec<DonePart>, Error> {
    let held: HashMap<u32, &HeldPart> = held.iter().map(|p| (p.number, p)).collect();
    let records: HashMap<u32, &PartRecord> = records.iter().map(|r| (r.number, r)).collect();
    let mut done = Vec::new();
    let mut to_hash = Vec::new();
    for part in parts {
        let Some(h) = held.get(&part.number).filter(|h| h.size == part.len) else {
            continue;
        };
        let record = records.get(&part.number).filter(|r| {
            let md5 = Some(r.md5.as_str()).filter(|m| !m.is_empty());
            r.offset == part.offset && r.len == part.len && held_matches(h, &r.checksum, md5)
        });
        match record.and_then(|r| record_hash(r, alg)) {
            Some(hash) if run.cfg.resume.trust_manifest => done.push(DonePart {
                part,
                hash,
                etag: h.etag.clone(),
                checksum_echoed: h.checksum.is_some(),
                sent_twice: record.is_some_and(|r| r.sent_twice),
            }),
            _ => to_hash.push((part, (*h).clone(), record.map(|r| r.sent_twice))),
        }
    }
    // `recorded`: whether the journal has the part, and then whether it went out twice.
    let checked: Vec<(Part, HeldPart, Option<bool>, PartHash)> = stream::iter(to_hash)
        .map(|(part, h, recorded)| {
            let body = run.src.part(&part);
            let md5 = h.checksum.is_none();
            async move {
                let hash = on_pool(move || hash::hash_part(alg, md5, &body)).await;
                (part, h, recorded, hash)
            }
        })
        .buffered(hash_ahead())
        .collect()
        .await;
    for (part, h, recorded, hash) in checked {
        if !held_matches(&h, &hash.checksum.base64(), hash.md5_hex().as_deref()) {
            run.progress.note(&format!(
                "part {} in S3 differs from the local bytes {}..{}: sending it again",
                part.number,
                part.offset,
                part.offset + part.len
            ));
            continue;
        }
        if let Some(j) = journal.filter(|_| recorded.is_none()) {
            let rec = part_record(&part, &hash, &h.etag);
            let j = j.clone();
            blocking(move || j.record_part(&rec)).await?;
        }
        done.push(DonePart {
            part,
            hash,
            etag: h.etag.clone(),
            checksum_echoed: h.checksum.is_some(),
            sent_twice: recorded.unwrap_or(false),
        });
    }
    Ok(done)
}

/// Whether a part S3 holds has this checksum (or, when S3 does not list checksums, this MD5 as ETag).
fn held_matches(h: &HeldPart, checksum_b64: &str, md5_hex: Option<&str>) -> bool {
    match (&h.checksum, md5_hex) {
        (Some(c), _) => c == checksum_b64,
        (None, Some(m)) => h.etag.as_str() == m,
        (None, None) => false,
    }
}

/// A part's hash as its manifest line recorded it, if the line is well formed for `alg`.
fn record_hash(r: &PartRecord, alg: ChecksumAlgorithm) -> Option<PartHash> {
    use base64::Engine as _;
    let checksum = base64::engine::general_purpose::STANDARD
        .decode(&r.checksum)
        .ok()?;
    if checksum.len() != alg.digest_len() {
        return None;
    }
    // An empty MD5 means none was computed (the default); anything else must be one.
    let md5 = if r.md5.is_empty() {
        None
    } else {
        let mut m = [0u8; 16];
        if r.md5.len() != 32 {
            return None;
        }
        for (i, b) in m.iter_mut().enumerate() {
            *b = u8::from_str_radix(r.md5.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(m)
    };
    Some(PartHash {
        checksum: crate::vocab::Digest::from_bytes(checksum),
        md5,
        len: r.len,
    })
}

/// A failed CreateMultipartUpload: a 400 for one of the algorithms S3 added in 2026 is the server
/// refusing that algorithm (Garage: InvalidRequest; LocalStack: unsupported), said in one line.
pub(super) fn create_refused(alg: crate::vocab::ChecksumAlgorithm, e: crate::s3::S3Error) -> Error {
    let refused = alg.is_recent()
        && e.status == Some(400)
        && matches!(e.kind, S3ErrorKind::Other | S3ErrorKind::Unsupported);
    if refused {
        Error::ChecksumRefused {
            algorithm: alg,
            source: e,
        }
    } else {
        Error::s3("CreateMultipartUpload", None, None)(e)
    }
}
