//! `tally verify`: is this object this file (or every object of a prefix its file)?

use std::path::PathBuf;

use super::job::{Refused, Run};
use crate::batch::verify::TreeVerify;
use crate::cli::VerifyArgs;
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, Error};
use crate::verify::{self, Verdict, VerifyOptions, VerifyReport};
use crate::vocab::ObjectUrl;

/// A validated `tally verify`.
pub(crate) enum Job {
    /// One file against one object.
    File {
        file: PathBuf,
        target: ObjectUrl,
        opts: VerifyOptions,
    },
    /// Every file of a folder against its object under a prefix.
    Tree(TreeVerify),
}

/// `tally verify FILE|DIR s3://...`'s flags checked.
pub(crate) fn job(args: &VerifyArgs) -> Result<Job, Refused> {
    let opts = VerifyOptions {
        download: args.download,
        etag: args.etag,
        wait: args.wait,
        meter: None,
    };
    if args.file.is_dir() {
        return tree_job(args, opts).map_err(Refused::tree);
    }
    if args.tree.any() {
        return Err(Error::Usage(format!(
            "--include, --exclude and --no-follow-symlinks need a directory; {} is not one",
            args.file.display()
        ))
        .into());
    }
    Ok(Job::File {
        file: args.file.clone(),
        target: ObjectUrl::parse(&args.target)?,
        opts,
    })
}

fn tree_job(args: &VerifyArgs, opts: VerifyOptions) -> Result<Job, Error> {
    let prefix = super::prefix_url(&args.target)?;
    let walk = crate::tree::WalkOptions {
        key_prefix_len: prefix.key.len(),
        ..args.tree.walk_options()?
    };
    Ok(Job::Tree(TreeVerify {
        root: args.file.clone(),
        prefix,
        walk,
        opts,
    }))
}

/// Runs a `tally verify`.
pub(crate) fn run(job: Job, run: &Run) -> i32 {
    match job {
        Job::File { file, target, opts } => verify_file(&file, &target, opts, run),
        Job::Tree(cfg) => run.runtime.block_on(verify_tree(&cfg, run)),
    }
}

/// `tally verify FILE s3://BUCKET/KEY`.
fn verify_file(file: &std::path::Path, target: &ObjectUrl, opts: VerifyOptions, run: &Run) -> i32 {
    // The local bytes as they are hashed or compared (none when only the size decides).
    let progress = run.out.progress();
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    progress.start_reading(size, "verifying");
    let opts = VerifyOptions {
        meter: progress.meter(),
        ..opts
    };
    let result = run.runtime.block_on(async {
        tokio::select! {
            r = verify::verify(run.s3, file, target, &opts) => r,
            () = run.cancel.cancelled() => Err(Error::Stopped(
                "interrupted: verify changes nothing, so nothing is kept: run the same command again".into(),
            )),
        }
    });
    progress.finish();
    let code = match &result {
        Ok(r) => match r.verdict {
            Verdict::Identical => EXIT_OK,
            Verdict::Differs => EXIT_MISMATCH,
        },
        // Whatever went wrong, nothing was verified.
        Err(_) => EXIT_ERROR,
    };
    run.out
        .finish(result.map(|r| (print_verify(file, &r), r)))
        .max(code)
}

/// `tally verify DIR s3://BUCKET/PREFIX/`.
async fn verify_tree(cfg: &TreeVerify, run: &Run<'_>) -> i32 {
    let on_line = run.out.tree_lines();
    let result = async {
        let progress = run.out.progress();
        let mut report =
            crate::batch::verify::verify_tree(run.s3, cfg, progress.as_ref(), run.cancel, &on_line)
                .await?;
        if report.complete {
            // A folder carrying an ASC MHL history is also checked against it.
            crate::batch::custody_check::check_folder(&cfg.root, None, &mut report, &on_line)
                .await?;
        }
        Ok(report)
    };
    run.out.finish_tree(
        result.await,
        "every file is its object",
        "nothing to verify: no files under the directory",
    )
}

fn print_verify(file: &std::path::Path, r: &VerifyReport) -> String {
    let mark = |m: bool| if m { "matches" } else { "DIFFERS" };
    let url = crate::printable::url(&r.bucket, &r.key);
    let head = match &r.verdict {
        Verdict::Identical => format!("{url} is {}", crate::printable::path(file)),
        Verdict::Differs => format!("{url} DIFFERS from {}", crate::printable::path(file)),
    };
    let mut s = format!("{head}\n  method    {}: {}\n", r.method, r.why);
    s += &format!("  compared  {}\n", r.compared);
    s += &format!(
        "  size      local {} / S3 {}: {}\n",
        r.size.local,
        r.size.remote,
        mark(r.size.matches)
    );
    if let Some(c) = &r.checksum {
        let alg = r.checksum_algorithm.as_deref().unwrap_or("");
        if c.matches {
            s += &format!("  checksum  {alg} {}: matches\n", c.remote);
        } else {
            s += &format!(
                "  checksum  {alg}: local {} / S3 {}: DIFFERS\n",
                c.local, c.remote
            );
        }
    }
    match (&r.etag, &r.etag_note) {
        (Some(e), _) if e.matches => s += &format!("  etag      {}: matches\n", e.remote),
        (Some(e), _) => s += &format!("  etag      local {} / S3 {}: DIFFERS\n", e.local, e.remote),
        (None, Some(n)) => s += &format!("  etag      {n}\n"),
        (None, None) => {}
    }
    s += &if r.parts_compared == 0 && r.differing_parts.is_empty() {
        format!(
            "  parts     {} in the object (the server lists no per-part checksums to compare one by one)\n",
            r.parts
        )
    } else {
        format!(
            "  parts     {} in the object, {} compared one by one, {} differ\n",
            r.parts,
            r.parts_compared,
            r.differing_parts.len()
        )
    };
    for d in &r.differing_parts {
        s += &format!(
            "    part {} (bytes {}..{}): local {} / S3 {}\n",
            d.number, d.range.start, d.range.end, d.local, d.remote
        );
    }
    s += &format!(
        "  took      {:.2} s ({:.2} GiB/s)\n",
        r.seconds, r.gib_per_s
    );
    s
}
