//! `tally uploads` and `tally abort`: the multipart uploads in progress, and their end.

use super::job::Run;
use super::output::human_bytes;
use crate::cli::AbortArgs;
use crate::error::Error;
use crate::uploads::{self, Aborted, UploadInfo};
use crate::vocab::ObjectUrl;

/// A validated `tally abort`.
pub(crate) struct Abort {
    target: ObjectUrl,
    upload_id: Option<String>,
    older_than: Option<std::time::Duration>,
}

/// `tally abort s3://...`'s flags checked.
pub(crate) fn job(args: &AbortArgs) -> Result<Abort, Error> {
    Ok(Abort {
        target: ObjectUrl::parse(&args.target)?,
        upload_id: args.upload_id.clone(),
        older_than: args.all_older_than,
    })
}

/// `tally uploads s3://BUCKET[/PREFIX]`.
pub(crate) fn list(target: &ObjectUrl, run: &Run) -> i32 {
    let result = run
        .runtime
        .block_on(uploads::list(run.s3, target, run.state));
    run.out.finish(result.map(|r| (print_uploads(&r), r)))
}

/// `tally abort s3://...`.
pub(crate) fn abort(job: &Abort, run: &Run) -> i32 {
    let aborted = uploads::abort(
        run.s3,
        &job.target,
        job.upload_id.as_deref(),
        job.older_than,
        run.state,
    );
    let result = run.runtime.block_on(aborted);
    run.out.finish(result.map(|r| (print_aborted(&r), r)))
}

fn print_uploads(list: &[UploadInfo]) -> String {
    if list.is_empty() {
        return "no multipart uploads in progress\n".into();
    }
    let mut s = String::new();
    for u in list {
        s += &format!(
            "{}  {}  started {}  {} parts ({})  manifest: {}\n",
            u.key,
            u.upload_id,
            u.initiated.as_deref().unwrap_or("?"),
            u.parts.map_or("?".into(), |n| n.to_string()),
            u.bytes.map_or("?".into(), human_bytes),
            u.manifest.as_deref().unwrap_or("none")
        );
    }
    s
}

fn print_aborted(list: &[Aborted]) -> String {
    if list.is_empty() {
        return "nothing to abort\n".into();
    }
    list.iter()
        .map(|a| {
            format!(
                "aborted {} {}{}\n",
                a.key,
                a.upload_id,
                a.manifest_removed
                    .as_deref()
                    .map(|m| format!(" (removed manifest {m})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}
