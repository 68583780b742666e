//! `tally verify`: is this object this file (or every object of a prefix its file)?

use tokio_util::sync::CancellationToken;

use super::output::{Output, watch_signals};
use crate::cli::VerifyArgs;
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, Error};
use crate::s3::SdkS3;
use crate::verify::{self, Verdict, VerifyOptions, VerifyReport};
use crate::vocab::ObjectUrl;

/// `tally verify FILE|DIR s3://...`.
pub(crate) fn run(args: &VerifyArgs, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    if args.file.is_dir() {
        return runtime.block_on(verify_tree(args, out));
    }
    if args.tree.any() {
        return out.finish::<()>(Err(Error::Usage(format!(
            "--include, --exclude and --no-follow-symlinks need a directory; {} is not one",
            args.file.display()
        ))));
    }
    // The local bytes as they are hashed or compared (none when only the size decides).
    let progress = out.progress();
    let size = std::fs::metadata(&args.file).map_or(0, |m| m.len());
    progress.start_reading(size, "verifying");
    let result = runtime.block_on(async {
        let target = ObjectUrl::parse(&args.target)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let opts = VerifyOptions {
            download: args.download,
            etag: args.etag,
            wait: args.wait,
            meter: progress.meter(),
        };
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
                tokio::select! {
                    r = verify::verify(&s3, &args.file, &target, &opts) => r,
                    () = cancel.cancelled() => Err(Error::Stopped(
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
    out.finish(result.map(|r| (print_verify(&args.file, &r), r)))
        .max(code)
}

/// `tally verify DIR s3://BUCKET/PREFIX/`.
async fn verify_tree(args: &VerifyArgs, out: &Output) -> i32 {
    let run = async {
        let prefix = super::prefix_url(&args.target)?;
        let walk = crate::tree::WalkOptions {
            key_prefix_len: prefix.key.len(),
            ..args.tree.walk_options()?
        };
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let opts = VerifyOptions {
            download: args.download,
            etag: args.etag,
            wait: args.wait,
            meter: None,
        };
        let progress = out.progress();
        let on_line = out.tree_lines();
        let cfg = crate::batch::verify::TreeVerify {
            root: args.file.clone(),
            prefix,
            walk,
            opts,
        };
        let mut report =
            crate::batch::verify::verify_tree(&s3, &cfg, progress.as_ref(), &cancel, &on_line)
                .await?;
        if report.complete {
            // A folder carrying an ASC MHL history is also checked against it.
            crate::batch::custody_check::check_folder(&args.file, None, &mut report, &on_line)
                .await?;
        }
        Ok(report)
    };
    let result = run.await;
    out.finish_tree(
        result,
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
