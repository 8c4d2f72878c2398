//! `seedq-producer status [JOB]`: the progress of one job, or a line per job of the namespace
//! (`--json`: the [`crate::progress::ProgressView`]s). A correlation / analysis job's status
//! adds the merged summary of its chunks so far, as `results` computes it.

use clap::Args;
use seedq_protocol::JobSpec;

use crate::cmd::no_such_job;
use crate::cmd::results::{merged_summary, summary_line};
use crate::context::Env;
use crate::progress::view;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Job id (default: every job of the namespace).
    pub job: Option<String>,
}

pub async fn run(env: &Env, args: StatusArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    let now = seedq_protocol::now_ms();
    match args.job {
        Some(id) => {
            let progress = store
                .progress(&id)
                .await?
                .ok_or_else(|| no_such_job(env, &id))?;
            let job = store.load_job(&id).await?;
            let v = view(&progress, job.as_ref(), now);
            // Statistical jobs: the merged summary so far (one HGETALL of small counters).
            let summary = match job.as_ref().map(|j| &j.spec) {
                Some(JobSpec::Correlation(_) | JobSpec::Analysis(_)) => {
                    Some(merged_summary(&store, &id).await?)
                }
                _ => None,
            };
            if env.json {
                let mut value = serde_json::to_value(&v)?;
                if let (Some(s), Some(obj)) = (&summary, value.as_object_mut()) {
                    obj.insert("summary".into(), serde_json::to_value(s)?);
                }
                println!("{}", serde_json::to_string(&value)?);
            } else {
                print!("{}", v.to_text());
                if let Some(s) = &summary {
                    println!("{}", summary_line(s));
                }
            }
        }
        None => {
            let mut views = Vec::new();
            for id in store.list_jobs().await? {
                if let Some(p) = store.progress(&id).await? {
                    let job = store.load_job(&id).await?;
                    views.push(view(&p, job.as_ref(), now));
                }
            }
            if env.json {
                println!("{}", serde_json::to_string(&views)?);
            } else if views.is_empty() {
                eprintln!("no jobs in namespace '{}'", env.namespace);
            } else {
                for v in &views {
                    println!("{}", v.to_line());
                }
            }
        }
    }
    Ok(0)
}
