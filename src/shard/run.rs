//! `tally shard run`: one worker sends its slice of the plan's parts.
//!
//! The worker drives `tally upload`'s multipart session ([`crate::upload::session`]): it joins the
//! plan's upload ([`Session::join`]: the slice's parts S3 already holds are re-hashed from the
//! file and kept only when S3's checksum is the local one) and sends the others
//! ([`Session::send`]: hashed once, sent with their checksum for S3 to verify, each reply checked). A worker never
//! aborts the upload, whatever happens to it: the other workers are using it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::UploadConfig;
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::exec::blocking;
use crate::plan::{Part, Plan};
use crate::progress::Progress;
use crate::s3::S3Api;
use crate::s3::S3ErrorKind;
use crate::source::Source;
use crate::upload::Run;
use crate::upload::session::{DonePart, Session};

use super::{PlanAt, ShardError, ShardPlan};

/// What one worker did (printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The shared upload.
    pub upload_id: String,
    /// This worker's slice, 0-based.
    pub index: u32,
    /// Where the index came from (`--index`, or the scheduler's variable).
    pub index_from: String,
    /// The plan's number of slices.
    pub shards: u32,
    /// The slice's first part number.
    pub first_part: u32,
    /// The slice's last part number.
    pub last_part: u32,
    /// The slice's bytes.
    pub bytes: u64,
    /// Parts this run sent.
    pub parts_sent: u32,
    /// Parts S3 already held with this file's checksums (an earlier run of this slice): not sent.
    pub parts_skipped: u32,
    /// Parts sent whose checksum S3 echoed back equal to the local one.
    pub part_checksums_matched: u32,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Throughput of the slice in MiB/s.
    pub mib_per_s: f64,
}

impl RunReport {
    /// The text report.
    pub(crate) fn text(&self) -> String {
        format!(
            "slice {} of {} (parts {}-{}, {} bytes) of s3://{}/{}: {} parts sent, {} already in S3 with this file's checksums; {:.1} s, {:.1} MiB/s\n",
            self.index,
            self.shards,
            self.first_part,
            self.last_part,
            self.bytes,
            self.bucket,
            self.key,
            self.parts_sent,
            self.parts_skipped,
            self.seconds,
            self.mib_per_s
        )
    }
}

/// The settings of one worker.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    /// Where the plan is.
    pub at: PlanAt,
    /// The plan.
    pub plan: ShardPlan,
    /// The slice.
    pub assigned: super::Assigned,
    /// The file, when not at the plan's path (`--file`).
    pub file: Option<PathBuf>,
    /// Parts in flight at most.
    pub concurrency: usize,
}

/// Sends slice `w.assigned.index` of the plan's upload. Refuses another endpoint, and a file
/// whose size or fingerprint is not the plan's, before sending anything.
pub(crate) async fn run<C: S3Api>(
    s3: &C,
    w: &Worker,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let plan = &w.plan;
    let index = w.assigned.index;
    same_endpoint(s3, plan)?;
    let part_plan = plan.part_plan(&w.at)?;
    let (file, src) = open_checked(w).await?;
    let mut cfg = UploadConfig::new(
        file.clone(),
        &plan.target().to_string(),
        plan.part_size,
        w.concurrency,
        plan.checksum,
    )?;
    cfg.target = plan.target();
    let engine = Engine::new(Limits::for_parts(w.concurrency, plan.part_size));
    let limited = engine.limit(s3);
    let run = Run {
        s3: &limited,
        engine: &engine,
        cfg: &cfg,
        src: Arc::new(src),
        progress,
        cancel,
        started,
        check: None,
        // A shard sends its slice of the plan's upload: its manifest is the plan, not this.
        kept: false,
        held: None,
    };
    let slice = plan.slice(index);
    let parts: Vec<_> = part_plan
        .parts()
        .filter(|p| slice.contains(&p.number))
        .collect();
    let bytes: u64 = parts.iter().map(|p| p.len).sum();
    let start = start_slice(&run, w, part_plan, &parts).await?;
    let sent = send_slice(&run, &start, bytes, parts.len() as u32)
        .await
        .map_err(|e| kept(plan, index, e))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunReport {
        bucket: plan.bucket.clone(),
        key: plan.key.clone(),
        upload_id: plan.upload_id.clone(),
        index,
        index_from: w.assigned.from.to_owned(),
        shards: plan.shards,
        first_part: *slice.start(),
        last_part: *slice.end(),
        bytes,
        parts_sent: sent.len() as u32,
        parts_skipped: start.done.len() as u32,
        part_checksums_matched: sent.iter().filter(|d| d.checksum_echoed).count() as u32,
        seconds,
        mib_per_s: bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9),
    })
}

/// Opens the worker's file (its own path, or the plan's) and checks it is the planned one.
async fn open_checked(w: &Worker) -> Result<(PathBuf, Source), Error> {
    let file = w.file.clone().unwrap_or_else(|| w.plan.source.clone());
    let src = {
        let (file, plan) = (file.clone(), w.plan.clone());
        blocking(move || {
            let src = Source::open(&file)?;
            super::plan::check_file(&plan, &src, &file)?;
            Ok::<_, Error>(src)
        })
        .await?
    };
    Ok((file, src))
}

/// Where the slice starts: its `parts` S3 already holds with this file's checksums are done (not
/// sent again), the others are to send.
async fn start_slice<C: S3Api>(
    run: &Run<'_, C>,
    w: &Worker,
    part_plan: Plan,
    parts: &[Part],
) -> Result<Session, Error> {
    let (plan, index, progress) = (&w.plan, w.assigned.index, run.progress);
    let slice = plan.slice(index);
    let held = match run
        .s3
        .list_parts(&run.cfg.target, &plan.upload_id, plan.checksum)
        .await
    {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => return Err(gone(plan)),
        Err(e) => return Err(Error::s3("ListParts", None, Some(&plan.upload_id))(e)),
    };
    let session = tokio::select! {
        r = Session::join(run, &plan.upload_id, part_plan, plan.checksum, slice, &held) => r?,
        () = run.cancel.cancelled() => return Err(Error::Interrupted),
    };
    let done = &session.done;
    if !done.is_empty() {
        progress.note(&format!(
            "slice {index}: {} of its {} parts already in S3 with this file's checksums: not sent again",
            done.len(),
            parts.len()
        ));
    }
    Ok(session)
}

/// Sends the slice's parts not yet done through the engine's pipeline, with progress.
async fn send_slice<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    bytes: u64,
    parts: u32,
) -> Result<Vec<DonePart>, Error> {
    let progress = run.progress;
    progress.start(bytes, parts);
    for d in &start.done {
        progress.part_done(d.part.len);
    }
    let first_send = OnceLock::new();
    let sent = tokio::select! {
        r = start.send(run, &first_send, None) => r.map(|(done, _)| done),
        () = run.cancel.cancelled() => Err(Error::Interrupted),
    };
    progress.finish();
    let mut sent = sent?;
    // The finisher completes from S3's listing, which does not say which parts went twice.
    let twice: Vec<u32> = sent
        .iter()
        .filter(|d| d.sent_twice)
        .map(|d| d.part.number)
        .collect();
    if !twice.is_empty() {
        progress.note(&format!(
            "part(s) {twice:?} went out twice (hedged, or resent by the HTTP client): sending \
             them once more, so that a server keeping the dropped copy holds a whole one last"
        ));
        tokio::select! {
            r = start.settle(run, &mut sent) => r?,
            () = run.cancel.cancelled() => return Err(Error::Interrupted),
        };
    }
    Ok(sent)
}

/// Refuses a plan made against another endpoint: its upload id means nothing here.
pub(crate) fn same_endpoint<C: S3Api>(s3: &C, plan: &ShardPlan) -> Result<(), ShardError> {
    let here = s3.endpoint_label();
    if here != plan.endpoint {
        return Err(ShardError::OtherEndpoint {
            planned: plan.endpoint.clone(),
            here,
        });
    }
    Ok(())
}

/// The plan's upload no longer exists.
pub(crate) fn gone(plan: &ShardPlan) -> Error {
    ShardError::UploadGone {
        upload_id: plan.upload_id.clone(),
        bucket: plan.bucket.clone(),
        key: plan.key.clone(),
    }
    .into()
}

/// A slice stopped by `cause`: the upload is kept for the slice to be run again.
fn kept(plan: &ShardPlan, index: u32, cause: Error) -> Error {
    ShardError::SliceStopped {
        index,
        upload_id: plan.upload_id.clone(),
        source: Box::new(cause),
    }
    .into()
}
