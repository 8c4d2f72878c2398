//! `seedq-producer`: enqueue seed searches, statistical seed jobs (correlation, analysis) and
//! script jobs on the seedq cluster, follow them and fetch their results.
//!
//! This file is the command line and its dispatch only; each command lives in [`cmd`].
//!
//! stdout carries results only (a job id, JSON with `--json`, survivors); logs, warnings and
//! progress bars go to stderr. Exit codes: 0 success; 1 error (the message says what to change);
//! 2 bad command line; 3 the job finished with dead-lettered work (`wait`, `sieve --wait`,
//! `correlation --wait`, `analysis --wait`, `scripts --wait`, `collect`);
//! 4 `--timeout` reached.

mod cmd;
mod context;
mod draws;
mod enqueue;
mod jobs_file;
mod naming;
mod planner;
mod progress;
mod publish;
mod results_format;
mod sieve_args;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seedq_core::analysis::AnalysisKind;
use seedq_protocol::{DEFAULT_AMQP_URL, DEFAULT_NAMESPACE, DEFAULT_REDIS_URL};
use seedq_telemetry::LogFormat;

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
    /// RabbitMQ URL, or the nodes of a cluster as a comma-separated list (or the flag repeated):
    /// tried in order from the last one that worked.
    #[arg(long, global = true, env = "SEEDQ_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true, value_delimiter = ',')]
    amqp_url: Vec<String>,
    /// Redis URL (`rediss://` for TLS).
    #[arg(long, global = true, env = "SEEDQ_REDIS_URL", default_value = DEFAULT_REDIS_URL, hide_env_values = true)]
    redis_url: String,
    /// CA certificate (PEM) that `amqps://` and `rediss://` connections trust: for servers whose
    /// certificates a private CA signed (`scripts/init-secrets.sh` with SEEDQ_TLS=1 makes one).
    #[arg(long, global = true, env = "SEEDQ_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Prefix of every queue and Redis key [default: seedq].
    #[arg(long, global = true, env = "SEEDQ_NAMESPACE")]
    namespace: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Logs on stderr: text, or one JSON object per line (credentials scrubbed either way).
    #[arg(long, global = true, env = "SEEDQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue a seed search (sieve) and print its job id.
    Sieve(sieve_args::SieveArgs),
    /// Enqueue a lag-autocorrelation test of every seed's output stream; print its job id.
    Correlation(cmd::analysis::AnalysisArgs),
    /// Enqueue autocorrelation, chi-square and runs tests of every seed's stream; print its job id.
    Analysis(cmd::analysis::AnalysisArgs),
    /// Progress of one job, or of every job.
    Status(cmd::status::StatusArgs),
    /// Live view: jobs, nodes and slots, queue depths, refreshed in place (q quits).
    Top(cmd::top::TopArgs),
    /// Wait for a job with a progress bar; non-zero exit if chunks were dead-lettered.
    Wait(cmd::wait::WaitArgs),
    /// A job's survivors (sieve) or flagged seeds and merged summary (correlation, analysis).
    Results(cmd::results::ResultsArgs),
    /// Enqueue a batch of script jobs (the original's jobs file).
    Scripts(cmd::scripts::ScriptsArgs),
    /// Write a script batch's outputs from Redis to files.
    Collect(cmd::collect::CollectArgs),
    /// Live nodes (heartbeats): backend, GPUs, busy slots, learned throughput.
    Nodes(cmd::nodes::NodesArgs),
    /// Cancel a job: no further chunks run.
    Cancel(cmd::cancel::CancelArgs),
    /// Republish a job's chunks that are neither done nor queued.
    Resume(cmd::resume::ResumeArgs),
    /// Dead letters: list, replay, purge.
    Dlq(cmd::dlq::DlqArgs),
    /// Write draws generated from a known (planted) seed.
    GenDraws(cmd::gen_draws::GenDrawsArgs),
    /// Declare the namespace's queues and exchanges (an administrator, once: the least-privilege
    /// producer and consumer users may not).
    Declare(cmd::declare::DeclareArgs),
    /// Delete every queue, exchange and Redis key of the namespace (tests, demos).
    Teardown(cmd::teardown::TeardownArgs),
}

fn main() -> ExitCode {
    // `SEEDQ_*_FILE` secrets become their variables before clap reads the environment.
    if let Err(e) = seedq_telemetry::load_secret_files() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    let job_key = std::env::var(seedq_protocol::signing::KEY_ENV).ok();
    let secrets = seedq_telemetry::Secrets::from_urls(
        &cli.amqp_url
            .iter()
            .chain([&cli.redis_url])
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .with(
        job_key
            .as_deref()
            .into_iter()
            .collect::<Vec<_>>()
            .as_slice(),
    );
    seedq_telemetry::init(cli.log_format, secrets.clone(), "warn,seedq_producer=info");
    match run(cli, job_key.as_deref()) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // An error chain can quote a client library's message, which can quote a URL: the
            // same scrubbing as every log line.
            eprintln!("error: {}", secrets.scrub(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// The job key from `SEEDQ_JOB_KEY` (or `SEEDQ_JOB_KEY_FILE`), for commands that publish.
fn job_key(text: Option<&str>) -> anyhow::Result<Option<seedq_protocol::JobKey>> {
    text.map(|t| seedq_protocol::JobKey::new(t, seedq_protocol::signing::KEY_ENV))
        .transpose()
        .map_err(anyhow::Error::from)
}

fn run(cli: Cli, job_key_text: Option<&str>) -> anyhow::Result<i32> {
    // A URL without `scheme://` would be echoed whole, password included, by the clients.
    for url in cli
        .amqp_url
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        seedq_telemetry::check_url("--amqp-url", url)?;
    }
    seedq_telemetry::check_url("--redis-url", &cli.redis_url)?;
    // gen-draws needs no configuration or services.
    if let Command::GenDraws(args) = &cli.command {
        cmd::gen_draws::run(args)?;
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
    let key = job_key(job_key_text)?;
    let publishes = matches!(
        cli.command,
        Command::Sieve(_)
            | Command::Correlation(_)
            | Command::Analysis(_)
            | Command::Scripts(_)
            | Command::Resume(_)
            | Command::Dlq(_)
    );
    if key.is_none() && publishes {
        tracing::warn!(
            "no job key (SEEDQ_JOB_KEY or SEEDQ_JOB_KEY_FILE): jobs are published unsigned, and \
             anyone who can publish to the broker can run work on the nodes"
        );
    }
    let tls_ca = seedq_protocol::CaCert::load_optional(cli.tls_ca_file.as_deref())?;
    let env = Env {
        namespace,
        endpoints: seedq_broker::Endpoints::new(&cli.amqp_url)?
            .with_job_key(key)
            .with_tls_ca(tls_ca.clone()),
        redis_url: cli.redis_url,
        tls_ca,
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
            Command::Sieve(args) => cmd::sieve::run(&env, args).await,
            Command::Correlation(args) => {
                cmd::analysis::run(&env, AnalysisKind::Correlation, args).await
            }
            Command::Analysis(args) => cmd::analysis::run(&env, AnalysisKind::Analysis, args).await,
            Command::Status(args) => cmd::status::run(&env, args).await,
            Command::Top(args) => cmd::top::run(&env, args).await,
            Command::Wait(args) => cmd::wait::run(&env, args).await,
            Command::Results(args) => cmd::results::run(&env, args).await,
            Command::Teardown(args) => cmd::teardown::run(&env, args).await,
            Command::Declare(args) => cmd::declare::run(&env, args).await,
            Command::Scripts(args) => cmd::scripts::run(&env, args).await,
            Command::Collect(args) => cmd::collect::run(&env, args).await,
            Command::Nodes(args) => cmd::nodes::run(&env, args).await,
            Command::Cancel(args) => cmd::cancel::run(&env, args).await,
            Command::Resume(args) => cmd::resume::run(&env, args).await,
            Command::Dlq(args) => cmd::dlq::run(&env, args).await,
            Command::GenDraws(_) => unreachable!("handled above"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_url_takes_a_list_or_repeats() {
        let urls = |args: &[&str]| {
            let mut all = vec!["seedq-producer"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().amqp_url
        };
        let three = ["amqp://a/%2f", "amqp://b/%2f", "amqp://c/%2f"];
        let list = "amqp://a/%2f,amqp://b/%2f";
        let repeat = ["--amqp-url", list, "--amqp-url", "amqp://c/%2f"];
        assert_eq!(urls(&[&repeat[..], &["status"]].concat()), three);
        // A global flag also parses after the command.
        assert_eq!(urls(&[&["status"][..], &repeat].concat()), three);
    }
}
