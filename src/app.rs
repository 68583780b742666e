//! Runs a parsed command: sets up logging and the runtime, then hands the command's arguments to
//! the one file that runs it and renders its report (`app/<command>.rs`), all through one printer
//! ([`output::Output`]).

mod download;
mod dryrun;
mod hash;
mod help;
mod json;
mod md5;
mod output;
mod report_html;
mod report_job;
mod shard;
mod upload;
mod uploads;
mod verify;

use crate::cli::{Cli, Command};
use crate::error::EXIT_OK;
use output::{Output, init_logging};

/// Runs `cli` and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let output = match &cli.command {
        Command::Completions(a) => return help::completions(a.shell),
        Command::Man => return help::man_page(),
        Command::Upload(a) => &a.output,
        Command::Verify(a) => &a.output,
        Command::Download(a) => &a.output,
        Command::Hash(a) => &a.output,
        Command::Md5(a) => &a.output,
        Command::Uploads(a) => &a.output,
        Command::Abort(a) => &a.output,
        Command::Shard(c) => c.output(),
    };
    init_logging(output);
    let out = Output::new(output, job(&cli.command));
    if let Some((path, conn)) = report_of(&cli.command)
        && let Err(e) = out.with_report(path, endpoint(conn))
    {
        return out.finish::<()>(Err(e));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(crate::exec::BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match &cli.command {
        Command::Upload(args) => upload::run(args, &out, &runtime),
        Command::Verify(args) => verify::run(args, &out, &runtime),
        Command::Download(args) => download::run(args, &out, &runtime),
        Command::Hash(args) => hash::run(args, &out, &runtime),
        Command::Md5(args) => md5::run(args, &out, &runtime),
        Command::Uploads(args) => uploads::list(args, &out, &runtime),
        Command::Abort(args) => uploads::abort(args, &out, &runtime),
        Command::Shard(c) => runtime.block_on(shard::run(c, &out)),
        // Answered above, before logging and the runtime.
        Command::Completions(_) | Command::Man => EXIT_OK,
    }
}

/// What the records of `command` say it works on (`--json`, `--report`).
fn job(command: &Command) -> json::Job {
    let shown = |p: &std::path::Path| Some(p.display().to_string());
    let (name, path, url) = match command {
        Command::Upload(a) => ("upload", shown(&a.file), Some(a.target.clone())),
        Command::Verify(a) => ("verify", shown(&a.file), Some(a.target.clone())),
        Command::Download(a) => ("download", shown(&a.dest), Some(a.source.clone())),
        Command::Hash(a) => ("hash", shown(&a.path), None),
        Command::Md5(a) => ("md5", None, Some(a.target.clone())),
        Command::Uploads(a) => ("uploads", None, Some(a.target.clone())),
        Command::Abort(a) => ("abort", None, Some(a.target.clone())),
        Command::Shard(crate::cli::ShardCommand::Plan(a)) => {
            ("shard plan", shown(&a.file), Some(a.target.clone()))
        }
        Command::Shard(crate::cli::ShardCommand::Run(a)) => {
            ("shard run", a.file.as_deref().and_then(shown), None)
        }
        Command::Shard(crate::cli::ShardCommand::Finish(_)) => ("shard finish", None, None),
        Command::Completions(_) | Command::Man => ("help", None, None),
    };
    json::Job::new(name, path, url)
}

/// `s3://BUCKET/PREFIX` as the prefix a folder goes under: a key that does not end in `/` gets
/// one (`s3://b/day1` is `s3://b/day1/`).
fn prefix_url(target: &str) -> Result<crate::vocab::ObjectUrl, crate::error::Error> {
    let mut prefix = crate::vocab::ObjectUrl::parse(target)?;
    if !crate::vocab::is_prefix(&prefix.key) {
        prefix.key.push('/');
    }
    Ok(prefix)
}

/// The `--report` file of `command`, and its connection, when one was asked for.
fn report_of(command: &Command) -> Option<(&std::path::Path, &crate::cli::ConnectionArgs)> {
    match command {
        Command::Upload(a) => Some((a.report.as_deref()?, &a.connection)),
        Command::Download(a) => Some((a.report.as_deref()?, &a.connection)),
        Command::Verify(a) => Some((a.report.as_deref()?, &a.connection)),
        _ => None,
    }
}

/// The endpoint in words, as the SDK will choose it (no credentials in it).
fn endpoint(conn: &crate::cli::ConnectionArgs) -> String {
    let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let region = conn
        .region
        .clone()
        .or_else(|| from_env("AWS_REGION"))
        .or_else(|| from_env("AWS_DEFAULT_REGION"));
    let url = conn
        .endpoint_url
        .clone()
        .or_else(|| from_env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| from_env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| "Amazon S3 (the SDK's endpoint for the region)".into());
    let url = crate::redact::redact(&url);
    match region {
        Some(r) => format!("{url}, region {r}"),
        None => url,
    }
}
