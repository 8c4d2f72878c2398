//! Shared helpers of the script-job and operator end-to-end tests: a test cluster (its own
//! cluster.toml, script roots and consumers) and readers for the fixture's timeline log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use seedq_e2e::{
    amqp_url, consumer_bin, encode_segment, eventually, mgmt_request, producer_bin, redis_url,
    workspace_root, Namespace,
};

/// One node of the test cluster.
pub struct NodeSpec {
    pub name: &'static str,
    pub limit: u32,
    pub gpus: u32,
}

/// A test cluster: a namespace, a config file, script roots and running consumers.
pub struct Cluster {
    pub ns: Namespace,
    pub config: PathBuf,
    pub roots: BTreeMap<String, PathBuf>,
    pub consumers: Vec<Child>,
    /// The shared Redis by default; a test's own [`seedq_e2e::PrivateRedis`] to take it down.
    pub redis_url: String,
    /// The shared broker by default; a test's own [`seedq_e2e::PrivateRabbit`] to restart it.
    pub amqp_url: String,
    /// More environment for every consumer and producer this cluster starts (a job key, ...).
    pub extra_env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(tag: &str, nodes: &[NodeSpec], max_attempts: u32) -> Cluster {
        let ns = Namespace::new(tag);
        let mut roots = BTreeMap::new();
        let mut toml = format!(
            "namespace = \"seedq\"\n[broker]\nconsumer_timeout_ms = 1800000\ndelivery_limit = 20\n\
             [retry]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 100\nmax_backoff_ms = 300\n\
             [jobs]\nresult_ttl_secs = 3600\nheartbeat_ttl_secs = 30\n"
        );
        for node in nodes {
            let root = ns.path(&format!("root-{}", node.name));
            std::fs::create_dir_all(&root).unwrap();
            std::fs::copy(
                workspace_root().join("e2e/fixtures/scripts/job.py"),
                root.join("job.py"),
            )
            .unwrap();
            toml.push_str(&format!(
                "[[nodes]]\nname = \"{}\"\nbackend = \"cpu\"\ngpu_type = \"cpu\"\ngpus = {}\ncpu_slots = 1\ncpu_threads = 1\n\
                 max_script_jobs = {}\nscript_root = \"{}\"\npython_env = \"python3\"\n\
                 [nodes.env]\nPYTORCH_HIP_ALLOC_CONF = \"garbage_collection_threshold:0.8\"\n",
                node.name,
                node.gpus,
                node.limit,
                root.display()
            ));
            roots.insert(node.name.to_string(), root);
        }
        let config = ns.path("cluster.toml");
        std::fs::write(&config, toml).unwrap();
        Cluster {
            ns,
            config,
            roots,
            consumers: Vec::new(),
            redis_url: redis_url(),
            amqp_url: amqp_url(),
            extra_env: Vec::new(),
        }
    }

    pub fn root(&self, node: &str) -> &Path {
        &self.roots[node]
    }

    pub fn start(&mut self, node: &str) {
        self.start_with(node, &[]);
    }

    /// [`Cluster::start`] with more consumer flags (`--metrics-port`, ...).
    pub fn start_with(&mut self, node: &str, extra: &[&str]) {
        self.start_with_unset(node, extra, &[]);
    }

    /// [`Cluster::start_with`] without the variables `unset` (e.g. `SEEDQ_REDIS_URL`, for a
    /// consumer that reads it from `SEEDQ_REDIS_URL_FILE`).
    pub fn start_with_unset(&mut self, node: &str, extra: &[&str], unset: &[&str]) {
        let log = std::fs::File::create(self.ns.path(&format!("{node}.log"))).unwrap();
        let mut command = Command::new(consumer_bin());
        command
            .args([
                "--config",
                self.config.to_str().unwrap(),
                "--node",
                node,
                "--backend",
                "cpu",
                "--slots",
                "1",
                "--cpu-threads",
                "1",
            ])
            .args(extra)
            .env("SEEDQ_NAMESPACE", &self.ns.name)
            .env("SEEDQ_AMQP_URL", &self.amqp_url)
            .env("SEEDQ_REDIS_URL", &self.redis_url)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info");
        for name in unset {
            command.env_remove(name);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn seedq-consumer");
        self.consumers.push(child);
    }

    pub fn producer(&self, args: &[&str]) -> Output {
        Command::new(producer_bin())
            .args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("SEEDQ_NAMESPACE", &self.ns.name)
            .env("SEEDQ_AMQP_URL", &self.amqp_url)
            .env("SEEDQ_REDIS_URL", &self.redis_url)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run seedq-producer")
    }

    pub fn producer_ok(&self, args: &[&str]) -> String {
        let out = self.producer(args);
        assert!(
            out.status.success(),
            "seedq-producer {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `scripts --jobs-file FILE --wait` for a batch some of whose tasks fail for good: asserts
    /// that the wait reports dead letters (exit 3) and returns the batch id.
    pub fn scripts_with_dead_letters(&self, file: &str, timeout_secs: u32) -> String {
        let timeout = timeout_secs.to_string();
        let out = self.producer(&[
            "scripts",
            "--jobs-file",
            file,
            "--wait",
            "--timeout",
            &timeout,
        ]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "wait reports the dead letters:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().next().unwrap().trim().to_string()
    }

    /// `dlq list --job BATCH` as JSON.
    pub fn dlq_of(&self, batch: &str) -> Value {
        serde_json::from_str(&self.producer_ok(&["--json", "dlq", "list", "--job", batch])).unwrap()
    }

    pub fn jobs_file(&self, name: &str, jobs: &Value) -> String {
        let path = self.ns.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(jobs).unwrap()).unwrap();
        path.display().to_string()
    }

    /// Consumers on a queue: (tag, prefetch, connection name).
    pub fn queue_consumers(&self, queue: &str) -> Vec<(String, u64, String)> {
        let (code, body) = mgmt_request("GET", "/api/consumers").expect("management API on 15672");
        assert_eq!(code, 200, "{body}");
        let all: Value = serde_json::from_str(&body).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|c| c["queue"]["name"] == queue)
            .map(|c| {
                (
                    c["consumer_tag"].as_str().unwrap_or("").to_string(),
                    c["prefetch_count"].as_u64().unwrap_or(0),
                    c["channel_details"]["connection_name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    /// Waits until the management API shows each node's script consumer on the shared queue and
    /// on its pinned queue (two channels, subscribed independently; the API lags a little).
    pub fn wait_for_script_consumers(&self, nodes: &[&str]) {
        let queue = format!("{}.scripts", self.ns.name);
        eventually(
            &format!("script consumers of {nodes:?} on {queue} and their pinned queues"),
            Duration::from_secs(60),
            || {
                let tags: Vec<String> = self
                    .queue_consumers(&queue)
                    .into_iter()
                    .map(|c| c.0)
                    .collect();
                nodes.iter().all(|n| {
                    let tag = format!("{n}/scripts");
                    tags.contains(&tag)
                        && self
                            .queue_consumers(&format!("{queue}.{n}"))
                            .iter()
                            .any(|c| c.0 == tag)
                })
            },
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.consumers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Pinned queues of nodes that died without a goodbye are not in the heartbeat index.
        for node in self.roots.keys() {
            let queue = format!("{}.scripts.{node}", self.ns.name);
            let _ = mgmt_request(
                "DELETE",
                &format!("/api/queues/%2F/{}", encode_segment(&queue)),
            );
        }
        let _ = self.producer(&["teardown", "--yes"]);
    }
}

pub fn sleep_job(id: &str, secs: f64, log: &str) -> Value {
    json!({"job_id": id, "script": "job.py", "args": ["sleep", format!("out/{id}.json"), secs.to_string(), log],
           "expected_output": format!("out/{id}.json"), "timeout": 120, "analysis_type": "script"})
}

/// `(node, task, start, end)` from the fixture's log lines.
pub fn intervals(log: &str) -> Vec<(String, String, f64, f64)> {
    let mut starts: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (event, node, task, t) = (
            parts[0],
            parts[1],
            parts[2],
            parts[3].parse::<f64>().unwrap(),
        );
        match event {
            "start" => {
                starts.insert(task.to_string(), (node.to_string(), t));
            }
            _ => {
                let (node, start) = starts.remove(task).expect("end after start");
                out.push((node, task.to_string(), start, t));
            }
        }
    }
    out
}

/// Highest number of overlapping intervals.
pub fn peak(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|(s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // Ends before starts at equal times: back-to-back jobs do not overlap.
    events.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
    let (mut now, mut best) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        best = best.max(now);
    }
    best as usize
}

pub fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}
