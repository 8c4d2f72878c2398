//! Helpers for seedq's end-to-end tests: the real `seedq-producer` and `seedq-consumer`
//! binaries, the real RabbitMQ and Redis on this machine, no mocks.
//!
//! * **Binaries.** Cargo only exposes `CARGO_BIN_EXE_*` to tests of the crate that owns the
//!   binary, so these tests find them next to their own executable: a test runs from
//!   `<target>/<profile>/deps/`, the binaries live in `<target>/<profile>/`. Build them first with
//!   the same profile (`cargo build --release --bins`, as `scripts/test.sh` does), or point
//!   `SEEDQ_BIN_DIR` at a directory holding both.
//! * **Isolation.** Every test takes a [`Namespace`] of its own (queue and key prefix); dropping
//!   it kills the consumers it started and removes its queues and keys (`seedq-producer
//!   teardown`), so tests run in parallel and leave nothing behind.
//! * **Services.** `SEEDQ_AMQP_URL` / `SEEDQ_REDIS_URL` as for the binaries; the management API
//!   at `SEEDQ_MGMT_URL` (default `http://127.0.0.1:15672`, guest/guest).
//! * **Services of a test's own**, for tests that take them down: [`PrivateRedis`], and
//!   [`PrivateRabbit`] / [`RabbitCluster`] (one RabbitMQ node, or three clustered, through
//!   `scripts/rabbit-node.sh`: their own ports, data, cookie and epmd). A test that cannot have
//!   them says so with [`skip`] rather than passing silently.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub use seedq_protocol::{DEFAULT_AMQP_URL, DEFAULT_REDIS_URL};

pub fn amqp_url() -> String {
    std::env::var("SEEDQ_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

pub fn redis_url() -> String {
    std::env::var("SEEDQ_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_string())
}

/// The workspace root (for `config/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e sits in the workspace")
        .to_path_buf()
}

/// Directory holding `seedq-producer` and `seedq-consumer` (see the module doc).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SEEDQ_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("test exe has a directory");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap()
    } else {
        deps
    };
    profile_dir.to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: build the binaries with the same profile as the tests first \
         (`cargo build --release --bins` then `cargo test --release`, as scripts/test.sh does), \
         or set SEEDQ_BIN_DIR",
        path.display()
    );
    path
}

pub fn producer_bin() -> PathBuf {
    binary("seedq-producer")
}

pub fn consumer_bin() -> PathBuf {
    binary("seedq-consumer")
}

/// A unique namespace for one test; cleans up on drop.
pub struct Namespace {
    pub name: String,
    consumers: Vec<Consumer>,
    pub dir: PathBuf,
    /// The Redis this namespace's producers and consumers use ([`redis_url`] unless a test points
    /// it at a [`PrivateRedis`]).
    pub redis_url: String,
    /// The broker address(es) its producers and consumers get as `SEEDQ_AMQP_URL` ([`amqp_url`]
    /// unless a test points it at a [`PrivateRabbit`] or the nodes of a [`RabbitCluster`]).
    pub amqp_url: String,
    /// The cluster model every process of this namespace reads (`config/local.toml` unless a test
    /// writes its own, e.g. with a different delivery limit).
    pub config: PathBuf,
    /// `SEEDQ_TLS_CA_FILE` of its producers and consumers (none unless a test talks TLS to
    /// private servers whose certificates its own CA signed).
    pub tls_ca_file: Option<PathBuf>,
}

impl Namespace {
    /// `seedq-e2e-<tag>-<pid>-<n>`: unique across parallel tests and test binaries.
    pub fn new(tag: &str) -> Namespace {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("seedq-e2e-{tag}-{}-{n}-{nanos:x}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Namespace {
            name,
            consumers: Vec::new(),
            dir,
            redis_url: redis_url(),
            amqp_url: amqp_url(),
            config: workspace_root().join("config/local.toml"),
            tls_ca_file: None,
        }
    }

    /// The namespace `<self.name>.<suffix>` (dots are legal in namespaces), with a directory of
    /// its own; torn down on drop like any other. For checking that nested names stay apart.
    pub fn nested(&self, suffix: &str) -> Namespace {
        let name = format!("{}.{suffix}", self.name);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Namespace {
            name,
            consumers: Vec::new(),
            dir,
            redis_url: self.redis_url.clone(),
            amqp_url: self.amqp_url.clone(),
            config: self.config.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
        }
    }

    /// Uses a copy of `config/local.toml` with `edit` applied (to its text) from now on.
    pub fn use_config(&mut self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read the config");
        let path = self.path("cluster.toml");
        std::fs::write(&path, edit(text)).expect("write the test's config");
        self.config = path;
    }

    /// A file in this test's temp directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Runs `seedq-producer <args>` in this namespace and waits for it.
    pub fn producer(&self, args: &[&str]) -> Output {
        self.producer_cmd(args)
            .output()
            .expect("run seedq-producer")
    }

    /// Like [`Namespace::producer`], but fails the test (showing stderr) on a non-zero exit and
    /// returns stdout.
    pub fn producer_ok(&self, args: &[&str]) -> String {
        let out = self.producer(args);
        assert!(
            out.status.success(),
            "seedq-producer {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub fn producer_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(producer_bin());
        cmd.args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .env("SEEDQ_NAMESPACE", &self.name)
            .env("SEEDQ_AMQP_URL", &self.amqp_url)
            .env("SEEDQ_REDIS_URL", &self.redis_url)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        self.tls_env(&mut cmd);
        cmd
    }

    /// `SEEDQ_TLS_CA_FILE` as this namespace says (never inherited from the test's environment).
    fn tls_env(&self, cmd: &mut Command) {
        match &self.tls_ca_file {
            Some(ca) => cmd.env("SEEDQ_TLS_CA_FILE", ca),
            None => cmd.env_remove("SEEDQ_TLS_CA_FILE"),
        };
    }

    /// Starts a CPU consumer named `node` with `slots` slots of `threads` CPU threads each.
    /// Its log goes to `<dir>/<node>.log`. Returns its index for [`Namespace::consumer`].
    pub fn start_consumer(&mut self, node: &str, slots: u32, threads: u32) -> usize {
        self.start_consumer_with(
            node,
            &[
                "--backend",
                "cpu",
                "--slots",
                &slots.to_string(),
                "--cpu-threads",
                &threads.to_string(),
            ],
        )
    }

    pub fn start_consumer_with(&mut self, node: &str, extra: &[&str]) -> usize {
        let log_path = self.path(&format!("{node}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("consumer log");
        let mut cmd = Command::new(consumer_bin());
        self.tls_env(&mut cmd);
        let child = cmd
            .args(["--config", self.config.to_str().unwrap(), "--node", node])
            .args(extra)
            .env("SEEDQ_NAMESPACE", &self.name)
            .env("SEEDQ_AMQP_URL", &self.amqp_url)
            .env("SEEDQ_REDIS_URL", &self.redis_url)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn seedq-consumer");
        self.consumers.push(Consumer {
            node: node.to_string(),
            child: Some(child),
            log: log_path,
        });
        self.consumers.len() - 1
    }

    pub fn consumer(&mut self, index: usize) -> &mut Consumer {
        &mut self.consumers[index]
    }

    /// Waits until `n` live heartbeats are visible (`seedq-producer nodes --json`, falling back to
    /// the consumer connections the broker reports) or panics after `timeout`.
    pub fn wait_for_consumers(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let live = consumer_connections(&self.name)
                .map(|c| c.len())
                .unwrap_or(0);
            if live >= n {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "only {live} of {n} consumers connected within {timeout:?}; logs in {}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Enqueues a sieve and returns its job id (`sieve --json`).
    pub fn sieve(&self, args: &[&str]) -> String {
        let mut all = vec!["sieve", "--json"];
        all.extend_from_slice(args);
        let out = self.producer_ok(&all);
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("sieve --json printed {out:?}: {e}"));
        v["job_id"]
            .as_str()
            .expect("job_id in sieve --json")
            .to_string()
    }

    /// `wait JOB --timeout`: panics unless the job completes cleanly.
    pub fn wait(&self, job: &str, timeout_secs: u64) {
        let out = self.producer(&["wait", job, "--timeout", &timeout_secs.to_string()]);
        assert!(
            out.status.success(),
            "wait {job} failed ({}):\n{}\nconsumer logs in {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.dir.display()
        );
    }

    /// `results JOB --format json` as parsed JSON (an array of survivor records).
    pub fn results(&self, job: &str) -> Vec<Value> {
        let out = self.producer_ok(&["results", job, "--format", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("results printed {out:?}: {e}"))
    }

    /// `status JOB --json`.
    pub fn status(&self, job: &str) -> Value {
        let out = self.producer_ok(&["status", job, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status printed {out:?}: {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in &mut self.consumers {
            c.kill();
        }
        let out = self.producer(&["teardown", "--yes"]);
        if !out.status.success() {
            eprintln!(
                "teardown of {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::thread::panicking() {
            eprintln!("test failed: consumer logs kept in {}", self.dir.display());
        } else if std::env::var_os("SEEDQ_E2E_KEEP_LOGS").is_some() {
            eprintln!("consumer logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running `seedq-consumer`.
pub struct Consumer {
    pub node: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Consumer {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: no drain, no goodbye (a crashed node).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a node frozen mid-job, its deliveries held.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// SIGTERM and wait for the drain to finish; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// --- A Redis of a test's own ------------------------------------------------------------------

/// A `redis-server` started for one test on a free port, with append-only persistence fsynced on
/// every write, so that a test can kill it (SIGKILL: a crashed Redis) and start it again on the
/// same port and data, as a Redis restart on a real deployment looks to seedq. Stopped and its
/// files removed on drop; declare it before the [`Namespace`] that uses it, so the namespace's
/// teardown still finds it.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The user and password [`PrivateRedis::url`] carries (and the readiness check uses), when
    /// started with one.
    auth: Option<(String, String)>,
    /// More `redis-server` arguments (ACL users, ...).
    extra_args: Vec<String>,
    /// A directory with `ca.pem`, `server.pem` and `server.key`: the port then speaks TLS only
    /// ([`PrivateRedis::start_tls`]).
    tls: Option<PathBuf>,
}

impl PrivateRedis {
    /// `None` when `redis-server` is not installed (the caller skips, saying so).
    pub fn start() -> Option<PrivateRedis> {
        Self::start_with(None, &[])
    }

    /// Authenticated as `auth` (user, password): for the `default` user its password becomes
    /// `requirepass`; any other user must come from `extra_args` (e.g. `--aclfile`).
    /// [`PrivateRedis::url`] then carries the credentials as given (unencoded, the way an
    /// operator may type them).
    pub fn start_with(auth: Option<(&str, &str)>, extra_args: &[&str]) -> Option<PrivateRedis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("seedq-e2e-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            tls: None,
        };
        redis.restart();
        Some(redis)
    }

    /// Its one port speaks TLS only (no plain port), with the certificate and key of `tls_dir`
    /// (`server.pem`, `server.key`, `ca.pem`); clients need no certificate of their own.
    /// [`PrivateRedis::url`] is then `rediss://`.
    pub fn start_tls(auth: Option<(&str, &str)>, tls_dir: &Path) -> Option<PrivateRedis> {
        let mut redis = PrivateRedis::start_with(auth, &[])?;
        redis.tls = Some(tls_dir.to_path_buf());
        redis.restart();
        Some(redis)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.auth {
            Some((user, pw)) => format!("{scheme}://{user}:{pw}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    /// The URL with another user's credentials (ACL users), as given.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (for ACL files and logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, no shutdown save: what the append-only file holds is what survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and directory and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(dir) => {
                let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.pem"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        let child = Command::new("redis-server")
            .args(&listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args([
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--dir",
                self.dir.to_str().unwrap(),
            ])
            .args(
                self.auth
                    .iter()
                    .filter(|(user, _)| user == "default")
                    .flat_map(|(_, pw)| ["--requirepass".to_string(), pw.clone()]),
            )
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        eventually(
            "the private redis-server to answer PING",
            Duration::from_secs(30),
            || self.ping(),
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls.is_some() {
            // No TLS client here: a fresh server that accepts is ready (nothing to replay).
            return true;
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 5];
        if let Some((user, pw)) = &self.auth {
            let mut ok = [0u8; 5];
            let auth = format!(
                "*3\r\n$4\r\nAUTH\r\n${}\r\n{user}\r\n${}\r\n{pw}\r\n",
                user.len(),
                pw.len()
            );
            if conn.write_all(auth.as_bytes()).is_err()
                || conn.read_exact(&mut ok).is_err()
                || &ok != b"+OK\r\n"
            {
                return false;
            }
        }
        // -LOADING while the append-only file is replayed; +PONG when ready.
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG"
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// --- RabbitMQ nodes of a test's own ---------------------------------------------------------

/// Prints `SKIPPED <test>: <reason>` where it shows: straight to the process's stderr, past the
/// test harness's output capture (which would hide an `eprintln!` of a passing test), so that a
/// skipped test never passes silently. With `SEEDQ_REQUIRE_PRIVATE_RABBIT=1` (set by
/// `scripts/cluster-check.sh`) a skip is a failure instead.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("SEEDQ_REQUIRE_PRIVATE_RABBIT").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run and SEEDQ_REQUIRE_PRIVATE_RABBIT=1: {reason}");
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIPPED {test}: {reason}");
    let _ = err.flush();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One node started through `scripts/rabbit-node.sh`.
#[derive(Debug, Clone)]
struct RabbitNode {
    index: u32,
    amqp_port: u16,
    mgmt_port: u16,
    running: bool,
}

/// A directory of private RabbitMQ nodes (`SEEDQ_RABBIT_DIR` of `scripts/rabbit-node.sh`): their
/// data, logs, cookie and epmd. Dropping it stops every node and removes the directory.
struct RabbitNodes {
    dir: PathBuf,
    nodes: Vec<RabbitNode>,
    /// The nodes' `advanced.config` (Erlang terms), if any.
    advanced: Option<String>,
    /// `SEEDQ_RABBIT_TLS_DIR`: the nodes' AMQP ports speak TLS only.
    tls: Option<PathBuf>,
}

impl RabbitNodes {
    fn new(tag: &str) -> RabbitNodes {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("seedq-e2e-rabbit-{tag}-{}-{n}", std::process::id()));
        RabbitNodes {
            dir,
            nodes: Vec::new(),
            advanced: None,
            tls: None,
        }
    }

    /// `scripts/rabbit-node.sh ARGS` for this directory; `Err` with its output on failure, where
    /// exit status 3 means RabbitMQ is not installed.
    fn script(&self, args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
        let out = Command::new(workspace_root().join("scripts/rabbit-node.sh"))
            .args(args)
            .env("SEEDQ_RABBIT_DIR", &self.dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/rabbit-node.sh: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "scripts/rabbit-node.sh {} failed ({}): {}",
                args.join(" "),
                out.status,
                text.trim_end()
            ))
        }
    }

    /// Starts node `index` the first time, on free ports.
    fn add(&mut self, index: u32) -> Result<(), String> {
        let (amqp, mgmt, dist) = (free_port(), free_port(), free_port());
        let mut env = vec![
            ("SEEDQ_RABBIT_AMQP_PORT", amqp.to_string()),
            ("SEEDQ_RABBIT_MGMT_PORT", mgmt.to_string()),
            ("SEEDQ_RABBIT_DIST_PORT", dist.to_string()),
        ];
        if self.nodes.is_empty() {
            env.push(("SEEDQ_RABBIT_EPMD_PORT", free_port().to_string()));
        }
        if let Some(advanced) = &self.advanced {
            env.push(("SEEDQ_RABBIT_ADVANCED", advanced.clone()));
        }
        if let Some(tls) = &self.tls {
            env.push(("SEEDQ_RABBIT_TLS_DIR", tls.to_string_lossy().into_owned()));
        }
        self.nodes.push(RabbitNode {
            index,
            amqp_port: amqp,
            mgmt_port: mgmt,
            running: false,
        });
        self.script(&["start", &index.to_string()], &env)?;
        self.node_mut(index).running = true;
        Ok(())
    }

    fn node(&self, index: u32) -> &RabbitNode {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .expect("a node of this directory")
    }

    fn node_mut(&mut self, index: u32) -> &mut RabbitNode {
        self.nodes
            .iter_mut()
            .find(|n| n.index == index)
            .expect("a node of this directory")
    }

    fn url(&self, index: u32) -> String {
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        format!(
            "{scheme}://guest:guest@127.0.0.1:{}/%2f",
            self.node(index).amqp_port
        )
    }

    /// Runs a command that must work on a node started before (panics with the node's log).
    fn must(&mut self, args: &[&str]) {
        if let Err(e) = self.script(args, &[]) {
            panic!("{e}");
        }
    }

    fn start(&mut self, index: u32) {
        self.must(&["start", &index.to_string()]);
        self.node_mut(index).running = true;
    }

    fn stop(&mut self, index: u32) {
        self.must(&["stop", &index.to_string()]);
        self.node_mut(index).running = false;
    }

    fn kill(&mut self, index: u32) {
        self.must(&["kill", &index.to_string()]);
        self.node_mut(index).running = false;
    }

    fn mgmt(&self, index: u32) -> Mgmt {
        Mgmt {
            port: self.node(index).mgmt_port,
        }
    }
}

impl Drop for RabbitNodes {
    fn drop(&mut self) {
        // The nodes' logs are what explains a failure: kept then, with the nodes stopped.
        let keep = std::thread::panicking();
        if keep {
            eprintln!("private RabbitMQ logs kept in {}", self.dir.display());
        }
        let args: &[&str] = if keep {
            &["clean", "--keep"]
        } else {
            &["clean"]
        };
        if let Err(e) = self.script(args, &[]) {
            eprintln!("{e}");
        }
    }
}

/// The management HTTP API of one private node (guest/guest).
#[derive(Debug, Clone, Copy)]
pub struct Mgmt {
    pub port: u16,
}

impl Mgmt {
    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (code, body) = mgmt_http("127.0.0.1", self.port, "GET", path, "")?;
        anyhow::ensure!(code == 200, "GET {path}: HTTP {code}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// A queue of the default vhost (`messages`, `messages_unacknowledged`, `leader`,
    /// `members`...), `None` when it does not exist.
    pub fn queue(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let path = format!("/api/queues/%2F/{}", encode_segment(name));
        let (code, body) = mgmt_http("127.0.0.1", self.port, "GET", &path, "")?;
        match code {
            200 => Ok(Some(serde_json::from_str(&body)?)),
            404 => Ok(None),
            _ => bail!("GET {path}: HTTP {code}: {body}"),
        }
    }

    /// `POST path` with a JSON body (e.g. `/api/definitions`); `Err` unless it succeeds.
    pub fn post(&self, path: &str, body: &str) -> anyhow::Result<()> {
        let (code, reply) = mgmt_http("127.0.0.1", self.port, "POST", path, body)?;
        anyhow::ensure!(
            (200..300).contains(&code),
            "POST {path}: HTTP {code}: {reply}"
        );
        Ok(())
    }

    /// Consumer tags subscribed to `queue`.
    pub fn consumer_tags(&self, queue: &str) -> Vec<String> {
        self.get("/api/consumers")
            .ok()
            .and_then(|all| all.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| c["queue"]["name"] == queue)
            .filter_map(|c| c["consumer_tag"].as_str().map(str::to_string))
            .collect()
    }
}

/// A RabbitMQ node started for one test (`scripts/rabbit-node.sh`): its own ports, data and log
/// directory, cookie and epmd, so that a test can stop it cleanly, restart it on the same data
/// (a broker restart as a deployment sees one) or SIGKILL it, without touching the shared
/// broker. Declare it before the [`Namespace`] that uses it, so the namespace's teardown still
/// finds it. Stopped and its files removed on drop (kept, with a message, when the test failed).
pub struct PrivateRabbit {
    nodes: RabbitNodes,
}

impl PrivateRabbit {
    /// Starts a node on free ports; `Err(reason)` when that cannot be done (RabbitMQ not
    /// installed, the node does not boot): the caller skips with [`skip`].
    pub fn start() -> Result<PrivateRabbit, String> {
        let mut nodes = RabbitNodes::new("node");
        nodes.add(1)?;
        Ok(PrivateRabbit { nodes })
    }

    /// Like [`PrivateRabbit::start`], with `advanced` (Erlang terms) as the node's
    /// `advanced.config`: settings `rabbitmq.conf` cannot express.
    pub fn start_with_advanced(advanced: &str) -> Result<PrivateRabbit, String> {
        let mut nodes = RabbitNodes::new("node");
        nodes.advanced = Some(advanced.to_string());
        nodes.add(1)?;
        Ok(PrivateRabbit { nodes })
    }

    /// Like [`PrivateRabbit::start`], its AMQP port speaking TLS only (`listeners.tcp = none`)
    /// with the certificate and key of `tls_dir` (`server.pem`, `server.key`, `ca.pem`);
    /// [`PrivateRabbit::url`] is then `amqps://`.
    pub fn start_tls(tls_dir: &Path) -> Result<PrivateRabbit, String> {
        let mut nodes = RabbitNodes::new("tls");
        nodes.tls = Some(tls_dir.to_path_buf());
        nodes.add(1)?;
        Ok(PrivateRabbit { nodes })
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (`amqps://` for a TLS node).
    pub fn url(&self) -> String {
        self.nodes.url(1)
    }

    /// Its AMQP port (127.0.0.1).
    pub fn amqp_port(&self) -> u16 {
        self.nodes.node(1).amqp_port
    }

    pub fn mgmt(&self) -> Mgmt {
        self.nodes.mgmt(1)
    }

    /// A clean shutdown (`rabbitmqctl shutdown`): clients get a connection.close.
    pub fn stop(&mut self) {
        self.nodes.stop(1);
    }

    /// SIGKILL: clients see their sockets close, with no goodbye.
    pub fn kill(&mut self) {
        self.nodes.kill(1);
    }

    /// Stops the node if it runs, then starts it again on the same ports and data (durable queues
    /// and persistent messages survive) and waits until it serves AMQP.
    pub fn restart(&mut self) {
        if self.nodes.node(1).running {
            self.stop();
        }
        self.nodes.start(1);
    }
}

/// Three private RabbitMQ nodes clustered together (node 2 and 3 joined to node 1): quorum
/// queues declared on it are replicated on all three, and survive the loss of any one node.
pub struct RabbitCluster {
    nodes: RabbitNodes,
}

impl RabbitCluster {
    /// Starts and clusters three nodes; `Err(reason)` as for [`PrivateRabbit::start`].
    pub fn start() -> Result<RabbitCluster, String> {
        let mut nodes = RabbitNodes::new("cluster");
        for index in 1..=3 {
            nodes.add(index)?;
        }
        for index in 2..=3 {
            nodes.script(&["join", &index.to_string(), "1"], &[])?;
        }
        Ok(RabbitCluster { nodes })
    }

    /// The nodes' AMQP URLs, node 1 first.
    pub fn urls(&self) -> Vec<String> {
        (1..=3).map(|i| self.nodes.url(i)).collect()
    }

    /// The URL of node `index` (1..=3).
    pub fn url(&self, index: u32) -> String {
        self.nodes.url(index)
    }

    pub fn mgmt(&self, index: u32) -> Mgmt {
        self.nodes.mgmt(index)
    }

    /// Nodes not stopped or killed by the test.
    pub fn running(&self) -> Vec<u32> {
        self.nodes
            .nodes
            .iter()
            .filter(|n| n.running)
            .map(|n| n.index)
            .collect()
    }

    /// The node leading quorum queue `queue` (as the management API of the first running node
    /// that answers reports it), `None` while it has none (an election) or no node knows it.
    pub fn leader(&self, queue: &str) -> Option<u32> {
        self.running().into_iter().find_map(|i| {
            let info = self.mgmt(i).queue(queue).ok()??;
            let leader = info["leader"].as_str()?;
            // `<prefix>-<index>@localhost`, see scripts/rabbit-node.sh.
            let name = leader.split('@').next()?;
            name.rsplit('-').next()?.parse().ok()
        })
    }

    /// SIGKILLs node `index` (a crashed node: its clients' sockets close, its queues' leaders
    /// move to the survivors).
    pub fn kill(&mut self, index: u32) {
        self.nodes.kill(index);
    }

    /// Starts a stopped or killed node again on its data; it rejoins the cluster.
    pub fn restart(&mut self, index: u32) {
        self.nodes.start(index);
    }
}

// --- RabbitMQ management HTTP API (plain HTTP/1.0, no client dependency) --------------------

fn mgmt_base() -> (String, u16) {
    let url = std::env::var("SEEDQ_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let rest = url.trim_start_matches("http://").trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(15672)),
        None => (rest.to_string(), 80),
    }
}

/// One request to the management API; returns (status code, body).
pub fn mgmt_request(method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    mgmt_request_with_body(method, path, "")
}

/// [`mgmt_request`] with a JSON body.
pub fn mgmt_request_with_body(
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let (host, port) = mgmt_base();
    mgmt_http(&host, port, method, path, body)
}

/// One request to the management API at `host:port` (guest/guest).
fn mgmt_http(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use base64::Engine as _;
    let mut stream =
        TcpStream::connect((host, port)).with_context(|| format!("connect {host}:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let auth = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("HTTP status line")?;
    Ok((code, body.to_string()))
}

fn mgmt_json(path: &str) -> anyhow::Result<Value> {
    let (code, body) = mgmt_request("GET", path)?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Percent-encodes a path segment for the management API.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Connections of this namespace's consumers: those whose client-provided name starts with
/// `seedq-consumer@` and that consume from one of the namespace's queues.
pub fn consumer_connections(namespace: &str) -> anyhow::Result<Vec<String>> {
    let consumers = mgmt_json("/api/consumers")?;
    let mut names: Vec<String> = Vec::new();
    for c in consumers.as_array().into_iter().flatten() {
        let queue = c["queue"]["name"].as_str().unwrap_or("");
        if !queue.starts_with(&format!("{namespace}.")) {
            continue;
        }
        if let Some(conn) = c["channel_details"]["connection_name"].as_str() {
            if !names.iter().any(|n| n == conn) {
                names.push(conn.to_string());
            }
        }
    }
    Ok(names)
}

/// Closes a connection from the broker side (what an operator or a network fault does).
pub fn close_connection(connection_name: &str) -> anyhow::Result<()> {
    let (code, body) = mgmt_request(
        "DELETE",
        &format!("/api/connections/{}", encode_segment(connection_name)),
    )?;
    if !(200..300).contains(&code) {
        bail!("DELETE connection {connection_name}: HTTP {code}: {body}");
    }
    Ok(())
}

/// Message counts of a queue (`messages`, `messages_unacknowledged`...), or None if absent.
pub fn queue_info(queue: &str) -> anyhow::Result<Option<Value>> {
    let (code, body) = mgmt_request("GET", &format!("/api/queues/%2F/{}", encode_segment(queue)))?;
    match code {
        200 => Ok(Some(serde_json::from_str(&body)?)),
        404 => Ok(None),
        _ => bail!("GET queue {queue}: HTTP {code}: {body}"),
    }
}

// --- Redis under pressure (a test's own redis-server) ------------------------------------------

fn redis_at(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to Redis")
}

/// `CONFIG SET key value` on the Redis at `url` (a test's private one: never the shared one).
pub fn redis_config_set(url: &str, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis_at(url))
        .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e}"));
}

/// Keeps the Redis at `url` busy in one script for `secs`; other clients get BUSY meanwhile
/// (after `busy-reply-threshold`, which this sets to 100 ms). Returns when the script ends.
pub fn redis_busy_for(url: &str, secs: u32) {
    redis_config_set(url, "busy-reply-threshold", "100");
    let _: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(
            "local t0 = redis.call('TIME') \
             while true do local t = redis.call('TIME') \
               if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > tonumber(ARGV[1]) * 1000000 then \
                 return 1 end end",
        )
        .arg(0)
        .arg(secs)
        .query(&mut redis_at(url));
}

/// Replaces the stored job `job` of `namespace` with one "of a newer build" (valid JSON, an
/// unknown protocol version), which no retry or wait can make readable.
pub fn store_job_of_a_newer_build(url: &str, namespace: &str, job: &str) {
    let mut c = redis_at(url);
    let key = seedq_protocol::keys::job_spec(namespace, job);
    let text: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut c)
        .expect("the stored job");
    let mut stored: Value = serde_json::from_str(&text).expect("stored job is JSON");
    stored["v"] = serde_json::json!(99);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(stored.to_string())
        .query(&mut c)
        .expect("replace the stored job");
}

/// Waits until `<namespace>.dlq` holds `n` dead letters and checks that each says `reason`.
pub fn expect_dead_letters(namespace: &str, n: u64, reason: &str) {
    let dlq = format!("{namespace}.dlq");
    eventually(
        &format!("{n} dead letters in {dlq}"),
        Duration::from_secs(120),
        || {
            queue_info(&dlq)
                .ok()
                .flatten()
                .and_then(|q| q["messages"].as_u64())
                == Some(n)
        },
    );
    let letters = mgmt_peek(&dlq, n as u32 + 5).expect("read the DLQ");
    assert_eq!(letters.len() as u64, n, "{letters:?}");
    for letter in &letters {
        assert_eq!(
            letter["properties"]["headers"]["x-seedq-error"], reason,
            "{letter}"
        );
    }
}

/// Waits until `job`'s record in Redis holds `n` dead members, each with `reason` (what the
/// consumers dead-lettered plus what the scheduler could not publish).
pub fn expect_dead_in_record(redis_url: &str, namespace: &str, job: &str, n: usize, reason: &str) {
    let mut conn = redis::Client::open(redis_url)
        .and_then(|c| c.get_connection())
        .expect("connect to Redis");
    eventually(
        &format!("{n} members of {job} dead in its record with {reason}"),
        Duration::from_secs(120),
        || {
            let dead: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(seedq_protocol::keys::dead(namespace, job))
                .query(&mut conn)
                .unwrap();
            dead.len() == n && dead.values().all(|r| r == reason)
        },
    );
}

/// The epoch of a stored job (0 when it has none), which every message of the job carries.
pub fn job_epoch(redis_url: &str, namespace: &str, job: &str) -> u64 {
    let mut conn = redis::Client::open(redis_url)
        .and_then(|c| c.get_connection())
        .expect("connect to Redis");
    let epoch: Option<u64> = redis::cmd("HGET")
        .arg(seedq_protocol::keys::totals(namespace, job))
        .arg("epoch")
        .query(&mut conn)
        .expect("read the job's epoch");
    epoch.unwrap_or(0)
}

/// The job as Redis stores it, `None` when there is none under that id.
pub fn stored_job(namespace: &str, job: &str) -> Option<seedq_protocol::Job> {
    let mut conn = redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .expect("connect to Redis");
    let text: Option<String> = redis::cmd("GET")
        .arg(seedq_protocol::keys::job_spec(namespace, job))
        .query(&mut conn)
        .expect("read the job's spec");
    text.map(|t| seedq_protocol::Job::from_json(&t).expect("a stored job parses"))
}

/// Deletes every key of a job and its index entry, as its expiry would: the job is gone, and
/// its id is free for a new job.
pub fn delete_job_keys(namespace: &str, job: &str) {
    let mut conn = redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .expect("connect to Redis");
    redis::pipe()
        .cmd("DEL")
        .arg(seedq_protocol::keys::all_job_keys(namespace, job))
        .ignore()
        .cmd("ZREM")
        .arg(seedq_protocol::keys::jobs(namespace))
        .arg(job)
        .ignore()
        .query::<()>(&mut conn)
        .expect("delete the job's keys");
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes (then panics with `what`).
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a JSON value to a file in the namespace's directory; returns the path as a string.
pub fn write_json(ns: &Namespace, file: &str, value: &Value) -> String {
    let path = ns.path(file);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).expect("write json");
    path.to_str().unwrap().to_string()
}

/// Broker-side names (`ip:port -> ip:port`) of the connections a node opened: those whose
/// client-provided name is `seedq-consumer@<node>`.
pub fn node_connections(node: &str) -> anyhow::Result<Vec<String>> {
    let wanted = format!("seedq-consumer@{node}");
    let all = mgmt_json("/api/connections")?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["user_provided_name"].as_str() == Some(wanted.as_str())
                || c["client_properties"]["connection_name"].as_str() == Some(wanted.as_str())
        })
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect())
}

/// Publishes raw bodies to a queue through the default exchange (persistent, mandatory, with
/// confirms): how the tests bypass the producer.
/// Up to `count` messages of `queue` as the management UI shows them (`POST .../get`, requeued:
/// nothing is consumed), each with `properties.headers` and `payload`.
pub fn mgmt_peek(queue: &str, count: u32) -> anyhow::Result<Vec<Value>> {
    let body = serde_json::json!({"count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 100_000}).to_string();
    let (code, reply) = mgmt_request_with_body(
        "POST",
        &format!("/api/queues/%2F/{}/get", encode_segment(queue)),
        &body,
    )?;
    anyhow::ensure!(code == 200, "peek {queue}: HTTP {code}: {reply}");
    Ok(serde_json::from_str(&reply)?)
}

pub fn publish_raw(queue: &str, bodies: &[Vec<u8>]) -> anyhow::Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        for body in bodies {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            anyhow::ensure!(
                confirm.is_ack(),
                "broker did not confirm a publish to {queue}: {confirm:?}"
            );
        }
        conn.close(0, "bye".into()).await.ok();
        Ok(())
    })
}
