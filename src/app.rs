//! Runs a parsed command in two steps (`app/job.rs`): its flags resolved into a validated job,
//! then the job run by the one file of its command (`app/<command>.rs`), which renders its
//! report through one printer ([`output::Output`]).

mod download;
mod dryrun;
mod hash;
mod help;
mod job;
mod json;
mod md5;
mod output;
mod report_html;
mod report_job;
mod shard;
mod upload;
mod uploads;
mod verify;

use crate::cli::{Cli, Command, OutputArgs};
use output::{Output, init_logging};

/// Runs `cli` and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    // Completions and the manual page have no output flags: their text, and no more.
    let quiet = OutputArgs {
        json: false,
        quiet: true,
        verbose: 0,
    };
    let flags = match &cli.command {
        Command::Completions(_) | Command::Man => &quiet,
        Command::Upload(a) => &a.output,
        Command::Verify(a) => &a.output,
        Command::Download(a) => &a.output,
        Command::Hash(a) => &a.output,
        Command::Md5(a) => &a.output,
        Command::Uploads(a) => &a.output,
        Command::Abort(a) => &a.output,
        Command::Shard(c) => c.output(),
    };
    let built = job::build(&cli.command);
    init_logging(flags);
    let out = Output::new(flags, records_of(&cli.command));
    if let Some((path, conn)) = report_of(&cli.command)
        && let Err(e) = out.with_report(path, endpoint(conn))
    {
        return out.finish::<()>(Err(e));
    }
    match built {
        Ok(job) => job::run(job, &out),
        Err(refused) => refused.render(&out),
    }
}

/// What the records of `command` say it works on (`--json`, `--report`).
fn records_of(command: &Command) -> json::Job {
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
