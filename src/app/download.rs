//! `tally download`: one object, or every object under a prefix, each part checked.

use std::path::PathBuf;

use super::job::{Refused, Run};
use super::output::human_bytes;
use crate::cli::DownloadArgs;
use crate::download::{self, DownloadOptions, DownloadReport};
use crate::error::Error;
use crate::vocab::{ObjectUrl, is_prefix};

/// A validated `tally download`.
pub(crate) enum Job {
    /// One object.
    File {
        source: ObjectUrl,
        dest: PathBuf,
        opts: DownloadOptions,
    },
    /// Every object under a prefix (`mhl`: an ASC MHL generation added at the end).
    Tree {
        prefix: ObjectUrl,
        dest: PathBuf,
        opts: DownloadOptions,
        mhl: bool,
    },
    /// `--dryrun` of one object, reported as a tree of one.
    PlanFile {
        source: ObjectUrl,
        dest: PathBuf,
        force: bool,
    },
    /// `--dryrun` of a prefix.
    PlanTree {
        prefix: ObjectUrl,
        dest: PathBuf,
        opts: DownloadOptions,
    },
}

/// `tally download s3://... FILE|DIR`'s flags checked.
pub(crate) fn job(args: &DownloadArgs) -> Result<Job, Refused> {
    let opts = |filters| DownloadOptions {
        force: args.force,
        concurrency: args
            .concurrency
            .unwrap_or(crate::config::DEFAULT_CONCURRENCY),
        small_by_places: args.concurrency.is_none(),
        filters,
        hedge: args.hedge,
    };
    let dest = args.dest.clone();
    if let Some(prefix) = ObjectUrl::parse(&args.source)
        .ok()
        .filter(|u| is_prefix(&u.key))
    {
        let opts = opts(args.tree.download_filters().map_err(Refused::tree)?);
        return Ok(if args.dryrun {
            Job::PlanTree { prefix, dest, opts }
        } else {
            let mhl = args.mhl;
            Job::Tree {
                prefix,
                dest,
                opts,
                mhl,
            }
        });
    }
    if args.dryrun {
        let source = ObjectUrl::parse(&args.source).map_err(Refused::tree)?;
        let force = args.force;
        return Ok(Job::PlanFile {
            source,
            dest,
            force,
        });
    }
    if args.tree.any() {
        return Err(Error::Usage(
            "--include and --exclude choose the objects under a prefix: give a prefix ending in /"
                .into(),
        )
        .into());
    }
    if args.mhl {
        return Err(Error::Usage(
            "--mhl writes an ASC MHL generation for a downloaded folder: give a prefix ending in /"
                .into(),
        )
        .into());
    }
    let source = ObjectUrl::parse(&args.source)?;
    let opts = opts(Default::default());
    Ok(Job::File { source, dest, opts })
}

/// Runs a `tally download`.
pub(crate) fn run(job: Job, run: &Run) -> i32 {
    match job {
        Job::File { source, dest, opts } => {
            let result = run.runtime.block_on(download(&source, &dest, &opts, run));
            run.out.finish(result.map(|r| (print_download(&r), r)))
        }
        Job::Tree {
            prefix,
            dest,
            opts,
            mhl,
        } => run
            .runtime
            .block_on(download_tree(&prefix, &dest, &opts, mhl, run)),
        Job::PlanFile {
            source,
            dest,
            force,
        } => run
            .runtime
            .block_on(super::dryrun::download_file(&source, &dest, force, run)),
        Job::PlanTree { prefix, dest, opts } => run
            .runtime
            .block_on(super::dryrun::download(&prefix, &dest, &opts, run)),
    }
}

async fn download(
    source: &ObjectUrl,
    dest: &std::path::Path,
    opts: &DownloadOptions,
    run: &Run<'_>,
) -> Result<DownloadReport, Error> {
    let progress = run.out.progress();
    // Ctrl-C / SIGTERM stop it as they stop a prefix: the parts recorded are kept for a resume.
    tokio::select! {
        r = download::download(run.s3, source, dest, opts, progress.as_ref()) => r,
        () = run.cancel.cancelled() => Err(download::interrupted(source, dest)),
    }
}

/// `tally download s3://BUCKET/PREFIX/ DIR/`.
async fn download_tree(
    prefix: &ObjectUrl,
    dest: &std::path::Path,
    opts: &DownloadOptions,
    mhl: bool,
    run: &Run<'_>,
) -> i32 {
    let on_line = run.out.tree_lines();
    let result = async {
        let progress = run.out.progress();
        let mut report = crate::batch::download::download_tree(
            run.s3,
            prefix,
            dest,
            opts,
            progress.as_ref(),
            run.cancel,
            &on_line,
        )
        .await?;
        if report.complete {
            // A tree carrying an ASC MHL history is checked against it once it is all here.
            let state = if mhl {
                Some(run.state.manifests()?)
            } else {
                None
            };
            let generation = state.as_deref().map(|d| (prefix, d));
            crate::batch::custody_check::check_folder(dest, generation, &mut report, &on_line)
                .await?;
        }
        Ok(report)
    };
    run.out.finish_tree(
        result.await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_opts(extra: &[&str]) -> DownloadOptions {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("{}/", dir.path().display());
        let mut argv = vec!["tally", "download", "s3://bkt/p/", &dest];
        argv.extend_from_slice(extra);
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let crate::cli::Command::Download(args) = cli.command else {
            panic!("not a download")
        };
        match job(&args) {
            Ok(Job::Tree { opts, .. }) => opts,
            Ok(_) => panic!("not a prefix download"),
            Err(_) => panic!("refused"),
        }
    }

    #[test]
    fn small_objects_go_by_places_only_when_concurrency_is_left_out() {
        let default = tree_opts(&[]);
        assert_eq!(default.concurrency, crate::config::DEFAULT_CONCURRENCY);
        assert!(default.small_by_places);
        let given = tree_opts(&["--concurrency", "64"]);
        assert_eq!(given.concurrency, 64);
        assert!(!given.small_by_places, "a number given caps every request");
    }
}
