//! `tally shard plan|run|finish`: one object uploaded by the workers of a scheduler.

use std::path::PathBuf;

use super::job::Run;
use crate::cli::{ConnectionArgs, ShardCommand};
use crate::config::UploadConfig;
use crate::error::Error;
use crate::shard::{self, PlanAt};

/// A validated `tally shard plan|run|finish`.
pub(crate) enum Job {
    /// Create the multipart upload and write the plan (`replace`: allow finish to replace an
    /// object at the key).
    Plan {
        cfg: Box<UploadConfig>,
        shards: u32,
        replace: bool,
        at: PlanAt,
    },
    /// Send one slice (`index`: else the scheduler's variables; `file`: the file where this
    /// worker sees it).
    Run {
        at: PlanAt,
        index: Option<u32>,
        file: Option<PathBuf>,
        concurrency: usize,
    },
    /// Complete the upload (`verify`: then read its checksums back).
    Finish { at: PlanAt, verify: bool },
}

/// The connection flags of the subcommand.
pub(crate) fn connection(command: &ShardCommand) -> &ConnectionArgs {
    match command {
        ShardCommand::Plan(a) => &a.connection,
        ShardCommand::Run(a) => &a.connection,
        ShardCommand::Finish(a) => &a.connection,
    }
}

/// `tally shard plan|run|finish`'s flags checked.
pub(crate) fn job(command: &ShardCommand) -> Result<Job, Error> {
    Ok(match command {
        ShardCommand::Plan(a) => {
            let mut cfg = UploadConfig::new(a.file.clone(), &a.target, a.part_size, 1, a.checksum)?;
            cfg.verify = false;
            Job::Plan {
                cfg: Box::new(cfg),
                shards: a.shards,
                replace: a.replace,
                at: PlanAt::parse(&a.plan)?,
            }
        }
        ShardCommand::Run(a) => Job::Run {
            at: PlanAt::parse(&a.plan)?,
            index: a.index,
            file: a.file.clone(),
            concurrency: a.concurrency,
        },
        ShardCommand::Finish(a) => Job::Finish {
            at: PlanAt::parse(&a.plan)?,
            verify: !a.no_verify,
        },
    })
}

/// Runs a `tally shard plan|run|finish`.
pub(crate) fn run(job: Job, run: &Run) -> i32 {
    let (s3, out) = (run.s3, run.out);
    match job {
        Job::Plan {
            cfg,
            shards,
            replace,
            at,
        } => {
            let result = run
                .runtime
                .block_on(shard::plan::plan(s3, &cfg, shards, replace, &at));
            out.finish(result.map(|r| (r.text(), r)))
        }
        Job::Run {
            at,
            index,
            file,
            concurrency,
        } => {
            let result = run.runtime.block_on(async {
                let plan = shard::plan::read(s3, &at).await?;
                let assigned = shard::assigned(index, plan.shards, |k| std::env::var(k).ok())?;
                let worker = shard::run::Worker {
                    at,
                    plan,
                    assigned,
                    file,
                    concurrency,
                };
                let progress = out.progress();
                shard::run(s3, &worker, progress.as_ref(), run.cancel).await
            });
            out.finish(result.map(|r| (r.text(), r)))
        }
        Job::Finish { at, verify } => {
            let result = run.runtime.block_on(async {
                let plan = shard::plan::read(s3, &at).await?;
                let progress = out.progress();
                shard::finish(s3, &at, &plan, verify, progress.as_ref()).await
            });
            out.finish(result.map(|r| (r.text(), r)))
        }
    }
}
