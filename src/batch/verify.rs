//! `tally verify DIR s3://BUCKET/PREFIX/`: every file of the tree against the object at PREFIX +
//! its relative path, as `tally verify FILE` compares one, many files at a time under one budget.
//!
//! Objects under the prefix that the tree does not have are not looked for (that needs a listing).

use std::path::PathBuf;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, TreeReport, stops_everything};
use crate::engine::{Engine, Limits};
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, Error};
use crate::exec::blocking;
use crate::progress::Progress;
use crate::s3::S3Api;
use crate::s3::S3ErrorKind;
use crate::tree::{FileEntry, WalkOptions};
use crate::vocab::ObjectUrl;

use crate::verify::{Verdict, VerifyOptions, verify};

/// Files compared at once.
pub(crate) const FILES_IN_FLIGHT: usize = 32;

/// Requests in flight at once across the files.
const REQUESTS_IN_FLIGHT: usize = 64;

/// What `tally verify DIR s3://BUCKET/PREFIX/` compares.
#[derive(Debug, Clone)]
pub(crate) struct TreeVerify {
    /// The local directory.
    pub root: PathBuf,
    /// Bucket and key prefix (empty or ending in `/`).
    pub prefix: ObjectUrl,
    /// What the walk takes.
    pub walk: WalkOptions,
    /// How each file is compared.
    pub opts: VerifyOptions,
}

/// Verifies every file under `cfg.root` against its object under `cfg.prefix`, handing each
/// outcome to `on_line` as it finishes.
pub(crate) async fn verify_tree<C: S3Api>(
    s3: &C,
    cfg: &TreeVerify,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let engine = Engine::new(Limits::for_parts(
        REQUESTS_IN_FLIGHT,
        crate::remote::ranged::PIECE,
    ));
    let limited = engine.limit(s3);
    let walk = {
        let (root, opts) = (cfg.root.clone(), cfg.walk.clone());
        blocking(move || crate::tree::walk(&root, opts)).await?
    };
    let (prefix, opts) = (&cfg.prefix, &cfg.opts);
    let stop = cancel.child_token();
    let mut report = TreeReport::new(prefix);
    let (limited, stop_ref) = (&limited, &stop);
    let fatal = crate::batch::run::run(
        futures::StreamExt::map(walk, Ok),
        FILES_IN_FLIGHT,
        &stop,
        progress,
        &mut report,
        on_line,
        |entry| one_file(limited, prefix, entry, opts, stop_ref),
    )
    .await;
    let bytes = report.bytes;
    report.end(started, bytes, fatal, cancel)
}

async fn one_file<C: S3Api>(
    s3: &C,
    prefix: &ObjectUrl,
    entry: FileEntry,
    opts: &VerifyOptions,
    stop: &CancellationToken,
) -> Result<FileLine, (FileLine, Error)> {
    let obj = ObjectUrl {
        bucket: prefix.bucket.clone(),
        key: format!("{}{}", prefix.key, entry.rel),
    };
    let mut line = FileLine::for_entry(&entry, &obj.key);
    let result = tokio::select! {
        r = verify(s3, &entry.path, &obj, opts) => r,
        () = stop.cancelled() => Err(Error::Interrupted),
    };
    match result {
        Ok(r) => {
            line.checksum = r.checksum.as_ref().map(|c| {
                format!(
                    "{} {}",
                    r.checksum_algorithm.as_deref().unwrap_or(""),
                    c.remote
                )
            });
            line.etag = r.etag.as_ref().map(|e| e.remote.clone());
            match r.verdict {
                Verdict::Identical => {
                    line.action = Action::Identical;
                    line.reason = Some(format!("{}: {}", r.method, r.why));
                }
                Verdict::Differs => {
                    line.action = Action::Differs;
                    line.exit_code = EXIT_MISMATCH;
                    line.reason = Some(if !r.size.matches {
                        format!(
                            "the object has {} bytes, the file {}",
                            r.size.remote, r.size.local
                        )
                    } else if r.differing_parts.is_empty() {
                        "the object's checksum or ETag differs from the file's".into()
                    } else {
                        let parts: Vec<String> = r
                            .differing_parts
                            .iter()
                            .take(10)
                            .map(|d| d.number.to_string())
                            .collect();
                        format!(
                            "{} of {} parts differ: {}{}",
                            r.differing_parts.len(),
                            r.parts,
                            parts.join(", "),
                            if r.differing_parts.len() > 10 {
                                ", ..."
                            } else {
                                ""
                            }
                        )
                    });
                }
            }
        }
        Err(Error::S3 { source, .. })
            if source.kind == S3ErrorKind::NotFound
                && source.code.as_deref() != Some("NoSuchBucket") =>
        {
            line.reason = Some(format!("no object at {obj}"));
            line.exit_code = EXIT_ERROR;
        }
        Err(e) => {
            line.reason = Some(crate::redact::redact(&e.to_string()));
            line.exit_code = e.exit_code();
            if stops_everything(&e) {
                return Err((line, e));
            }
        }
    }
    Ok(line)
}
