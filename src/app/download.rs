//! `tally download`: one object, or every object under a prefix, each part checked.

use tokio_util::sync::CancellationToken;

use super::output::{Output, human_bytes, watch_signals};
use crate::cli::DownloadArgs;
use crate::download::{self, DownloadOptions, DownloadReport};
use crate::error::Error;
use crate::s3::SdkS3;
use crate::vocab::{ObjectUrl, is_prefix};

/// `tally download s3://... FILE|DIR`.
pub(crate) fn run(args: &DownloadArgs, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    if ObjectUrl::parse(&args.source).is_ok_and(|u| is_prefix(&u.key)) {
        if args.dryrun {
            return runtime.block_on(super::dryrun::download(args, out));
        }
        return runtime.block_on(download_tree(args, out));
    }
    if args.dryrun {
        return runtime.block_on(super::dryrun::download_file(args, out));
    }
    if args.tree.any() {
        return out.finish::<()>(Err(Error::Usage(
            "--include and --exclude choose the objects under a prefix: give a prefix ending in /"
                .into(),
        )));
    }
    if args.mhl {
        return out.finish::<()>(Err(Error::Usage(
            "--mhl writes an ASC MHL generation for a downloaded folder: give a prefix ending in /"
                .into(),
        )));
    }
    let result = runtime.block_on(download(args, out));
    out.finish(result.map(|r| (print_download(&r), r)))
}

async fn download(args: &DownloadArgs, out: &Output) -> Result<DownloadReport, Error> {
    let target = ObjectUrl::parse(&args.source)?;
    let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
    let opts = DownloadOptions {
        force: args.force,
        concurrency: args.concurrency,
        filters: Default::default(),
        hedge: args.hedge,
    };
    let progress = out.progress();
    // Ctrl-C / SIGTERM stop it as they stop a prefix: the parts recorded are kept for a resume.
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    tokio::select! {
        r = download::download(&s3, &target, &args.dest, &opts, progress.as_ref()) => r,
        () = cancel.cancelled() => Err(download::interrupted(&target, &args.dest)),
    }
}

/// `tally download s3://BUCKET/PREFIX/ DIR/`.
async fn download_tree(args: &DownloadArgs, out: &Output) -> i32 {
    let run = async {
        let prefix = ObjectUrl::parse(&args.source)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let opts = DownloadOptions {
            force: args.force,
            concurrency: args.concurrency,
            filters: args.tree.download_filters()?,
            hedge: args.hedge,
        };
        let progress = out.progress();
        let on_line = out.tree_lines();
        let mut report = crate::batch::download::download_tree(
            &s3,
            &prefix,
            &args.dest,
            &opts,
            progress.as_ref(),
            &cancel,
            &on_line,
        )
        .await?;
        if report.complete {
            // A tree carrying an ASC MHL history is checked against it once it is all here.
            let state = if args.mhl {
                Some(crate::state::StateDir::from_env().manifests()?)
            } else {
                None
            };
            let generation = state.as_deref().map(|d| (&prefix, d));
            crate::batch::custody_check::check_folder(
                &args.dest,
                generation,
                &mut report,
                &on_line,
            )
            .await?;
        }
        Ok(report)
    };
    let result = run.await;
    out.finish_tree(
        result,
        "every object is downloaded, each checked as its line says (--json)",
        "nothing to download: no objects under the prefix",
    )
}

fn print_download(r: &DownloadReport) -> String {
    let url = crate::printable::url(&r.bucket, &r.key);
    let mut s = if r.already_present {
        format!(
            "{} is already there and proven identical to {url}: nothing fetched\n",
            crate::printable::path(&r.dest)
        )
    } else {
        format!(
            "downloaded {url} to {} ({}, {} part{}) in {:.2} s ({:.1} MiB/s)\n",
            crate::printable::path(&r.dest),
            human_bytes(r.size),
            r.parts,
            if r.parts == 1 { "" } else { "s" },
            r.seconds,
            r.mib_per_s
        )
    };
    if r.verified {
        for p in &r.checked {
            s += &format!("  checked   {}\n", p.text);
        }
    } else {
        s += &format!(
            "  NOT verified: {}; the bytes were written as received, unchecked\n",
            r.not_verified
                .as_deref()
                .unwrap_or("nothing could be compared")
        );
    }
    if r.parts_resumed > 0 {
        s += &format!(
            "  resumed   {} parts were already verified from an interrupted run\n",
            r.parts_resumed
        );
    }
    if let Some(why) = &r.restarted_because {
        s += &format!("  restarted {why}\n");
    }
    if !r.parts_refetched.is_empty() {
        s += &format!(
            "  refetched part(s) {:?}: their bytes arrived different from S3's checksum and were fetched again\n",
            r.parts_refetched
        );
    }
    if r.refetched_whole {
        s += "  refetched every part once: the whole-object check failed the first time\n";
    }
    s
}
