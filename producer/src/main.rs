//! `seedq-producer`: enqueue seed searches, statistical seed jobs (correlation, analysis) and
//! script jobs on the seedq cluster, follow them and fetch their results.
//!
//! stdout carries results only (a job id, JSON with `--json`, survivors); logs, warnings and
//! progress bars go to stderr. Exit codes: 0 success; 1 error (the message says what to change);
//! 2 bad command line; 3 the job finished with dead-lettered work (`wait`, `sieve --wait`,
//! `correlation --wait`, `analysis --wait`);
//! 4 `--timeout` reached.

mod analysis_cmd;
mod context;
mod draws;
mod gen_draws;
mod jobs_file;
mod ops;
mod planner;
mod progress;
mod publish;
mod results;
mod scripts_cmd;
mod sieve_args;
mod sieve_cmd;
mod status_cmd;
mod teardown;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seedq_core::analysis::AnalysisKind;
use seedq_protocol::{DEFAULT_AMQP_URL, DEFAULT_NAMESPACE, DEFAULT_REDIS_URL};

use crate::context::Env;

#[derive(Debug, Parser)]
#[command(
    name = "seedq-producer",
    version,
    about = "Enqueue, follow and collect seedq jobs"
)]
struct Cli {
    /// Cluster model (default: config/cluster.toml if present, else one-machine defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// RabbitMQ URL.
    #[arg(long, global = true, env = "SEEDQ_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    amqp_url: String,
    /// Redis URL.
    #[arg(long, global = true, env = "SEEDQ_REDIS_URL", default_value = DEFAULT_REDIS_URL, hide_env_values = true)]
    redis_url: String,
    /// Prefix of every queue and Redis key [default: seedq].
    #[arg(long, global = true, env = "SEEDQ_NAMESPACE")]
    namespace: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue a seed search (sieve) and print its job id.
    Sieve(sieve_args::SieveArgs),
    /// Enqueue a lag-autocorrelation test of every seed's output stream; print its job id.
    Correlation(analysis_cmd::AnalysisArgs),
    /// Enqueue autocorrelation, chi-square and runs tests of every seed's stream; print its job id.
    Analysis(analysis_cmd::AnalysisArgs),
    /// Progress of one job, or of every job.
    Status(status_cmd::StatusArgs),
    /// Wait for a job with a progress bar; non-zero exit if chunks were dead-lettered.
    Wait(status_cmd::WaitArgs),
    /// A job's survivors (sieve) or flagged seeds and merged summary (correlation, analysis).
    Results(status_cmd::ResultsArgs),
    /// Enqueue a batch of script jobs (the original's jobs file).
    Scripts(scripts_cmd::ScriptsArgs),
    /// Write a script batch's outputs from Redis to files.
    Collect(scripts_cmd::CollectArgs),
    /// Live nodes (heartbeats): backend, GPUs, busy slots, learned throughput.
    Nodes(ops::NodesArgs),
    /// Cancel a job: no further chunks run.
    Cancel(ops::CancelArgs),
    /// Republish a job's chunks that are neither done nor queued.
    Resume(ops::ResumeArgs),
    /// Dead letters: list, replay, purge.
    Dlq(ops::DlqArgs),
    /// Write draws generated from a known (planted) seed.
    GenDraws(gen_draws::GenDrawsArgs),
    /// Delete every queue, exchange and Redis key of the namespace (tests, demos).
    Teardown(teardown::TeardownArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,seedq_producer=info".into()),
        )
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    // gen-draws needs no configuration or services.
    if let Command::GenDraws(args) = &cli.command {
        gen_draws::run(args)?;
        return Ok(0);
    }
    let (cluster, config_path) = Env::load_cluster(cli.config.as_deref())?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    seedq_protocol::validate_identifier("namespace", &namespace)?;
    match &config_path {
        Some(p) => tracing::debug!("cluster model from {}", p.display()),
        None => tracing::debug!("no config/cluster.toml: one-machine defaults"),
    }
    let env = Env {
        namespace,
        amqp_url: cli.amqp_url,
        redis_url: cli.redis_url,
        cluster,
        config_path,
        json: cli.json,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Sieve(args) => sieve_cmd::run_sieve(&env, args).await,
            Command::Correlation(args) => {
                analysis_cmd::run(&env, AnalysisKind::Correlation, args).await
            }
            Command::Analysis(args) => analysis_cmd::run(&env, AnalysisKind::Analysis, args).await,
            Command::Status(args) => status_cmd::run_status(&env, args).await,
            Command::Wait(args) => status_cmd::run_wait(&env, args).await,
            Command::Results(args) => status_cmd::run_results(&env, args).await,
            Command::Teardown(args) => teardown::run(&env, args).await,
            Command::Scripts(args) => scripts_cmd::run_scripts(&env, args).await,
            Command::Collect(args) => scripts_cmd::run_collect(&env, args).await,
            Command::Nodes(args) => ops::run_nodes(&env, args).await,
            Command::Cancel(args) => ops::run_cancel(&env, args).await,
            Command::Resume(args) => ops::run_resume(&env, args).await,
            Command::Dlq(args) => ops::run_dlq(&env, args).await,
            Command::GenDraws(_) => unreachable!("handled above"),
        }
    })
}
