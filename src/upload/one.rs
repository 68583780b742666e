//! `tally upload FILE s3://BUCKET/KEY`: like a tree's file, the upload is skipped when the object
//! is already proven to be the file (`--force` sends it anyway), and `--no-overwrite` leaves an
//! object that is not the file alone.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::UploadConfig;
use crate::engine::{Engine, Limits};
use crate::error::Error;
use crate::progress::Progress;
use crate::s3::S3Api;

use super::{Listed, Sent, UploadReport};

/// A single-file upload that sent nothing: the object is already the file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SkippedReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Bytes of the file (and of the object).
    pub size: u64,
    /// Always true: nothing was sent.
    pub skipped: bool,
    /// What proved the object identical to the file.
    pub proof: String,
    /// The object's checksum as S3 reports it (`ALGORITHM value`), when it has one.
    pub checksum: Option<String>,
    /// The object's ETag.
    pub etag: Option<String>,
    /// The object's version, on versioned buckets.
    pub version_id: Option<String>,
}

impl SkippedReport {
    /// The text report.
    pub(crate) fn text(&self) -> String {
        format!(
            "s3://{}/{} is already this file ({} bytes), proven identical: {}; nothing sent (--force sends it again)\n",
            self.bucket, self.key, self.size, self.proof
        )
    }
}

/// What a single-file upload did.
#[derive(Debug)]
pub(crate) enum One {
    /// Sent.
    Uploaded(Box<UploadReport>),
    /// Nothing sent: the object is the file.
    Skipped(SkippedReport),
}

/// Uploads `cfg.source` to `cfg.target` unless the object there is proven to be the file (one
/// HEAD; the file is hashed only when an object of its size is there); `force` sends it anyway.
pub(crate) async fn upload_one<C: S3Api>(
    s3: &C,
    cfg: &UploadConfig,
    force: bool,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<One, Error> {
    if force {
        let report = super::upload(s3, cfg, progress, cancel).await?;
        return Ok(One::Uploaded(Box::new(report)));
    }
    // A file that would go as a multipart upload needs the state directory for its manifest:
    // one that cannot be written stops the run before any request, the HEAD included.
    let (source, resume, part_size) = (cfg.source.clone(), cfg.resume.clone(), cfg.part_size);
    crate::exec::blocking(move || {
        let multipart = std::fs::metadata(&source).is_ok_and(|m| {
            matches!(
                crate::plan::Plan::new(m.len(), part_size),
                Ok(crate::plan::Plan::Multipart { .. })
            )
        });
        if multipart && resume.manifest.is_none() {
            resume.state_dir.manifests().map(drop)
        } else {
            Ok(())
        }
    })
    .await?;
    let engine = Engine::new(Limits::for_parts(cfg.concurrency, cfg.part_size));
    let sent =
        super::upload_or_skip(&engine, s3, cfg, progress, cancel, Listed::Unknown, None).await?;
    Ok(match sent {
        Sent::Uploaded { report, .. } => One::Uploaded(report),
        Sent::Skipped { facts, proof } => {
            progress.finish();
            One::Skipped(SkippedReport {
                bucket: cfg.target.bucket.clone(),
                key: cfg.target.key.clone(),
                size: facts.size,
                skipped: true,
                proof,
                checksum: facts
                    .checksum
                    .as_ref()
                    .map(|c| format!("{} {}", c.algorithm, c.value)),
                etag: facts.etag.as_ref().map(|e| e.as_str().to_owned()),
                version_id: facts.version_id.clone(),
            })
        }
    })
}
