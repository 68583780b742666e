//! A multipart upload: find or create it, send the parts not yet in S3, complete, report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Outcome};
use crate::exec::blocking;
use crate::hash::{self, WholeFile};
use crate::manifest::{self, Lock};
use crate::s3::S3Api;
use crate::seam;
use crate::vocab::ObjectUrl;

use super::resume::Begun;
use super::session::{Session, abort, stopped};
use super::{Run, UploadReport, complete, single};

/// Where this upload's manifest lives (the state directory's manifests folder created if
/// needed): see [`manifest_at`].
pub(crate) async fn manifest_path<C: S3Api>(run: &Run<'_, C>) -> Result<PathBuf, Error> {
    let (t, e) = (run.cfg.target.clone(), run.s3.endpoint_label());
    let abs = run.src.path().to_owned();
    let resume = run.cfg.resume.clone();
    blocking(move || {
        let dir = || resume.state_dir.manifests();
        manifest_at(resume.manifest.as_deref(), dir, &abs, &e, &t)
    })
    .await
}

/// The one rule for where the manifest of an upload of the file at `abs` (canonical) to `target`
/// through `endpoint` is: `named` (`--manifest PATH`), else its name for this source and
/// destination in the manifests folder `dir()` gives. The writer ([`manifest_path`]) and the
/// lookup before a single PutObject (`Run::open`) both use it: were they to differ, a kept
/// upload would be bypassed and orphaned.
pub(crate) fn manifest_at(
    named: Option<&Path>,
    dir: impl FnOnce() -> Result<PathBuf, Error>,
    abs: &Path,
    endpoint: &str,
    target: &ObjectUrl,
) -> Result<PathBuf, Error> {
    match named {
        Some(p) => Ok(p.to_owned()),
        None => Ok(manifest::default_path(
            &dir()?,
            abs,
            endpoint,
            &target.bucket,
            &target.key,
        )),
    }
}

/// Drives the multipart upload whose manifest is (or will be) `manifest_path`, holding its lock.
pub(crate) async fn upload<C: S3Api>(
    run: &Run<'_, C>,
    manifest_path: &Path,
) -> Result<UploadReport, Error> {
    let _lock = {
        let p = manifest_path.to_owned();
        blocking(move || Lock::acquire(&p)).await?
    };
    let begun = tokio::select! {
        r = Session::begin(run, manifest_path) => r?,
        () = run.cancel.cancelled() => return Err(Error::Interrupted),
    };
    let start = match begun {
        Begun::Parts(start) => start,
        // Nothing kept, or --restart discarded it, and the file fits one PutObject.
        Begun::Single => {
            let put = single::put(run).await;
            // The lock (still held) goes with the discarded upload's state.
            let (cfg, p) = (run.cfg.clone(), manifest_path.to_owned());
            blocking(move || super::forget(&cfg, &p)).await;
            return put;
        }
        Begun::Done(report) => return finished_earlier(run, *report).await,
    };
    let target = &run.cfg.target;
    let upload_id = start.upload_id.clone();
    run.progress.start(start.plan.len(), start.plan.count());
    for d in &start.done {
        run.progress.part_done(d.part.len);
    }
    let first_send = std::sync::OnceLock::new();
    let sent = tokio::select! {
        r = start.send(run, &first_send, whole_file_hasher(run)) => r,
        () = run.cancel.cancelled() => Err(Error::Interrupted),
    };
    let keep = |cause: Error| kept(target, &upload_id, manifest_path, cause);
    let (mut done, whole) = match sent {
        Ok((new, whole)) => {
            let mut all = start.done.clone();
            all.extend(new);
            (all, whole)
        }
        Err(e @ Error::Manifest { .. }) => {
            // Without a journal the upload cannot be resumed: do not leave it billed.
            return Err(abort(run.s3, target, upload_id.clone(), e).await);
        }
        Err(e) => return Err(keep(e)),
    };
    done.sort_by_key(|d| d.part.number);
    check_digests(run, &upload_id, whole.as_ref(), manifest_path).await?;
    seam::pause("complete").await;
    // A stop asked for after the last part: the upload is kept, whole, and the same command
    // completes it (what "stopping" promised), rather than completed behind the user's back.
    if run.cancel.is_cancelled() {
        return Err(keep(Error::Interrupted));
    }
    // Once CompleteMultipartUpload is sent it is not cancelled: its outcome must be known.
    let (local, reply) = start.complete(run, &mut done).await.map_err(keep)?;
    let (md5, file_hashes) = whole.map_or((None, hash::FileHashes::default()), |w| {
        (w.md5.map(|m| crate::vocab::hex(&m)), w.hashes)
    });
    let mut report = complete::finish(run, &start, &done, local, reply, file_hashes).await?;
    report.md5 = md5;
    report.seconds_to_first_send = first_send
        .get()
        .map(|t: &Instant| t.duration_since(run.started).as_secs_f64());
    Ok(report)
}

/// The caller's [`super::DigestCheck`] (a tree's ASC MHL check), on the digests of the upload's
/// own read: a file that fails it is not completed, its upload is aborted and its manifest removed (nothing left).
async fn check_digests<C: S3Api>(
    run: &Run<'_, C>,
    upload_id: &str,
    whole: Option<&WholeFile>,
    manifest_path: &Path,
) -> Result<(), Error> {
    if let (Some(check), Some(w)) = (run.check, whole)
        && let Err(mismatch) = check.check(&w.hashes)
    {
        let e = abort(run.s3, &run.cfg.target, upload_id.to_owned(), mismatch).await;
        // The manifest goes only with the upload: if the abort failed, it stays, so the upload is
        // not orphaned (a later run checks the file again and aborts it), and the error says so.
        if let Error::UploadFailed { outcome, .. } = &e
            && matches!(**outcome, crate::error::Outcome::Aborted)
        {
            let (cfg, p) = (run.cfg.clone(), manifest_path.to_owned());
            blocking(move || super::forget(&cfg, &p)).await;
        }
        return Err(e);
    }
    Ok(())
}

/// The hasher of the whole file, fed in each part's own chunk loop as the parts go by in order
/// (`send.rs`, `Chain`): the MD5 (`--md5-tag`, `--read-back`) and the `--file-hash` and the caller's check's
/// formats in one pass; none if nothing is asked for.
fn whole_file_hasher<C>(run: &Run<'_, C>) -> Option<hash::FileHasher> {
    let cfg = run.cfg;
    let mut h = hash::FileHasher::new(&super::whole_file_formats(run.cfg, run.check));
    if cfg.md5_tag.is_some() || cfg.read_back.is_some() {
        h = h.with_md5();
    }
    (!h.is_idle()).then_some(h)
}

/// The report of an upload an earlier run had completed (found by this one): the whole-file
/// hashes asked for are computed now, reading the file once.
async fn finished_earlier<C: S3Api>(
    run: &Run<'_, C>,
    mut report: UploadReport,
) -> Result<UploadReport, Error> {
    let formats = super::whole_file_formats(run.cfg, run.check);
    if formats.iter().any(|f| report.file_hashes.get(*f).is_none()) {
        let src = run.src.clone();
        report.file_hashes = crate::exec::on_pool(move || {
            let mut h = hash::FileHasher::new(&formats);
            h.update(src.bytes());
            h.finish().hashes
        })
        .await;
    }
    Ok(report)
}

/// The error for an upload stopped by `cause` and kept, with its manifest, for resuming.
pub(crate) fn kept(target: &ObjectUrl, upload_id: &str, manifest: &Path, cause: Error) -> Error {
    let manifest = manifest.to_owned();
    stopped(target, upload_id, Outcome::Kept { manifest }, cause)
}
