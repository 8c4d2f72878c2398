//! `seedq-producer cancel JOB`: sets the job's cancelled flag in Redis. Consumers check it before
//! running a chunk or script task and settle the remaining ones as `cancelled` without running
//! them; work already running finishes normally. The job then ends with those members settled,
//! and `resume` runs them after all.

use anyhow::{bail, Context};
use clap::Args;

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The job (or script batch) id.
    pub job: String,
}

pub async fn run(env: &Env, args: CancelArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    if store.load_job(&args.job).await?.is_none() {
        bail!(
            "no job '{}' in namespace '{}' (see `seedq-producer status`)",
            args.job,
            env.namespace
        );
    }
    store.cancel(&args.job).await?;
    let progress = store
        .progress(&args.job)
        .await?
        .context("job vanished while cancelling")?;
    if env.json {
        println!(
            "{}",
            serde_json::json!({ "job_id": args.job, "cancelled": true, "chunks_done": progress.chunks_done, "chunks_total": progress.chunks_total })
        );
    } else {
        println!("{}", args.job);
        eprintln!(
            "cancelled {}: {} of {} done; queued work will be skipped, running work finishes",
            args.job, progress.chunks_done, progress.chunks_total
        );
    }
    Ok(0)
}
