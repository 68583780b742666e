//! `tally md5`: the MD5 of an object already in S3, without a local copy.

use super::job::Run;
use super::output::on_workers;
use crate::cli::Md5Args;
use crate::error::{EXIT_ERROR, EXIT_OK, EXIT_UNFINISHED, Error};
use crate::remote::md5::{self as remote_md5, Md5Options, Md5Report, Md5Source};
use crate::remote::tags::TagOutcome;
use crate::vocab::ObjectUrl;

/// A validated `tally md5`.
pub(crate) struct Job {
    target: ObjectUrl,
    opts: Md5Options,
}

/// `tally md5 s3://...`'s flags checked.
pub(crate) fn job(args: &Md5Args) -> Result<Job, Error> {
    Ok(Job {
        target: ObjectUrl::parse(&args.target)?,
        opts: Md5Options {
            state: args.state.clone(),
            time_limit: args.time_limit,
            tag: args.tag.clone(),
            force_read: false,
            meter: None,
        },
    })
}

/// `tally md5 s3://...`.
pub(crate) fn run(job: Job, run: &Run) -> i32 {
    // The object's bytes as they are read (its size is known once HEAD answers).
    let progress = run.out.progress();
    progress.start_reading(0, "md5 of the object");
    let Job { target, opts } = job;
    let opts = Md5Options {
        meter: progress.meter(),
        ..opts
    };
    let (s3, cancel) = (run.s3.clone(), run.cancel.clone());
    let result = on_workers(run.runtime, async move {
        remote_md5::remote_md5(&s3, &target, &opts, &cancel).await
    });
    progress.finish();
    let code = match &result {
        Ok(r) if !r.finished => EXIT_UNFINISHED,
        Ok(r) if r.tag_error.is_some() => EXIT_ERROR,
        _ => EXIT_OK,
    };
    if let Ok(Md5Report {
        tag_error: Some(e), ..
    }) = &result
    {
        eprintln!("tally: error: {e}");
    }
    run.out.finish(result.map(|r| (print_md5(&r), r))).max(code)
}

fn print_md5(r: &Md5Report) -> String {
    let url = crate::printable::url(&r.bucket, &r.key);
    let Some(md5) = &r.md5 else {
        let kept = r.state_file.as_deref().map_or(
            "no --state was given, so nothing is kept: run again with --state FILE to be able to continue".into(),
            |p| format!("state saved in {}: run the same command again to continue", crate::printable::path(p)),
        );
        return format!(
            "not finished: {} of {} bytes hashed ({:.1} MiB/s); {kept}\n",
            r.offset, r.size, r.mib_per_s,
        );
    };
    let mut s = format!("{md5}  {url}\n");
    if r.source == Md5Source::Etag {
        s += "  from the ETag: a single-part object whose ETag is its MD5 (nothing read)\n";
    } else {
        s += &format!(
            "  read {} bytes{} in {:.2} s ({:.1} MiB/s)\n",
            r.offset - r.resumed_from,
            if r.resumed_from > 0 {
                format!(" (continued from byte {})", r.resumed_from)
            } else {
                String::new()
            },
            r.seconds,
            r.mib_per_s
        );
    }
    if let Some((name, outcome)) = &r.tag {
        s += &match outcome {
            TagOutcome::Added => format!("  tag {name}={md5} added (other tags kept)\n"),
            TagOutcome::AlreadyPresent => {
                format!("  tag {name}={md5} already present: nothing written\n")
            }
            TagOutcome::Replaced { old } => {
                format!("  tag {name} replaced: was {old}, now {md5}\n")
            }
        };
    }
    s
}
