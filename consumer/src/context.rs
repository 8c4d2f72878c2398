//! [`NodeContext`]: what every part of a running node shares (the seed slots, the script
//! consumer in `scripts`, the heartbeat and the metrics server).
//!
//! Fields (through accessors):
//! * `node_name()`, `node_config()`: this node's entry of cluster.toml (defaults for an unlisted
//!   node), with `--slots`/`--cpu-threads` overrides already applied.
//! * `cluster()`: the whole cluster model (retry, chunking, broker limits, TTLs).
//! * `namespace()`: prefix of every queue and key.
//! * `endpoints()`: the broker's addresses (`--amqp-url`, one node or a cluster's nodes); every
//!   reconnection starts from the last one that worked.
//! * `store()`: the Redis store (reconnects by itself).
//! * `broker()`: the CURRENT broker connection. The node's supervisor replaces it after a
//!   connection loss; long-running users re-read it (or wait with [`NodeContext::broker_changed`]).
//! * `metrics()`: Prometheus counters (`crate::metrics`).
//! * `feeder()`: the scheduler's publisher (`seedq_scheduler::Feeder`), run by the node's feeder
//!   task when `request_feed()` asks (after every settled chunk, on every heartbeat).
//! * `shutdown_signal()`: a watch that turns `true` on SIGINT/SIGTERM: stop taking work, finish or
//!   requeue what is in flight, return.
//! * `stats`: live per-slot state and counters for the heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use seedq_broker::{Broker, Endpoints};
use seedq_protocol::{ClusterConfig, NodeConfig, SlotState};
use seedq_scheduler::Feeder;
use seedq_store::Store;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Shared state of a running node.
pub struct NodeContext {
    node: String,
    node_config: NodeConfig,
    cluster: ClusterConfig,
    namespace: String,
    endpoints: Endpoints,
    store: Store,
    /// `(generation, broker)`; the generation grows with every reconnection.
    broker: watch::Sender<(u64, Arc<Broker>)>,
    metrics: Arc<Metrics>,
    feeder: Feeder,
    /// Wakes the node's feeder task (`crate::node::feed_loop`).
    feed_wanted: tokio::sync::Notify,
    /// A fill of the scripts lane is wanted too (a script settled, or the heartbeat).
    script_feed_wanted: std::sync::atomic::AtomicBool,
    shutdown: watch::Sender<bool>,
    pub started_at_ms: u64,
    pub stats: NodeStats,
}

/// Counters and slot states reported in the heartbeat.
#[derive(Default)]
pub struct NodeStats {
    pub chunks_done: AtomicU64,
    pub chunks_failed: AtomicU64,
    pub slots: Mutex<Vec<SlotState>>,
    /// Each subscribed seed slot's current prefetch: what the node can hold at once, which the
    /// heartbeat reports to the scheduler as the node's capacity.
    pub prefetch: Mutex<std::collections::BTreeMap<String, u16>>,
}

impl NodeStats {
    pub fn set_busy(&self, slot: &str, busy_with: Option<String>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.iter_mut().find(|s| s.slot == slot) {
            s.busy_with = busy_with;
        }
    }

    pub fn chunk_done(&self, slot: &str) {
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.iter_mut().find(|s| s.slot == slot) {
            s.chunks_done += 1;
        }
    }

    /// Records a seed slot's prefetch (0 when it is not subscribed).
    pub fn set_prefetch(&self, slot: &str, prefetch: u16) {
        let mut map = self.prefetch.lock().unwrap_or_else(|p| p.into_inner());
        if prefetch == 0 {
            map.remove(slot);
        } else {
            map.insert(slot.to_string(), prefetch);
        }
    }

    /// Seed slots subscribed now (in service).
    pub fn seed_slots_in_service(&self) -> usize {
        self.prefetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Chunks the node's seed slots hold at once.
    pub fn seed_capacity(&self) -> u64 {
        let map = self.prefetch.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|p| u64::from(*p)).sum()
    }

    /// Shows (or, with `None`, clears) a slot's quarantine in the heartbeat.
    pub fn set_quarantined(&self, slot: &str, quarantined: Option<seedq_protocol::SlotQuarantine>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.iter_mut().find(|s| s.slot == slot) {
            s.quarantined = quarantined;
        }
    }

    pub fn chunk_failed(&self) {
        self.chunks_failed.fetch_add(1, Ordering::Relaxed);
    }
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_config: NodeConfig,
        cluster: ClusterConfig,
        namespace: String,
        endpoints: Endpoints,
        store: Store,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
        slots: Vec<SlotState>,
    ) -> Arc<NodeContext> {
        let (broker, _) = watch::channel((1, broker));
        let (shutdown, _) = watch::channel(false);
        let feeder = Feeder::new(store.clone(), cluster.scheduler.clone());
        Arc::new(NodeContext {
            feeder,
            feed_wanted: tokio::sync::Notify::new(),
            script_feed_wanted: std::sync::atomic::AtomicBool::new(false),
            node: node_config.name.clone(),
            node_config,
            cluster,
            namespace,
            endpoints,
            store,
            broker,
            metrics,
            shutdown,
            started_at_ms: seedq_protocol::now_ms(),
            stats: NodeStats {
                slots: Mutex::new(slots),
                ..Default::default()
            },
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    pub fn node_config(&self) -> &NodeConfig {
        &self.node_config
    }

    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current broker connection (possibly one that has just died: users that get errors
    /// wait for [`NodeContext::broker_changed`]).
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.borrow().1.clone()
    }

    /// The current broker and its generation.
    pub fn broker_generation(&self) -> (u64, Arc<Broker>) {
        self.broker.borrow().clone()
    }

    /// Waits until the broker generation is newer than `seen` (or shutdown starts); returns the
    /// new broker, or `None` on shutdown.
    pub async fn broker_changed(&self, seen: u64) -> Option<(u64, Arc<Broker>)> {
        let mut rx = self.broker.subscribe();
        let mut stop = self.shutdown.subscribe();
        loop {
            {
                let current = rx.borrow_and_update();
                if current.0 > seen {
                    return Some(current.clone());
                }
            }
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Installs a new broker connection (after a reconnection).
    pub fn replace_broker(&self, broker: Arc<Broker>) -> u64 {
        let mut generation = 0;
        self.broker.send_modify(|(g, b)| {
            *g += 1;
            *b = broker;
            generation = *g;
        });
        generation
    }

    pub fn feeder(&self) -> &Feeder {
        &self.feeder
    }

    /// Asks the feeder task for a fill (coalesced: many requests during one fill make one more).
    pub fn request_feed(&self) {
        self.feed_wanted.notify_one();
    }

    /// Asks the feeder task for a fill of the scripts lane as well.
    pub fn request_script_feed(&self) {
        self.script_feed_wanted
            .store(true, std::sync::atomic::Ordering::Release);
        self.feed_wanted.notify_one();
    }

    /// Whether a scripts fill was asked for since the last call.
    pub fn take_script_feed_request(&self) -> bool {
        self.script_feed_wanted
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Waits for [`NodeContext::request_feed`].
    pub async fn feed_requested(&self) {
        self.feed_wanted.notified().await;
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Turns `true` when the node starts draining.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts the drain (SIGINT/SIGTERM).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
