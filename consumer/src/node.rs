//! The node supervisor: starts the seed slots, the script consumer, the heartbeat and the
//! metrics server; watches the broker connection and replaces it after a loss (the slots and the
//! script consumer re-subscribe on the new one); turns SIGINT/SIGTERM into a drain.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use seedq_broker::Broker;
use seedq_protocol::{NodeHeartbeat, Topology};

use crate::chunks::{run_slot, SeedOptions};
use crate::context::NodeContext;
use crate::jobs::JobCache;
use crate::slot::SlotWorker;

/// How often the connection watchdog looks at the broker connection.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// What `run` needs besides the context.
pub struct NodePlan {
    pub workers: Vec<Arc<SlotWorker>>,
    pub seed_options: SeedOptions,
    /// Where to serve Prometheus metrics (`--metrics-addr` and `--metrics-port`); None: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub scripts: bool,
    /// `cpu`, `cuda` or `hip`: what the seed slots actually run on.
    pub backend_kind: String,
}

/// Runs the node until SIGINT/SIGTERM and a completed drain.
pub async fn run(ctx: Arc<NodeContext>, plan: NodePlan) -> anyhow::Result<()> {
    let cache = Arc::new(JobCache::new(
        ctx.store().clone(),
        ctx.endpoints().job_key().cloned(),
    ));
    let opts = Arc::new(plan.seed_options);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in &plan.workers {
        tasks.spawn(run_slot(
            ctx.clone(),
            worker.clone(),
            cache.clone(),
            opts.clone(),
        ));
    }
    if plan.scripts {
        tasks.spawn(run_scripts(ctx.clone()));
    }
    // The script consumer runs at least one script at a time; a node without one runs none.
    let script_limit = if plan.scripts {
        ctx.node_config().max_script_jobs.max(1)
    } else {
        0
    };
    let heartbeat = tokio::spawn(heartbeat_loop(
        ctx.clone(),
        plan.workers.clone(),
        plan.backend_kind.clone(),
        script_limit,
    ));
    let feeder = tokio::spawn(feed_loop(ctx.clone()));
    let watchdog = tokio::spawn(connection_watchdog(ctx.clone()));
    if let Some(addr) = plan.metrics_addr {
        let metrics = ctx.metrics();
        tokio::spawn(async move {
            if let Err(e) = metrics.serve(addr).await {
                tracing::error!(addr = %addr, error = %format!("{e:#}"), "metrics server stopped");
            }
        });
    }
    tracing::info!(
        node = %ctx.node_name(),
        namespace = %ctx.namespace(),
        slots = plan.workers.len(),
        backend = %plan.backend_kind,
        "node running; SIGINT/SIGTERM drains"
    );

    wait_for_signal().await;
    tracing::info!("shutdown requested: no new work; finishing chunks in flight");
    ctx.begin_shutdown();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a node task panicked");
        }
    }
    watchdog.abort();
    heartbeat.abort();
    feeder.abort();
    if let Err(e) = ctx.store().clear_capacity(ctx.node_name()).await {
        tracing::warn!(error = %e, "could not withdraw the node's capacity");
    }
    if let Err(e) = ctx.store().clear_heartbeat(ctx.node_name()).await {
        tracing::warn!(error = %e, "could not clear the heartbeat");
    }
    ctx.broker().close().await;
    tracing::info!("drained; exiting");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Reconnects when the broker connection is lost (closed from the management UI, broker restart,
/// the cluster node it was on gone, network), re-declares the topology, and installs the new
/// connection; slot and script consumers then re-subscribe.
async fn connection_watchdog(ctx: Arc<NodeContext>) {
    let name = Topology::consumer_connection_name(ctx.node_name());
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if ctx.is_shutting_down() {
            return;
        }
        let lost = ctx.broker();
        if lost.is_connected() {
            continue;
        }
        tracing::warn!(address = %lost.address(), "RabbitMQ connection lost; reconnecting");
        let Some(broker) = reconnect(&ctx, &name).await else {
            return;
        };
        let address = broker.address().to_string();
        let generation = ctx.replace_broker(Arc::new(broker));
        tracing::info!(
            generation,
            %address,
            "reconnected to RabbitMQ; consumers re-subscribing"
        );
    }
}

/// A new connection with the topology declared on it: passes over the broker's addresses (from the
/// last good one) with backoff, for as long as it takes; `None` once the node shuts down. A
/// declare can fail on a connection that works (a cluster still electing the queues' leaders
/// after losing a node), so it is retried under the same backoff, never in a tight loop.
async fn reconnect(ctx: &NodeContext, name: &str) -> Option<Broker> {
    let attempt = || async {
        let broker = Broker::connect_any(ctx.endpoints(), name, ctx.namespace()).await?;
        if let Err(e) = broker.ensure_topology(&ctx.cluster().broker).await {
            broker.close().await;
            return Err(e);
        }
        Ok(broker)
    };
    let mut stop = ctx.shutdown_signal();
    tokio::select! {
        result = attempt
            .retry(seedq_broker::connect_backoff(None))
            .notify(|e: &seedq_broker::BrokerError, d| {
                tracing::warn!(error = %e, retry_in = ?d, "still cannot reach RabbitMQ (or declare the queues)");
            }) => result.ok(),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Keeps the node's script consumer running across reconnections.
async fn run_scripts(ctx: Arc<NodeContext>) {
    let mut failures = 0u32;
    loop {
        if ctx.is_shutting_down() {
            return;
        }
        let (generation, _) = ctx.broker_generation();
        // Script consumer (scripts-ops' module): serves <ns>.scripts and <ns>.scripts.<node>.
        match crate::scripts::serve(ctx.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if ctx.is_shutting_down() {
                    return;
                }
                failures += 1;
                tracing::error!(error = %format!("{e:#}"), "script consumer stopped; restarting");
                if ctx.broker().is_connected() {
                    // Not a connection problem (e.g. a bad script root): back off, keep trying.
                    let delay = Duration::from_secs((1u64 << failures.min(6)).min(60));
                    let mut stop = ctx.shutdown_signal();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                } else if ctx.broker_changed(generation).await.is_none() {
                    return;
                } else {
                    failures = 0;
                }
            }
        }
    }
}

/// The scheduler's share of the heartbeat: report what this node's seed slots hold at once and
/// how many scripts it runs at once (the capacities, expiring with the heartbeat), publish again
/// any window whose publisher died, and ask for a fill of both lanes. This is what keeps jobs
/// and batches moving after the producer that enqueued them has exited, and after a fill failed.
async fn feed(ctx: &NodeContext, ttl: u64, script_limit: u32) {
    if ctx.is_shutting_down() {
        return;
    }
    let broker = ctx.broker();
    let capacity = ctx.stats.seed_capacity();
    let result = async {
        let store = ctx.store();
        store
            .set_capacities(ctx.node_name(), capacity, u64::from(script_limit), ttl)
            .await?;
        ctx.feeder().republish_stale(&broker).await
    }
    .await;
    match result {
        Ok(stale) if stale > 0 => {
            tracing::debug!(stale, capacity, "heartbeat republished stale windows")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "heartbeat could not feed the queues"),
    }
    ctx.request_feed();
    ctx.request_script_feed();
}

/// The node's one feeder task: a fill whenever a slot settled a seed chunk or a script task
/// (or the heartbeat asks), off the slots' path, so a slot's settle costs no claim or publish
/// round trip and settles arriving during a fill are served together by the next one. The
/// scripts lane is filled only when a script settled or the heartbeat asked.
async fn feed_loop(ctx: Arc<NodeContext>) {
    loop {
        ctx.feed_requested().await;
        if ctx.is_shutting_down() {
            return;
        }
        let broker = ctx.broker();
        match ctx.feeder().fill(&broker).await {
            Ok(fed) if fed.total() > 0 => {
                tracing::trace!(fed = fed.total(), "published seed chunks")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not publish the next seed chunks; the heartbeat asks again");
            }
        }
        if ctx.take_script_feed_request() {
            match ctx.feeder().fill_scripts(&broker).await {
                Ok(fed) if fed.total() > 0 => {
                    tracing::debug!(fed = fed.total(), "published script tasks")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not publish the next script tasks; the heartbeat asks again");
                }
            }
        }
    }
}

/// Writes the heartbeat every few seconds (TTL from cluster.toml).
async fn heartbeat_loop(
    ctx: Arc<NodeContext>,
    workers: Vec<Arc<SlotWorker>>,
    backend_kind: String,
    script_limit: u32,
) {
    let ttl = ctx.cluster().jobs.heartbeat_ttl_secs.max(3);
    let interval = Duration::from_secs((ttl / 3).clamp(1, 5));
    let gpus: Vec<String> = workers
        .iter()
        .filter(|w| w.name.starts_with("gpu"))
        .map(|w| w.backend.clone())
        .collect();
    let gpu_model = workers
        .first()
        .map(|w| w.gpu_model.clone())
        .unwrap_or_else(|| "cpu".into());
    let mut warned = false;
    loop {
        let slots = ctx
            .stats
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hb = NodeHeartbeat {
            node: ctx.node_name().to_string(),
            backend: backend_kind.clone(),
            gpus: gpus.clone(),
            gpu_model: gpu_model.clone(),
            busy_slots: slots.iter().filter(|s| s.busy_with.is_some()).count() as u32,
            slots,
            chunks_done: ctx
                .stats
                .chunks_done
                .load(std::sync::atomic::Ordering::Relaxed),
            chunks_failed: ctx
                .stats
                .chunks_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            scripts_running: ctx.metrics().scripts_running().min(u32::MAX as u64) as u32,
            script_limit,
            signed_jobs: ctx.endpoints().job_key().is_some(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at_ms: ctx.started_at_ms,
            at_ms: seedq_protocol::now_ms(),
        };
        match ctx.store().write_heartbeat(&hb, ttl).await {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                tracing::warn!(error = %e, "heartbeat write failed (Redis down?); will keep trying");
                warned = true;
            }
            Err(_) => {}
        }
        feed(&ctx, ttl, script_limit).await;
        tokio::time::sleep(interval).await;
    }
}
