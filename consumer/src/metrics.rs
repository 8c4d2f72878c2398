//! Prometheus metrics of a node: chunks, seeds, failures by reason, durations, busy slots and
//! script jobs, served in the text exposition format (version 0.0.4) on an optional port.
//!
//! Dependency-free on purpose: a handful of counters behind one mutex (updated a few times per
//! chunk, never per seed) and a tiny HTTP/1.1 responder on a tokio `TcpListener` that answers
//! `GET /metrics` (and `/`) and closes the connection. Prometheus needs nothing more.
//!
//! Call pattern from the slots: `chunk_started(slot)`, then either
//! `chunk_finished(slot, seeds, secs)` or `chunk_failed(reason)` followed by `slot_idle(slot)`
//! (failures are counted by reason, not per slot, so the slot is released explicitly).
//! Script jobs: `script_started()`, then `script_finished(ok, secs)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

#[derive(Debug, Default)]
struct Inner {
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
}

/// The node's metrics. Cheap to update from any task or thread.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
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
    pub fn chunk_failed(&self, reason: &str) {
        self.with(|m| *m.failures.entry(reason.to_string()).or_default() += 1);
    }

    /// Marks a slot idle without counting a finished chunk (after a failure).
    pub fn slot_idle(&self, slot: &str) {
        self.with(|m| {
            m.busy.insert(slot.to_string(), false);
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
        out
    }

    /// Serves `/metrics` on `0.0.0.0:port` until the task is dropped.
    pub async fn serve(self: Arc<Self>, port: u16) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| {
                format!("binding the metrics port {port} (choose another with --metrics-port)")
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

    #[test]
    fn counters_histograms_and_gauges_render() {
        let metrics = Metrics::new();
        metrics.chunk_started("gpu0");
        metrics.chunk_started("gpu1");
        metrics.chunk_finished("gpu0", 1000, 0.2);
        metrics.chunk_failed("invalid_message");
        metrics.chunk_failed("invalid_message");
        metrics.chunk_failed("redis \"down\"");
        metrics.script_started();
        metrics.script_started();
        metrics.script_finished(true, 42.0);
        let text = metrics.render();
        for line in [
            "seedq_chunks_started_total{slot=\"gpu1\"} 1",
            "seedq_chunks_finished_total{slot=\"gpu0\"} 1",
            "seedq_seeds_processed_total{slot=\"gpu0\"} 1000",
            "seedq_chunk_failures_total{reason=\"invalid_message\"} 2",
            "seedq_chunk_failures_total{reason=\"redis \\\"down\\\"\"} 1",
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
