//! `tally shard plan|run|finish`: one object uploaded by the workers of a scheduler.

use tokio_util::sync::CancellationToken;

use super::output::{Output, watch_signals};
use crate::cli::ShardCommand;
use crate::s3::SdkS3;

/// `tally shard plan|run|finish`.
pub(crate) async fn run(command: &ShardCommand, out: &Output) -> i32 {
    use crate::shard::{self, PlanAt};
    match command {
        ShardCommand::Plan(a) => {
            let result = async {
                let mut cfg = crate::config::UploadConfig::new(
                    a.file.clone(),
                    &a.target,
                    a.part_size,
                    1,
                    a.checksum,
                )?;
                cfg.verify = false;
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                shard::plan::plan(&s3, &cfg, a.shards, a.replace, &at).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
        ShardCommand::Run(a) => {
            let result = async {
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                let plan = shard::plan::read(&s3, &at).await?;
                let assigned = shard::assigned(a.index, plan.shards, |k| std::env::var(k).ok())?;
                let worker = shard::run::Worker {
                    at,
                    plan,
                    assigned,
                    file: a.file.clone(),
                    concurrency: a.concurrency,
                };
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
                let progress = out.progress();
                shard::run(&s3, &worker, progress.as_ref(), &cancel).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
        ShardCommand::Finish(a) => {
            let result = async {
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                let plan = shard::plan::read(&s3, &at).await?;
                let progress = out.progress();
                shard::finish(&s3, &at, &plan, !a.no_verify, progress.as_ref()).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
    }
}
