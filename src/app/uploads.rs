//! `tally uploads` and `tally abort`: the multipart uploads in progress, and their end.

use super::output::{Output, human_bytes};
use crate::cli::{AbortArgs, UploadsArgs};
use crate::s3::SdkS3;
use crate::state::StateDir;
use crate::uploads::{self, Aborted, UploadInfo};
use crate::vocab::ObjectUrl;

/// `tally uploads s3://BUCKET[/PREFIX]`.
pub(crate) fn list(args: &UploadsArgs, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    let result = runtime.block_on(async {
        let target = ObjectUrl::parse(&args.target)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        uploads::list(&s3, &target, &StateDir::from_env()).await
    });
    out.finish(result.map(|r| (print_uploads(&r), r)))
}

/// `tally abort s3://...`.
pub(crate) fn abort(args: &AbortArgs, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    let result = runtime.block_on(async {
        let target = ObjectUrl::parse(&args.target)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let state = StateDir::from_env();
        uploads::abort(
            &s3,
            &target,
            args.upload_id.as_deref(),
            args.all_older_than,
            &state,
        )
        .await
    });
    out.finish(result.map(|r| (print_aborted(&r), r)))
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
