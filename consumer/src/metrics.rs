//! Prometheus metrics of a node: chunks, seeds, failures by reason, durations, busy slots and
//! script jobs, served in the text exposition format (version 0.0.4) on an optional port
//! (`--metrics-port`), bound to `--metrics-addr` (127.0.0.1 unless a monitoring host must reach it).
//! `deploy/prometheus` scrapes these names and `deploy/grafana/dashboards/seedq.json` charts
//! them: renaming one breaks the dashboard (`scripts/check-monitoring.sh` catches that).
//!
//! Identity is one info metric, `seedq_node_info{node,backend,namespace,version} 1`, joined on
//! `instance` in queries, rather than a `node` label on every series: the scrape target already
//! identifies the process, and the join keeps the series' label sets what they always were.
//!
//! Dependency-free on purpose: a handful of counters behind one mutex (updated a few times per
//! chunk, never per seed) and a tiny HTTP/1.1 responder on a tokio `TcpListener` that answers
//! `GET /metrics` (and `/`) and closes the connection. Prometheus needs nothing more.
//!
//! Call pattern from the slots: `chunk_started(slot)`, then either
//! `chunk_finished(slot, seeds, secs)` or `chunk_failed(reason)` followed by `slot_idle(slot)`
//! (failures are counted by reason, not per slot, so the slot is released explicitly).
//! Script jobs: `script_started()`, then `script_finished(ok, secs)`. At start-up the node
//! declares itself (`set_node_info`), its slots (`register_slot`, so an idle slot is a 0, not a
//! missing series) and its script limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bounds (seconds) of the duration histogram buckets: chunks aim at tens of seconds,
/// script jobs run up to hours.
const BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last entry is `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let secs = if secs.is_finite() && secs >= 0.0 {
            secs
        } else {
            0.0
        };
        let bucket = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Who this process is (`seedq_node_info`).
#[derive(Debug, Default, Clone)]
struct NodeInfo {
    node: String,
    backend: String,
    namespace: String,
}

#[derive(Debug, Default)]
struct Inner {
    info: Option<NodeInfo>,
    /// Unix time the metrics were created (process start, near enough): a restart loop shows as
    /// `changes(process_start_time_seconds[...])`.
    start_time: f64,
    script_limit: u64,
    chunks_started: BTreeMap<String, u64>,
    chunks_finished: BTreeMap<String, u64>,
    seeds: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    busy: BTreeMap<String, bool>,
    chunk_durations: Histogram,
    scripts_running: u64,
    scripts_ok: u64,
    scripts_failed: u64,
    script_durations: Histogram,
    /// Slot -> quarantined now.
    quarantined: BTreeMap<String, bool>,
    /// (slot, reason) -> quarantines.
    quarantines: BTreeMap<(String, &'static str), u64>,
    /// (slot, "pass" | "fail") -> self-tests run.
    self_tests: BTreeMap<(String, &'static str), u64>,
    /// Slot -> duration of its last passed self-test, seconds.
    self_test_secs: BTreeMap<String, f64>,
}

/// The node's metrics. Cheap to update from any task or thread.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let metrics = Metrics::default();
        metrics.with(|m| {
            m.start_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        });
        Arc::new(metrics)
    }

    /// The node's identity, exported as `seedq_node_info` (dashboards join on it for `node`).
    pub fn set_node_info(&self, node: &str, backend: &str, namespace: &str) {
        self.with(|m| {
            m.info = Some(NodeInfo {
                node: node.to_string(),
                backend: backend.to_string(),
                namespace: namespace.to_string(),
            })
        });
    }

    /// Declares a seed slot before it takes work, so `seedq_slot_busy{slot}` reads 0 for an idle
    /// slot instead of being absent and `seedq_slots` counts it, and its counters start at 0
    /// (a counter that appears only at its first increment loses that increment to `rate()`).
    pub fn register_slot(&self, slot: &str) {
        self.with(|m| {
            m.busy.entry(slot.to_string()).or_insert(false);
            m.quarantined.entry(slot.to_string()).or_insert(false);
            for result in ["pass", "fail"] {
                m.self_tests.entry((slot.to_string(), result)).or_default();
            }
            for counter in [&mut m.chunks_started, &mut m.chunks_finished, &mut m.seeds] {
                counter.entry(slot.to_string()).or_default();
            }
        });
    }

    /// How many script jobs this node runs at once (0 with `--no-scripts`).
    pub fn set_script_limit(&self, limit: u64) {
        self.with(|m| m.script_limit = limit);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic elsewhere while holding the lock must not take the metrics down with it.
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// A slot took a chunk (slots run one chunk at a time).
    pub fn chunk_started(&self, slot: &str) {
        self.with(|m| {
            *m.chunks_started.entry(slot.to_string()).or_default() += 1;
            m.busy.insert(slot.to_string(), true);
        });
    }

    /// A slot finished a chunk of `seeds` seeds in `secs` seconds; the slot is idle again.
    pub fn chunk_finished(&self, slot: &str, seeds: u64, secs: f64) {
        self.with(|m| {
            *m.chunks_finished.entry(slot.to_string()).or_default() += 1;
            *m.seeds.entry(slot.to_string()).or_default() += seeds;
            m.busy.insert(slot.to_string(), false);
            m.chunk_durations.observe(secs);
        });
    }

    /// A chunk failed (retried or dead-lettered) for `reason`, a short code such as `invalid_message`.
    pub fn chunk_failed(&self, reason: seedq_protocol::FailureReason) {
        self.with(|m| *m.failures.entry(reason.as_str().to_string()).or_default() += 1);
    }

    /// Marks a slot idle without counting a finished chunk (after a failure).
    pub fn slot_idle(&self, slot: &str) {
        self.with(|m| {
            m.busy.insert(slot.to_string(), false);
        });
    }

    /// A self-test ran on `slot` (`secs`: its duration, when it passed).
    pub fn self_test(&self, slot: &str, passed: bool, secs: f64) {
        self.with(|m| {
            let result = if passed { "pass" } else { "fail" };
            *m.self_tests.entry((slot.to_string(), result)).or_default() += 1;
            if passed {
                m.self_test_secs.insert(slot.to_string(), secs);
            }
        });
    }

    /// `slot` was quarantined for `reason`.
    pub fn slot_quarantined(&self, slot: &str, reason: seedq_protocol::QuarantineReason) {
        self.with(|m| {
            m.quarantined.insert(slot.to_string(), true);
            *m.quarantines
                .entry((slot.to_string(), reason.as_str()))
                .or_default() += 1;
        });
    }

    /// `slot` passed its self-test and is back in service.
    pub fn slot_released(&self, slot: &str) {
        self.with(|m| {
            m.quarantined.insert(slot.to_string(), false);
        });
    }

    pub fn script_started(&self) {
        self.with(|m| m.scripts_running += 1);
    }

    pub fn script_finished(&self, ok: bool, secs: f64) {
        self.with(|m| {
            m.scripts_running = m.scripts_running.saturating_sub(1);
            if ok {
                m.scripts_ok += 1;
            } else {
                m.scripts_failed += 1;
            }
            m.script_durations.observe(secs);
        });
    }

    /// Script jobs running now (for the heartbeat's `scripts_running`).
    pub fn scripts_running(&self) -> u64 {
        self.with(|m| m.scripts_running)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let (info, start_time, script_limit) =
            self.with(|m| (m.info.clone(), m.start_time, m.script_limit));
        let m = self.with(|m| {
            (
                m.chunks_started.clone(),
                m.chunks_finished.clone(),
                m.seeds.clone(),
                m.failures.clone(),
                m.busy.clone(),
                m.chunk_durations.clone(),
                (m.scripts_running, m.scripts_ok, m.scripts_failed),
                m.script_durations.clone(),
            )
        });
        let (started, finished, seeds, failures, busy, chunk_durations, scripts, script_durations) =
            m;
        let mut out = String::with_capacity(4096);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        let labelled =
            |out: &mut String, name: &str, label: &str, values: &BTreeMap<String, u64>| {
                for (key, value) in values {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape(key));
                }
            };
        family(
            &mut out,
            "seedq_node_info",
            "gauge",
            "Always 1; the labels say which node this is, its seed backend and namespace.",
        );
        if let Some(info) = &info {
            let _ = writeln!(
                out,
                "seedq_node_info{{node=\"{}\",backend=\"{}\",namespace=\"{}\",version=\"{}\"}} 1",
                escape(&info.node),
                escape(&info.backend),
                escape(&info.namespace),
                env!("CARGO_PKG_VERSION")
            );
        }
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {start_time}");
        family(
            &mut out,
            "seedq_chunks_started_total",
            "counter",
            "Seed chunks taken, by slot.",
        );
        labelled(&mut out, "seedq_chunks_started_total", "slot", &started);
        family(
            &mut out,
            "seedq_chunks_finished_total",
            "counter",
            "Seed chunks finished and acked, by slot.",
        );
        labelled(&mut out, "seedq_chunks_finished_total", "slot", &finished);
        family(
            &mut out,
            "seedq_seeds_processed_total",
            "counter",
            "Seeds tested in finished chunks, by slot.",
        );
        labelled(&mut out, "seedq_seeds_processed_total", "slot", &seeds);
        family(
            &mut out,
            "seedq_chunk_failures_total",
            "counter",
            "Chunk failures (retried or dead-lettered), by reason.",
        );
        labelled(&mut out, "seedq_chunk_failures_total", "reason", &failures);
        family(
            &mut out,
            "seedq_chunk_duration_seconds",
            "histogram",
            "Wall time of finished chunks.",
        );
        chunk_durations.render(&mut out, "seedq_chunk_duration_seconds");
        family(
            &mut out,
            "seedq_slot_busy",
            "gauge",
            "1 while the slot runs a chunk.",
        );
        for (slot, is_busy) in &busy {
            let _ = writeln!(
                out,
                "seedq_slot_busy{{slot=\"{}\"}} {}",
                escape(slot),
                u8::from(*is_busy)
            );
        }
        family(
            &mut out,
            "seedq_slots",
            "gauge",
            "Seed slots this node runs.",
        );
        let _ = writeln!(out, "seedq_slots {}", busy.len());
        family(
            &mut out,
            "seedq_slots_busy",
            "gauge",
            "Slots running a chunk now.",
        );
        let _ = writeln!(
            out,
            "seedq_slots_busy {}",
            busy.values().filter(|b| **b).count()
        );
        family(
            &mut out,
            "seedq_scripts_running",
            "gauge",
            "Script jobs running now.",
        );
        let _ = writeln!(out, "seedq_scripts_running {}", scripts.0);
        family(
            &mut out,
            "seedq_script_limit",
            "gauge",
            "Script jobs this node runs at once (its script prefetch).",
        );
        let _ = writeln!(out, "seedq_script_limit {script_limit}");
        family(
            &mut out,
            "seedq_scripts_finished_total",
            "counter",
            "Script job attempts finished, by outcome.",
        );
        let _ = writeln!(
            out,
            "seedq_scripts_finished_total{{outcome=\"ok\"}} {}",
            scripts.1
        );
        let _ = writeln!(
            out,
            "seedq_scripts_finished_total{{outcome=\"failed\"}} {}",
            scripts.2
        );
        family(
            &mut out,
            "seedq_script_duration_seconds",
            "histogram",
            "Wall time of script job attempts.",
        );
        script_durations.render(&mut out, "seedq_script_duration_seconds");
        self.render_health(&mut out);
        out
    }

    /// Quarantine and self-test series (`crate::health`).
    fn render_health(&self, out: &mut String) {
        let (quarantined, quarantines, self_tests, self_test_secs) = self.with(|m| {
            (
                m.quarantined.clone(),
                m.quarantines.clone(),
                m.self_tests.clone(),
                m.self_test_secs.clone(),
            )
        });
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            out,
            "seedq_slot_quarantined",
            "gauge",
            "1 while the slot is quarantined (failed self-test or backend errors in a row).",
        );
        for (slot, q) in &quarantined {
            let _ = writeln!(
                out,
                "seedq_slot_quarantined{{slot=\"{}\"}} {}",
                escape(slot),
                u8::from(*q)
            );
        }
        family(
            out,
            "seedq_slot_quarantines_total",
            "counter",
            "Times a slot was quarantined, by slot and reason.",
        );
        for ((slot, reason), n) in &quarantines {
            let _ = writeln!(
                out,
                "seedq_slot_quarantines_total{{slot=\"{}\",reason=\"{reason}\"}} {n}",
                escape(slot)
            );
        }
        family(
            out,
            "seedq_self_tests_total",
            "counter",
            "Known-answer self-tests run, by slot and result (pass, fail).",
        );
        for ((slot, result), n) in &self_tests {
            let _ = writeln!(
                out,
                "seedq_self_tests_total{{slot=\"{}\",result=\"{result}\"}} {n}",
                escape(slot)
            );
        }
        family(
            out,
            "seedq_self_test_seconds",
            "gauge",
            "Duration of the slot's last passed self-test.",
        );
        for (slot, secs) in &self_test_secs {
            let _ = writeln!(
                out,
                "seedq_self_test_seconds{{slot=\"{}\"}} {secs}",
                escape(slot)
            );
        }
    }

    /// Serves `/metrics` on `addr` until the task is dropped. The address is the operator's
    /// choice (`--metrics-addr`, default 127.0.0.1): the metrics name jobs and nodes, which is
    /// nothing for every network the node is on to read.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "binding the metrics address {addr} (choose another with --metrics-addr / --metrics-port)"
            )
        })?;
        tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
        self.serve_on(listener).await
    }

    /// Serves on an already bound listener (tests bind port 0).
    pub async fn serve_on(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait and keep serving.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&self);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), metrics.answer(stream)).await;
            });
        }
    }

    async fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut request = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let line = request
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, content_type, body) = match (method, path) {
            ("GET" | "HEAD", "/metrics" | "/") => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            ("GET" | "HEAD", _) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "try /metrics\n".to_string(),
            ),
            _ => (
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "GET only\n".to_string(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_protocol::FailureReason;

    #[test]
    fn counters_histograms_and_gauges_render() {
        let metrics = Metrics::new();
        metrics.chunk_started("gpu0");
        metrics.chunk_started("gpu1");
        metrics.chunk_finished("gpu0", 1000, 0.2);
        metrics.chunk_failed(FailureReason::InvalidMessage);
        metrics.chunk_failed(FailureReason::InvalidMessage);
        metrics.chunk_failed(FailureReason::RedisUnavailable);
        metrics.script_started();
        metrics.script_started();
        metrics.script_finished(true, 42.0);
        let text = metrics.render();
        for line in [
            "seedq_chunks_started_total{slot=\"gpu1\"} 1",
            "seedq_chunks_finished_total{slot=\"gpu0\"} 1",
            "seedq_seeds_processed_total{slot=\"gpu0\"} 1000",
            "seedq_chunk_failures_total{reason=\"invalid_message\"} 2",
            "seedq_chunk_failures_total{reason=\"redis_unavailable\"} 1",
            "seedq_chunk_duration_seconds_bucket{le=\"0.1\"} 0",
            "seedq_chunk_duration_seconds_bucket{le=\"0.5\"} 1",
            "seedq_chunk_duration_seconds_bucket{le=\"+Inf\"} 1",
            "seedq_chunk_duration_seconds_sum 0.2",
            "seedq_chunk_duration_seconds_count 1",
            "seedq_slot_busy{slot=\"gpu0\"} 0",
            "seedq_slot_busy{slot=\"gpu1\"} 1",
            "seedq_slots_busy 1",
            "seedq_scripts_running 1",
            "seedq_scripts_finished_total{outcome=\"ok\"} 1",
            "seedq_script_duration_seconds_bucket{le=\"60\"} 1",
            "# TYPE seedq_chunk_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        metrics.slot_idle("gpu1");
        assert!(metrics.render().lines().any(|l| l == "seedq_slots_busy 0"));
    }

    #[test]
    fn identity_slots_and_limits_are_exported_before_any_work() {
        let metrics = Metrics::new();
        // Without an identity there is no info line (never a half-filled one).
        assert!(!metrics
            .render()
            .lines()
            .any(|l| l.starts_with("seedq_node_info{")));
        metrics.set_node_info("rig-6600", "hip", "seedq");
        metrics.register_slot("gpu0");
        metrics.register_slot("gpu1");
        metrics.set_script_limit(1);
        metrics.chunk_started("gpu1");
        // Registering again (a reconnect) must not reset a busy slot.
        metrics.register_slot("gpu1");
        let text = metrics.render();
        let info = format!(
            "seedq_node_info{{node=\"rig-6600\",backend=\"hip\",namespace=\"seedq\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        for line in [
            info.as_str(),
            "seedq_slot_busy{slot=\"gpu0\"} 0",
            "seedq_slot_busy{slot=\"gpu1\"} 1",
            "seedq_slots 2",
            "seedq_seeds_processed_total{slot=\"gpu0\"} 0",
            "seedq_chunks_finished_total{slot=\"gpu0\"} 0",
            "seedq_chunks_started_total{slot=\"gpu1\"} 1",
            "seedq_slots_busy 1",
            "seedq_script_limit 1",
            "seedq_slot_quarantined{slot=\"gpu0\"} 0",
            "seedq_self_tests_total{slot=\"gpu0\",result=\"fail\"} 0",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("process_start_time_seconds has a value");
        assert!(start > 1.6e9, "a Unix time, not {start}");
        metrics.self_test("gpu1", false, 0.0);
        metrics.slot_quarantined("gpu1", seedq_protocol::QuarantineReason::SelfTestFailed);
        let text = metrics.render();
        for line in [
            "seedq_slot_quarantined{slot=\"gpu1\"} 1",
            "seedq_slot_quarantines_total{slot=\"gpu1\",reason=\"self_test_failed\"} 1",
            "seedq_self_tests_total{slot=\"gpu1\",result=\"fail\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        metrics.slot_released("gpu1");
        assert!(metrics
            .render()
            .lines()
            .any(|l| l == "seedq_slot_quarantined{slot=\"gpu1\"} 0"));
        // Every sample belongs to a family announced with # TYPE (Prometheus rejects a scrape
        // otherwise only in strict parsers, but promtool and the dashboard rely on the types).
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(f)))
                .unwrap_or(name);
            assert!(typed.contains(&family), "{sample:?} has no # TYPE line");
        }
    }

    #[tokio::test]
    async fn serve_names_the_address_it_cannot_bind() {
        let metrics = Metrics::new();
        // An address already in use: the error must say which one and which flags choose it.
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = taken.local_addr().unwrap();
        let err = Arc::clone(&metrics).serve(busy).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&busy.to_string()), "{text}");
        assert!(text.contains("--metrics-addr"), "{text}");
    }

    #[tokio::test]
    async fn serves_the_exposition_over_http() {
        let metrics = Metrics::new();
        metrics.chunk_finished("cpu0", 7, 1.5);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(Arc::clone(&metrics).serve_on(listener));
        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = get("/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(response.contains("\nseedq_seeds_processed_total{slot=\"cpu0\"} 7\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
