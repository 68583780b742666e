//! `tally upload FILE|DIR ... --dryrun` and `tally download s3://... DEST --dryrun`: what the run
//! would do to each file and why (src/batch/dryrun.rs), nothing written.

use std::path::Path;

use super::job::Run;
use super::output::{Output, human_bytes, say};
use crate::batch::report::{Action, FileLine};
use crate::batch::upload::TreeConfig;
use crate::config::UploadConfig;
use crate::download::DownloadOptions;
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
pub(super) async fn upload(cfg: &TreeConfig, run: &Run<'_>) -> i32 {
    let on_line = lines(run.out);
    let plan = crate::batch::dryrun::upload_plan(
        run.s3,
        &cfg.root,
        cfg.walk.clone(),
        &cfg.prefix,
        run.cancel,
        &on_line,
    );
    run.out.finish_tree(plan.await, ALL_GOOD, NOTHING)
}

/// `tally download s3://BUCKET/PREFIX/ DIR --dryrun`.
pub(super) async fn download(
    prefix: &ObjectUrl,
    dest: &Path,
    opts: &DownloadOptions,
    run: &Run<'_>,
) -> i32 {
    let on_line = lines(run.out);
    let plan =
        crate::batch::dryrun::download_plan(run.s3, prefix, dest, opts, run.cancel, &on_line);
    run.out.finish_tree(plan.await, ALL_GOOD, NOTHING)
}

/// `tally upload FILE s3://... --dryrun`.
pub(super) async fn upload_file(cfg: &UploadConfig, run: &Run<'_>) -> i32 {
    let on_line = lines(run.out);
    let plan = crate::batch::dryrun::upload_one(run.s3, &cfg.source, &cfg.target, &on_line);
    run.out.finish_tree(plan.await, ALL_GOOD, NOTHING)
}

/// `tally download s3://BUCKET/KEY DEST --dryrun`.
pub(super) async fn download_file(obj: &ObjectUrl, dest: &Path, force: bool, run: &Run<'_>) -> i32 {
    let on_line = lines(run.out);
    let plan = crate::batch::dryrun::download_one(run.s3, obj, dest, force, &on_line);
    run.out.finish_tree(plan.await, ALL_GOOD, NOTHING)
}
