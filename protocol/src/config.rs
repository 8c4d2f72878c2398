//! The cluster model: `config/cluster.toml` (nodes, GPUs, limits, throughput profiles, chunking,
//! retry and expiry policy). Every process reads the same file; every field has a default so a
//! partial file (or none: [`ClusterConfig::default`], one CPU machine) works.
//!
//! ```toml
//! namespace = "seedq"
//! [broker]   consumer_timeout_ms = 1_800_000, delivery_limit = 20
//! [chunking] target_chunk_secs, min_chunk_seeds = 500, base_chunk_seeds, max_factor = 50, ...
//! [retry]    max_attempts = 5, initial_backoff_ms, max_backoff_ms
//! [jobs]     result_ttl_secs, heartbeat_ttl_secs
//! [profiles."RTX 3080 Ti"] seeds_per_second, architecture, reference_window, reference_skip_span (scaling_factor: ignored)
//! [[nodes]]  name, backend = "cuda"|"hip"|"cpu", gpu_type, gpus = 2 (or ["RTX 3080 Ti", ...]),
//!            max_script_jobs, script_root, python_env, cpu_slots, cpu_threads, [nodes.env]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors loading the cluster model.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not TOML of the cluster-config shape.
    #[error("{path} is not a valid cluster config: {source}")]
    Parse {
        /// The path given (`<string>` for [`ClusterConfig::from_toml_str`]).
        path: String,
        /// The TOML error, with its line and column.
        source: toml::de::Error,
    },
    /// Well-formed but inconsistent (bad or duplicate node name, `retry.max_attempts = 0`).
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Prefix of every queue, exchange and Redis key (default [`crate::DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// `[broker]`: limits that must match the RabbitMQ server's.
    pub broker: BrokerSettings,
    /// `[chunking]`: how the producer sizes chunks.
    pub chunking: ChunkingConfig,
    /// `[retry]`: attempts and backoff for transient failures.
    pub retry: RetryConfig,
    /// `[jobs]`: result and heartbeat lifetimes in Redis.
    pub jobs: JobsConfig,
    /// `[scheduler]`: priorities and how much seed work waits in the queue.
    pub scheduler: crate::SchedulerConfig,
    /// Throughput profiles by GPU type (matched by substring of a node's `gpu_type`).
    pub profiles: BTreeMap<String, GpuProfile>,
    /// `[[nodes]]`: the machines that run consumers (names unique).
    pub nodes: Vec<NodeConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            namespace: crate::DEFAULT_NAMESPACE.to_string(),
            broker: BrokerSettings::default(),
            chunking: ChunkingConfig::default(),
            retry: RetryConfig::default(),
            jobs: JobsConfig::default(),
            scheduler: crate::SchedulerConfig::default(),
            profiles: BTreeMap::new(),
            nodes: Vec::new(),
        }
    }
}

impl ClusterConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: ClusterConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates TOML text (tests and embedded configs).
    pub fn from_toml_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        let cfg: ClusterConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<string>".into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: node names are valid identifiers and unique, and
    /// `retry.max_attempts >= 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for node in &self.nodes {
            crate::validate_identifier("node name", &node.name)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if !seen.insert(node.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "node '{}' is listed twice",
                    node.name
                )));
            }
        }
        let sched = &self.scheduler;
        if !(sched.queued_per_slot.is_finite() && (0.0..=64.0).contains(&sched.queued_per_slot)) {
            return Err(ConfigError::Invalid(format!(
                "scheduler.queued_per_slot = {} is out of range: use a number from 0 to 64",
                sched.queued_per_slot
            )));
        }
        if !(sched.verify_fraction.is_finite() && (0.0..=1.0).contains(&sched.verify_fraction)) {
            return Err(ConfigError::Invalid(format!(
                "scheduler.verify_fraction = {} is out of range: use a fraction from 0 (off) to 1",
                sched.verify_fraction
            )));
        }
        if sched.min_queued == 0 || sched.claim_stale_secs == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.min_queued and scheduler.claim_stale_secs must be at least 1".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The node's entry, if listed.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node's entry, or a CPU node with defaults named `name` (unlisted nodes still run).
    pub fn node_or_default(&self, name: &str) -> NodeConfig {
        self.node(name).cloned().unwrap_or_else(|| NodeConfig {
            name: name.to_string(),
            ..NodeConfig::default()
        })
    }

    /// The profile whose key is a substring of `gpu_type`, ignoring case (longest key wins), so
    /// `"RX 6600"` serves a node whose `gpu_type` is `"AMD RX 6600"`.
    pub fn profile_for(&self, gpu_type: &str) -> Option<(&str, &GpuProfile)> {
        let lower = gpu_type.to_lowercase();
        self.profiles
            .iter()
            .filter(|(k, _)| lower.contains(&k.to_lowercase()))
            .max_by_key(|(k, _)| k.len())
            .map(|(k, p)| (k.as_str(), p))
    }
}

/// Broker-side limits the producer and consumer must respect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerSettings {
    /// RabbitMQ `consumer_timeout` (must match rabbitmq.conf).
    pub consumer_timeout_ms: u64,
    /// Quorum queue `x-delivery-limit`.
    pub delivery_limit: u32,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            consumer_timeout_ms: 1_800_000,
            delivery_limit: crate::topology::DEFAULT_DELIVERY_LIMIT,
        }
    }
}

/// Chunk sizing: the original system's `gpu_optimizer` rules adapted to a pull queue
/// (`docs/defects.md` C9, R10; the producer's planner applies them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkingConfig {
    /// Aim for chunks that take this many seconds on the slowest active slot class.
    pub target_chunk_secs: f64,
    /// Smallest planned chunk, seeds (the consumer-timeout cap still wins over it).
    pub min_chunk_seeds: u64,
    /// With `max_factor`, bounds the largest planned chunk, seeds.
    pub base_chunk_seeds: u64,
    /// Max chunk = `base_chunk_seeds * max_factor`.
    pub max_factor: u64,
    /// While the range allows, plan at least this many chunks per active slot so none idles.
    pub chunks_per_slot: u64,
    /// A chunk on the slowest class may take at most this fraction of
    /// `broker.consumer_timeout_ms` (RabbitMQ closes the channel of a delivery unacked longer).
    pub max_fraction_of_consumer_timeout: f64,
    /// Weight of a new chunk timing in the learned-throughput EMA:
    /// `new = ema_alpha * sample + (1 - ema_alpha) * old`.
    pub ema_alpha: f64,
    /// Work units (draw comparisons) per second assumed when a class has neither a learned
    /// rate nor a profile; deliberately low.
    pub default_evals_per_second: f64,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig {
            target_chunk_secs: 30.0,
            min_chunk_seeds: 500,
            base_chunk_seeds: 100_000,
            max_factor: 50,
            chunks_per_slot: 4,
            max_fraction_of_consumer_timeout: 0.1,
            ema_alpha: 0.3,
            default_evals_per_second: 50_000_000.0,
        }
    }
}

impl ChunkingConfig {
    /// Largest planned chunk: `base_chunk_seeds * max_factor` (saturating), seeds.
    pub fn max_chunk_seeds(&self) -> u64 {
        self.base_chunk_seeds.saturating_mul(self.max_factor)
    }
}

/// Transient-failure retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts in total (first run included) before a chunk is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt, ms; doubles for each further attempt.
    pub initial_backoff_ms: u64,
    /// Cap of the doubling delay, ms (before jitter).
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }
}

impl RetryConfig {
    /// Delay before attempt `next_attempt` (2, 3, ...): `initial * 2^(next-2)` capped at
    /// `max_backoff_ms`, then "full jitter" scaled into `[delay/2, delay]` by `jitter01` in [0,1).
    pub fn backoff_ms(&self, next_attempt: u32, jitter01: f64) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(32);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms)
            .max(1);
        let jitter = jitter01.clamp(0.0, 1.0);
        (base as f64 * (0.5 + 0.5 * jitter)).round().max(1.0) as u64
    }
}

/// Job bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobsConfig {
    /// Finished jobs expire from Redis after this long.
    pub result_ttl_secs: u64,
    /// Heartbeat TTL: a node silent this long is gone.
    pub heartbeat_ttl_secs: u64,
    /// A sieve expected to keep more survivors than this is refused before publishing
    /// (`--max-survivors` raises it per job; `--count-only` jobs keep no records). At 3-4 bytes
    /// a survivor in Redis, the default is ~100 MB.
    pub max_survivors: u64,
    /// Most bytes of script results (output files and log tails) one batch keeps in Redis: a
    /// task whose result would pass it is dead-lettered as `batch_output_limit` (a failed
    /// attempt's record is kept without its output), so that a batch of many large outputs
    /// cannot fill Redis. 0: no limit. Default 1 GiB.
    pub max_batch_output_bytes: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            result_ttl_secs: 7 * 24 * 3600,
            heartbeat_ttl_secs: 30,
            max_survivors: 25_000_000,
            max_batch_output_bytes: 1 << 30,
        }
    }
}

/// A GPU class's measured throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuProfile {
    /// Informational label (`cuda`, `rocm`, `cpu`); not used for sizing.
    pub architecture: String,
    /// Seeds per second of one slot of this class, measured at `reference_window` x
    /// `reference_skip_span`; converted to work units per second for planning.
    pub seeds_per_second: f64,
    /// The original system's per-GPU chunk multiplier. Accepted so its profiles load, and
    /// ignored: in a pull queue chunks are sized for the slowest active class (see
    /// `config/cluster.toml`).
    pub scaling_factor: f64,
    /// Window length (draws) at which `seeds_per_second` was measured.
    pub reference_window: u64,
    /// Skip span (`skip_max - skip_min + 1`) at which `seeds_per_second` was measured.
    pub reference_skip_span: u64,
}

impl Default for GpuProfile {
    fn default() -> Self {
        GpuProfile {
            architecture: "cpu".into(),
            seeds_per_second: 20_000.0,
            scaling_factor: 1.0,
            reference_window: 512,
            reference_skip_span: 21,
        }
    }
}

/// Which kind of device a node's seed slots use (the one backend enum of seedq).
pub use seedq_core::Backend as NodeBackend;

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuConfig {
    /// Device index on the node (the slot name is `gpu<index>`).
    pub index: u32,
    /// Model name, the GPU's throughput key.
    pub model: String,
}

/// `gpus = 2` or `gpus = ["RTX 3080 Ti", "RTX 3080 Ti"]` or `gpus = [{index = 0, model = "..."}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpusField {
    /// `gpus = 2`: that many GPUs, indexed from 0, each of the node's `gpu_type`.
    Count(u32),
    /// `gpus = ["RTX 3080 Ti", ...]`: one GPU per entry, indexed from 0, with its model.
    Models(Vec<String>),
    /// `gpus = [{index = 0, model = "..."}]`: explicit indices and models.
    Detailed(Vec<GpuConfig>),
}

impl Default for GpusField {
    fn default() -> Self {
        GpusField::Count(0)
    }
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// The node's name (consumer `--node`, default the hostname): heartbeats, connection names,
    /// pinned script queues.
    pub name: String,
    /// The device kind its seed slots run on (default `cpu`).
    pub backend: NodeBackend,
    /// GPU model name (throughput and profile key); `cpu` for CPU nodes.
    #[serde(alias = "gpu_model")]
    pub gpu_type: String,
    /// The node's GPUs; one seed slot each (ignored on CPU nodes).
    pub gpus: GpusField,
    /// Script jobs run at once (prefetch of the node's script consumer).
    #[serde(alias = "script_limit")]
    pub max_script_jobs: u32,
    /// Directory script paths and expected outputs are relative to; paths escaping it are refused.
    pub script_root: String,
    /// Interpreter for script jobs.
    pub python_env: String,
    /// CPU seed slots when the node has no GPU (or `--backend cpu`).
    pub cpu_slots: u32,
    /// Threads per CPU slot.
    pub cpu_threads: u32,
    /// Environment set before any GPU library is touched and passed to scripts
    /// (HSA_OVERRIDE_GFX_VERSION, HSA_ENABLE_SDMA, ROCM_PATH, HIP_PATH, PYTORCH_HIP_ALLOC_CONF...).
    pub env: BTreeMap<String, String>,
    /// Variables a script job may set through the jobs file's `env` (names, or prefixes ending
    /// in `*`). Empty by default: a job that sets any variable is refused (`env_not_allowed`).
    /// `SEEDQ_*` names are never allowed.
    pub script_env_allow: Vec<String>,
    /// Largest file a script job may write, bytes (RLIMIT_FSIZE on its processes: a write past
    /// it stops the script, dead-lettered as `output_too_large`), so that a runaway job cannot
    /// fill the node's disk. 0: no limit. Default 4 GiB.
    pub script_max_file_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: String::new(),
            backend: NodeBackend::Cpu,
            gpu_type: "cpu".into(),
            gpus: GpusField::Count(0),
            max_script_jobs: 1,
            script_root: ".".into(),
            python_env: "python3".into(),
            cpu_slots: 1,
            cpu_threads: 2,
            env: BTreeMap::new(),
            script_env_allow: Vec::new(),
            script_max_file_bytes: 4 << 30,
        }
    }
}

impl NodeConfig {
    /// Whether a script job may set variable `name` on this node (see `script_env_allow`).
    pub fn allows_script_env(&self, name: &str) -> bool {
        !crate::script::reserved_env_name(name)
            && self
                .script_env_allow
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => allowed == name,
                })
    }

    /// The node's GPUs, indexed from 0 (models default to `gpu_type`).
    pub fn gpu_list(&self) -> Vec<GpuConfig> {
        match &self.gpus {
            GpusField::Count(n) => (0..*n)
                .map(|i| GpuConfig {
                    index: i,
                    model: self.gpu_type.clone(),
                })
                .collect(),
            GpusField::Models(models) => models
                .iter()
                .enumerate()
                .map(|(i, m)| GpuConfig {
                    index: i as u32,
                    model: m.clone(),
                })
                .collect(),
            GpusField::Detailed(list) => list.clone(),
        }
    }

    /// The model used for throughput keys of this node's seed slots.
    pub fn throughput_model(&self) -> String {
        match self.backend {
            NodeBackend::Cpu => "cpu".to_string(),
            _ => self.gpu_type.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shipped_configs() {
        for file in ["../config/cluster.toml", "../config/local.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            if path.exists() {
                let cfg = ClusterConfig::load(&path).unwrap();
                assert!(!cfg.nodes.is_empty(), "{file} lists nodes");
            }
        }
    }

    #[test]
    fn nodes_and_profiles() {
        let cfg = ClusterConfig::from_toml_str(
            r#"
            [profiles."RX 6600"]
            seeds_per_second = 10.0
            [[nodes]]
            name = "rig"
            backend = "hip"
            gpu_type = "AMD RX 6600"
            gpus = 3
            max_script_jobs = 1
            [nodes.env]
            HSA_OVERRIDE_GFX_VERSION = "10.3.0"
            [[nodes]]
            name = "zeus"
            backend = "cuda"
            gpus = ["RTX 3080 Ti", "RTX 3080 Ti"]
            "#,
        )
        .unwrap();
        let rig = cfg.node("rig").unwrap();
        assert_eq!(rig.gpu_list().len(), 3);
        assert_eq!(rig.env["HSA_OVERRIDE_GFX_VERSION"], "10.3.0");
        assert_eq!(cfg.profile_for(&rig.gpu_type).unwrap().0, "RX 6600");
        assert_eq!(cfg.node("zeus").unwrap().gpu_list()[1].model, "RTX 3080 Ti");
        assert_eq!(cfg.node_or_default("other").backend, NodeBackend::Cpu);
        assert_eq!(cfg.retry.max_attempts, 5);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        };
        assert_eq!(r.backoff_ms(2, 1.0), 100);
        assert_eq!(r.backoff_ms(3, 1.0), 200);
        assert_eq!(r.backoff_ms(10, 1.0), 1000);
        assert_eq!(r.backoff_ms(3, 0.0), 100);
    }

    #[test]
    fn script_env_allow_takes_names_and_prefixes_but_never_seedq_or_the_loader() {
        let node = NodeConfig {
            script_env_allow: vec![
                "OMP_NUM_THREADS".into(),
                "MYAPP_*".into(),
                "SEEDQ_*".into(),
                "LD_PRELOAD".into(),
            ],
            ..NodeConfig::default()
        };
        assert!(node.allows_script_env("OMP_NUM_THREADS"));
        assert!(node.allows_script_env("MYAPP_MODE"));
        assert!(!node.allows_script_env("OMP_THREAD_LIMIT"));
        assert!(!node.allows_script_env("SEEDQ_AMQP_URL"));
        assert!(!node.allows_script_env("LD_PRELOAD"));
        assert!(!NodeConfig::default().allows_script_env("OMP_NUM_THREADS"));
    }
}
