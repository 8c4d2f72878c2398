//! seedq-consumer: the node agent. `seedq-consumer [run] [flags]` runs a node (seed slots on
//! GPUs or CPU threads, the script consumer, heartbeat, metrics); `seedq-consumer bench`
//! measures the kernels.
//!
//! Logs go to stderr as text or JSON lines (`--log-format`, see `logging`; `RUST_LOG`, default
//! `info`). Credentials in URLs are never logged: redacted where seedq names a URL, scrubbed
//! from every line otherwise.

mod bench_cmd;
mod chunks;
mod context;
#[cfg(feature = "fault-injection")]
mod fault;
mod health;
mod jobs;
mod metrics;
mod node;
mod scripts;
mod selftest;
mod settle;
mod slot;
mod verify;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use seedq_broker::{Broker, Endpoints};
use seedq_kernels::Backend;
use seedq_kernels::SieveBackend;
use seedq_protocol::{ClusterConfig, SlotState, Topology};
use seedq_store::Store;

use crate::chunks::SeedOptions;
use crate::context::NodeContext;
use crate::slot::{BackendFactory, SlotWorker};
use seedq_telemetry::{self as logging, redact, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "seedq-consumer",
    version,
    about = "seedq node agent: pulls seed chunks and script jobs, writes results to Redis"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run this node (the default when no command is given).
    Run(RunArgs),
    /// Measure the sieve kernels on a named workload (needs no broker).
    Bench(bench_cmd::BenchArgs),
}

/// `--backend`: `auto` (None: the node's backend from cluster.toml, GPUs that cannot be opened
/// fall back to the CPU) or a [`Backend`] forced.
fn parse_backend(text: &str) -> Result<BackendChoice, String> {
    match text {
        "auto" => Ok(None),
        other => other
            .parse::<Backend>()
            .map(Some)
            .map_err(|e| format!("{e}, or auto")),
    }
}

/// `--backend`'s value. An alias on purpose: clap's derive treats a field spelled `Option<T>` as
/// an optional `T` and reads it back as `T`, which panics ("Mismatch between definition and
/// access") against a parser that produces the `Option` itself; behind the alias the field is a
/// plain value with a default.
type BackendChoice = Option<Backend>;

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Node name (cluster.toml entry, connection name, consumer tags). Default: the hostname.
    #[arg(long, env = "SEEDQ_NODE")]
    node: Option<String>,
    /// Cluster model. Default: config/cluster.toml when present, else one-machine defaults.
    #[arg(long, env = "SEEDQ_CONFIG")]
    config: Option<PathBuf>,
    /// auto (the node's backend from cluster.toml, falling back to the CPU), cpu, cuda or hip.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Seed slots: CPU slots for the cpu backend, else the first N GPUs. Default: from config.
    #[arg(long)]
    slots: Option<u32>,
    /// Threads per CPU slot. Default: the node's cpu_threads.
    #[arg(long)]
    cpu_threads: Option<u32>,
    #[arg(long, env = "SEEDQ_NAMESPACE")]
    namespace: Option<String>,
    /// RabbitMQ: one URL, or the nodes of a cluster as a comma-separated list (or the flag
    /// repeated), tried in order from the last one that worked, so the node fails over when its
    /// broker node goes away.
    #[arg(long, env = "SEEDQ_AMQP_URL", default_value = seedq_protocol::DEFAULT_AMQP_URL, hide_env_values = true, value_delimiter = ',')]
    amqp_url: Vec<String>,
    #[arg(long, env = "SEEDQ_REDIS_URL", default_value = seedq_protocol::DEFAULT_REDIS_URL, hide_env_values = true)]
    redis_url: String,
    /// CA certificate (PEM) that `amqps://` and `rediss://` connections trust: for servers whose
    /// certificates a private CA signed (`scripts/init-secrets.sh` with SEEDQ_TLS=1 makes one).
    #[arg(long, env = "SEEDQ_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this port (none by default).
    #[arg(long, env = "SEEDQ_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Address the metrics port binds: loopback by default; a node scraped by a monitoring host
    /// binds its LAN address (or 0.0.0.0 behind a firewall).
    #[arg(long, env = "SEEDQ_METRICS_ADDR", default_value = "127.0.0.1")]
    metrics_addr: IpAddr,
    /// Log lines as `text` (default) or `json` (one object per line, event fields at the top).
    #[arg(long, env = "SEEDQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Attempts before a chunk is dead-lettered. Default: retry.max_attempts from config.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// After SIGTERM, how long chunks in flight may finish before they are requeued.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
    /// Seed-slot prefetch: `auto` (1, or 16 while chunks take under 2 ms) or a fixed number.
    #[arg(long, default_value = "auto", value_parser = parse_prefetch)]
    prefetch: chunks::Prefetch,
    /// Skip the startup calibration that seeds the chunk planner's throughput estimate for
    /// families this node's slots have never run (about 0.2 s on a CPU slot).
    #[arg(long)]
    no_calibrate: bool,
    /// Do not consume script jobs on this node.
    #[arg(long)]
    no_scripts: bool,
    /// Seconds between a busy slot's known-answer self-tests (each slot also runs one at start;
    /// 0: before every chunk).
    #[arg(long, env = "SEEDQ_SELF_TEST_INTERVAL", default_value_t = 300.0, value_parser = parse_secs)]
    self_test_interval: f64,
    /// Backend errors in a row that quarantine a slot (0: never).
    #[arg(long, env = "SEEDQ_QUARANTINE_AFTER_ERRORS", default_value_t = 3)]
    quarantine_after_errors: u32,
    /// Seconds before a quarantined slot retries its self-test; the delay doubles after each
    /// failure, up to 16 times this.
    #[arg(long, env = "SEEDQ_SELF_TEST_RETRY", default_value_t = 60.0, value_parser = parse_secs)]
    self_test_retry: f64,
    /// Test builds only (feature `fault-injection`): make slot SLOT's backend misbehave, e.g.
    /// `cpu1=drop:0.01,after:11` or `cpu1=error:1,until:20` (see `fault.rs`). Repeatable.
    #[cfg(feature = "fault-injection")]
    #[arg(long, value_name = "SLOT=SPEC")]
    inject_fault: Vec<fault::SlotFault>,
}

/// A non-negative number of seconds.
fn parse_secs(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("a number of seconds, not '{text}'"))
}

fn main() -> anyhow::Result<()> {
    // `SEEDQ_*_FILE` secrets become their variables before clap reads the environment.
    if let Err(e) = seedq_telemetry::load_secret_files() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(args)) => bench_cmd::run(args),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn load_cluster(explicit: Option<&PathBuf>) -> anyhow::Result<ClusterConfig> {
    match explicit {
        Some(p) => ClusterConfig::load(p)
            .with_context(|| format!("loading cluster config {}", p.display())),
        None => {
            let default = PathBuf::from("config/cluster.toml");
            if default.is_file() {
                ClusterConfig::load(&default).context("loading config/cluster.toml")
            } else {
                Ok(ClusterConfig::default())
            }
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut urls: Vec<&str> = args.amqp_url.iter().map(String::as_str).collect();
    urls.push(&args.redis_url);
    let job_key = std::env::var(seedq_protocol::signing::KEY_ENV).ok();
    let secrets = logging::Secrets::from_urls(&urls).with(
        job_key
            .as_deref()
            .into_iter()
            .collect::<Vec<_>>()
            .as_slice(),
    );
    logging::init(args.log_format, secrets.clone(), "info,lapin=warn");
    match run_node(args.clone(), job_key.as_deref()) {
        Ok(()) => Ok(()),
        // A JSON stream stays JSON to the last line: the fatal error is a log event, not
        // the plain "Error: ..." that returning it from main would print.
        Err(e) if args.log_format == LogFormat::Json => {
            tracing::error!(error = %format!("{e:#}"), "seedq-consumer cannot run");
            std::process::exit(1);
        }
        // Printed here rather than returned: main's own "Error: {e:?}" would bypass the
        // scrubbing every log line gets, and a client library's error can quote a URL.
        Err(e) => {
            eprintln!("Error: {}", secrets.scrub(&format!("{e:#}")));
            std::process::exit(1);
        }
    }
}

/// A node without a job key does not join nodes that require signed jobs: its scheduler would
/// publish the next windows of their (sealed) jobs unsigned, for them to refuse, and its slots
/// would run work they refuse. Its own earlier heartbeat does not count (a cluster restarted
/// without its key).
async fn refuse_keyless_among_keyed(store: &Store, node: &str) -> anyhow::Result<()> {
    let keyed = store.nodes_requiring_signed_jobs(Some(node)).await?;
    if !keyed.is_empty() {
        anyhow::bail!(
            "node(s) {} run only signed jobs and this node has no job key: set SEEDQ_JOB_KEY or \
             SEEDQ_JOB_KEY_FILE to the cluster's key (or stop them first, if the cluster is \
             dropping its key)",
            keyed.join(", ")
        );
    }
    Ok(())
}

fn run_node(args: RunArgs, job_key: Option<&str>) -> anyhow::Result<()> {
    for url in args
        .amqp_url
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        logging::check_url("--amqp-url", url)?;
    }
    logging::check_url("--redis-url", &args.redis_url)?;
    let job_key = job_key
        .map(|text| seedq_protocol::JobKey::new(text, seedq_protocol::signing::KEY_ENV))
        .transpose()?;
    match &job_key {
        Some(_) => tracing::info!("job key set: only signed jobs run on this node"),
        None => tracing::warn!(
            "no job key (SEEDQ_JOB_KEY or SEEDQ_JOB_KEY_FILE): jobs are unauthenticated, and \
             anyone who can publish to the broker can run scripts on this node"
        ),
    }
    let tls_ca = seedq_protocol::CaCert::load_optional(args.tls_ca_file.as_deref())?;
    let endpoints = Endpoints::new(&args.amqp_url)
        .context("--amqp-url")?
        .with_job_key(job_key)
        .with_tls_ca(tls_ca.clone());
    let cluster = load_cluster(args.config.as_ref())?;
    // Node names go into queue names and Redis keys: dots are fine, anything else is not.
    let node_name = args.node.clone().unwrap_or_else(seedq_protocol::hostname);
    seedq_protocol::validate_identifier("node name", &node_name).context("--node")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    seedq_protocol::validate_identifier("namespace", &namespace).context("--namespace")?;
    let mut node_config = cluster.node_or_default(&node_name);
    if cluster.node(&node_name).is_none() {
        tracing::info!(node = %node_name, "node not listed in the cluster config; using CPU defaults");
    }
    if let Some(t) = args.cpu_threads {
        node_config.cpu_threads = t.max(1);
    }
    // The ROCm environment must be in place before any GPU library is touched, and before other
    // threads exist (setting the environment is not thread-safe).
    let want_hip = args.backend.unwrap_or(node_config.backend) == Backend::Hip;
    if want_hip {
        let vars: Vec<(String, String)> = node_config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        seedq_kernels::gpu::apply_rocm_env(&vars)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("applying the node's ROCm environment")?;
    }
    let (workers, backend_kind) = build_slots(&args, &node_config)?;
    // The self-tests' reference answers, once for every slot (a few ms).
    selftest::prepare();
    node_config.cpu_slots = workers.iter().filter(|w| w.name.starts_with("cpu")).count() as u32;
    let max_attempts = args
        .max_attempts
        .unwrap_or(cluster.retry.max_attempts)
        .max(1);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("seedq-io")
        .build()?;
    runtime.block_on(async move {
        let store = Store::connect_with_ca(&args.redis_url, &namespace, tls_ca.as_ref())
            .await
            .with_context(|| format!("connecting to Redis at {}", redact(&args.redis_url)))?
            .with_job_ttl(cluster.jobs.result_ttl_secs)
            .with_batch_output_cap(cluster.jobs.max_batch_output_bytes);
        if endpoints.job_key().is_none() {
            refuse_keyless_among_keyed(&store, &node_name).await?;
        }
        let connection_name = Topology::consumer_connection_name(&node_name);
        let broker = Broker::connect_with_retry(
            &endpoints,
            &connection_name,
            &namespace,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("connecting to RabbitMQ at {endpoints}"))?;
        tracing::info!(address = %broker.address(), "connected to RabbitMQ");
        // A least-privilege consumer user may not declare the namespace's queues: it consumes
        // the ones an administrator declared (`seedq-producer declare`).
        if !broker
            .ensure_topology(&cluster.broker)
            .await
            .context("declaring queues")?
        {
            tracing::info!("this broker user may not declare the namespace's queues; consuming the declared ones");
        }
        if !args.no_calibrate {
            seed_throughput_estimates(&store, &workers).await;
        }
        let metrics = metrics::Metrics::new();
        metrics.set_node_info(&node_name, &backend_kind, &namespace);
        for worker in &workers {
            metrics.register_slot(&worker.name);
        }
        metrics.set_script_limit(if args.no_scripts {
            0
        } else {
            u64::from(node_config.max_script_jobs)
        });
        let slot_states = workers
            .iter()
            .map(|w| SlotState {
                slot: w.name.clone(),
                backend: w.backend.clone(),
                busy_with: None,
                chunks_done: 0,
                quarantined: None,
            })
            .collect();
        let ctx = NodeContext::new(
            node_config,
            cluster,
            namespace,
            endpoints,
            store,
            Arc::new(broker),
            metrics,
            slot_states,
        );
        node::run(
            ctx,
            node::NodePlan {
                workers,
                seed_options: SeedOptions {
                    max_attempts,
                    prefetch: args.prefetch,
                    drain_timeout: Duration::from_secs(args.drain_timeout_secs),
                    health: health::HealthOptions {
                        self_test_interval: Duration::from_secs_f64(args.self_test_interval),
                        quarantine_after_errors: args.quarantine_after_errors,
                        // A retry in a tight loop would only burn the device: at least 100 ms.
                        retry_first: Duration::from_secs_f64(args.self_test_retry.max(0.1)),
                    },
                    referee: verify::Referee::default(),
                    peers: verify::Peers::default(),
                },
                metrics_addr: args
                    .metrics_port
                    .map(|port| SocketAddr::new(args.metrics_addr, port)),
                scripts: !args.no_scripts,
                backend_kind,
            },
        )
        .await
    })?;
    // Slot threads may still hold a chunk abandoned by the drain timeout: do not wait for them.
    std::process::exit(0);
}

/// Times each slot model once on every family it has no learned throughput for and stores the
/// figures where nothing was learned yet (see `slot::calibrate`), before the node takes work, so
/// that even the first job on a fresh cluster gets chunks of about the target duration. A failure
/// here costs only the estimate: it is logged, never fatal.
async fn seed_throughput_estimates(store: &Store, workers: &[Arc<SlotWorker>]) {
    let mut seen = std::collections::HashSet::new();
    for worker in workers.iter().filter(|w| seen.insert(w.gpu_model.clone())) {
        let model = &worker.gpu_model;
        let mut families = Vec::new();
        for family in seedq_kernels::family::Family::ALL {
            match store.throughput(model, family.name()).await {
                Ok(None) => families.push(family),
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read learned throughput; skipping the calibration");
                    return;
                }
            }
        }
        if families.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let measured = match worker.run(slot::Work::Calibrate { families }).await {
            Ok(out) => out.calibration,
            Err(e) => {
                tracing::warn!(slot = %worker.name, error = %e, "calibration failed; the planner will use the configured profile");
                continue;
            }
        };
        for (family, units_per_sec) in &measured {
            if let Err(e) = store
                .seed_throughput(model, family.name(), *units_per_sec)
                .await
            {
                tracing::warn!(error = %e, "cannot store the calibration");
                return;
            }
        }
        tracing::info!(
            model = %model,
            families = measured.len(),
            secs = format!("{:.2}", started.elapsed().as_secs_f64()),
            "calibrated the throughput estimate for families not yet learned"
        );
    }
}

/// Opens the seed slots. Returns the workers and the backend they really run on.
fn build_slots(
    args: &RunArgs,
    node: &seedq_protocol::NodeConfig,
) -> anyhow::Result<(Vec<Arc<SlotWorker>>, String)> {
    let threads = node.cpu_threads.max(1) as usize;
    let gpu_kind = Some(args.backend.unwrap_or(node.backend)).filter(|b| b.is_gpu());
    if let Some(kind) = gpu_kind {
        let mut gpus = node.gpu_list();
        if gpus.is_empty() {
            if let Ok(devices) = seedq_kernels::gpu::list_devices(kind) {
                gpus = devices
                    .into_iter()
                    .map(|d| seedq_protocol::GpuConfig {
                        index: d.index as u32,
                        model: d.name,
                    })
                    .collect();
            }
        }
        if let Some(n) = args.slots {
            gpus = (0..n)
                .map(|i| {
                    gpus.get(i as usize)
                        .cloned()
                        .unwrap_or(seedq_protocol::GpuConfig {
                            index: i,
                            model: node.gpu_type.clone(),
                        })
                })
                .collect();
        }
        let mut workers = Vec::new();
        let mut failure = None;
        for gpu in &gpus {
            let device = gpu.index as usize;
            let name = format!("gpu{}", gpu.index);
            let factory: BackendFactory = with_fault(
                args,
                &name,
                Box::new(move || seedq_kernels::gpu::open_backend(kind, device)),
            );
            match SlotWorker::spawn(name, gpu.model.clone(), threads, factory) {
                Ok(w) => {
                    tracing::info!(slot = %w.name, backend = %w.backend, "GPU slot ready");
                    workers.push(Arc::new(w));
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match (failure, args.backend) {
            (None, _) if !workers.is_empty() => return Ok((workers, kind.to_string())),
            (Some(e), None) => {
                tracing::warn!(backend = %kind, error = %e, "GPU backend unavailable; falling back to CPU slots (--backend auto)");
            }
            (None, None) => tracing::warn!(backend = %kind, "no GPUs configured or found; falling back to CPU slots"),
            (Some(e), _) => bail!("cannot open the {kind} backend: {e} (use --backend cpu or auto)"),
            (None, _) => bail!("no {kind} devices: list them under [[nodes]] gpus in cluster.toml or pass --slots N"),
        }
    }
    let slots = args.slots.unwrap_or(node.cpu_slots).max(1);
    let mut workers = Vec::new();
    for i in 0..slots {
        let name = format!("cpu{i}");
        let factory: BackendFactory = with_fault(
            args,
            &name,
            Box::new(move || {
                Ok(Box::new(seedq_kernels::cpu::CpuBackend::new(threads)) as Box<dyn SieveBackend>)
            }),
        );
        let w = SlotWorker::spawn(name, "cpu".into(), threads, factory)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(slot = %w.name, backend = %w.backend, "CPU slot ready");
        workers.push(Arc::new(w));
    }
    Ok((workers, "cpu".into()))
}

/// The slot's backend factory, wrapped in the fault `--inject-fault` names for it.
#[cfg(feature = "fault-injection")]
fn with_fault(args: &RunArgs, slot: &str, factory: BackendFactory) -> BackendFactory {
    match args.inject_fault.iter().find(|f| f.slot == slot).cloned() {
        Some(f) => {
            tracing::warn!(slot, fault = ?f, "injecting a fault into this slot's backend (test build)");
            Box::new(move || {
                Ok(Box::new(fault::FaultyBackend::new(factory()?, f)) as Box<dyn SieveBackend>)
            })
        }
        None => factory,
    }
}

/// Without the test-only feature there is nothing to inject.
#[cfg(not(feature = "fault-injection"))]
fn with_fault(_args: &RunArgs, _slot: &str, factory: BackendFactory) -> BackendFactory {
    factory
}

fn parse_prefetch(text: &str) -> Result<chunks::Prefetch, String> {
    match text {
        "auto" => Ok(chunks::Prefetch::Auto),
        n => n
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .map(chunks::Prefetch::Fixed)
            .ok_or_else(|| {
                format!("--prefetch takes 'auto' or a number from 1 to 65535, not '{n}'")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_url_takes_a_list_or_repeats() {
        let cli = Cli::try_parse_from([
            "seedq-consumer",
            "--amqp-url",
            "amqp://a/%2f,amqp://b/%2f",
            "--amqp-url",
            "amqp://c/%2f",
        ])
        .unwrap();
        assert_eq!(
            cli.run.amqp_url,
            ["amqp://a/%2f", "amqp://b/%2f", "amqp://c/%2f"]
        );
        let cli = Cli::try_parse_from(["seedq-consumer", "run"]).unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!("run")
        };
        if std::env::var_os("SEEDQ_AMQP_URL").is_none() {
            assert_eq!(args.amqp_url, [seedq_protocol::DEFAULT_AMQP_URL]);
        }
    }
}
