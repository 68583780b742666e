//! `tally md5`: the MD5 of an object already in S3, without a local copy.

use tokio_util::sync::CancellationToken;

use super::output::{Output, on_workers, watch_signals};
use crate::cli::Md5Args;
use crate::error::{EXIT_ERROR, EXIT_OK, EXIT_UNFINISHED};
use crate::remote::md5::{self as remote_md5, Md5Options, Md5Report, Md5Source};
use crate::remote::tags::TagOutcome;
use crate::s3::SdkS3;
use crate::vocab::ObjectUrl;

/// `tally md5 s3://...`.
pub(crate) fn run(args: &Md5Args, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    let (target, conn) = (args.target.clone(), args.connection.to_connection());
    // The object's bytes as they are read (its size is known once HEAD answers).
    let progress = out.progress();
    progress.start_reading(0, "md5 of the object");
    let opts = Md5Options {
        state: args.state.clone(),
        time_limit: args.time_limit,
        tag: args.tag.clone(),
        force_read: false,
        meter: progress.meter(),
    };
    let result = on_workers(runtime, async move {
        let target = ObjectUrl::parse(&target)?;
        let s3 = SdkS3::connect(&conn).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
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
    out.finish(result.map(|r| (print_md5(&r), r))).max(code)
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
