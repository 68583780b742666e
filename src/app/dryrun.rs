//! `tally upload FILE|DIR ... --dryrun` and `tally download s3://... DEST --dryrun`: what the run
//! would do to each file and why (src/batch/dryrun.rs), nothing written.

use tokio_util::sync::CancellationToken;

use super::output::{Output, human_bytes, say, watch_signals};
use crate::batch::report::{Action, FileLine};
use crate::cli::{DownloadArgs, UploadArgs};
use crate::error::Error;
use crate::s3::SdkS3;
use crate::vocab::ObjectUrl;

/// Each line as text on standard output (`--json`: the records), then the printer's own.
fn lines(out: &Output) -> impl Fn(&FileLine) + Send + Sync + use<> {
    let (text, base) = (!out.json && !out.quiet, out.tree_lines());
    move |line: &FileLine| {
        base(line);
        let verb = match line.action {
            Action::WouldSend => "SEND   ",
            Action::WouldCompare => "COMPARE",
            _ => return,
        };
        if text {
            let one_line = crate::printable::one_line;
            say(&crate::redact::redact(&format!(
                "{verb}  {}  {}  {}",
                one_line(&line.path),
                human_bytes(line.size.unwrap_or(0)),
                one_line(line.reason.as_deref().unwrap_or(""))
            )));
        }
    }
}

const ALL_GOOD: &str = "every file can be done as listed (a dry run: nothing was sent or written; run it without --dryrun)";
const NOTHING: &str = "nothing to do";

/// `tally upload DIR s3://BUCKET/PREFIX/ --dryrun`.
pub(super) async fn upload(args: &UploadArgs, out: &Output) -> i32 {
    let run = async {
        if args.mhl {
            return Err(Error::Usage(
                "--dryrun writes nothing, so no ASC MHL generation either: leave --mhl out".into(),
            ));
        }
        let cfg = super::upload::tree_config(args)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let on_line = lines(out);
        crate::batch::dryrun::upload_plan(&s3, &cfg.root, cfg.walk, &cfg.prefix, &cancel, &on_line)
            .await
    };
    out.finish_tree(run.await, ALL_GOOD, NOTHING)
}

/// `tally download s3://BUCKET/PREFIX/ DIR --dryrun`.
pub(super) async fn download(args: &DownloadArgs, out: &Output) -> i32 {
    let run = async {
        let prefix = ObjectUrl::parse(&args.source)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let opts = crate::download::DownloadOptions {
            force: args.force,
            concurrency: args.concurrency,
            filters: args.tree.download_filters()?,
            hedge: args.hedge,
        };
        let on_line = lines(out);
        crate::batch::dryrun::download_plan(&s3, &prefix, &args.dest, &opts, &cancel, &on_line)
            .await
    };
    out.finish_tree(run.await, ALL_GOOD, NOTHING)
}

/// `tally upload FILE s3://... --dryrun`.
pub(super) async fn upload_file(args: &UploadArgs, out: &Output) -> i32 {
    let run = async {
        let cfg = args.to_config()?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let on_line = lines(out);
        crate::batch::dryrun::upload_one(&s3, &args.file, &cfg.target, &on_line).await
    };
    out.finish_tree(run.await, ALL_GOOD, NOTHING)
}

/// `tally download s3://BUCKET/KEY DEST --dryrun`.
pub(super) async fn download_file(args: &DownloadArgs, out: &Output) -> i32 {
    let run = async {
        let obj = ObjectUrl::parse(&args.source)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let on_line = lines(out);
        crate::batch::dryrun::download_one(&s3, &obj, &args.dest, args.force, &on_line).await
    };
    out.finish_tree(run.await, ALL_GOOD, NOTHING)
}
