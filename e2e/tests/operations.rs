//! Operating a cluster, end to end: the monitoring in deploy/ runs every dashboard and alert
//! query against a live consumer (scripts/check-monitoring.sh), the consumer's JSON logs carry
//! job, chunk and failure reason and never a password, and scripts/install-node.sh installs a
//! node idempotently with a unit that systemd accepts. Against the real RabbitMQ, Redis and
//! binaries; a tool this machine lacks (promtool, systemd-analyze) turns its part into a
//! visible SKIP line, never a silent pass.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use seedq_e2e::{consumer_bin, eventually, workspace_root, write_json, Namespace};
use seedq_protocol::Topology;
use serde_json::{json, Value};

// --- helpers ---------------------------------------------------------------------------------

/// Whether `tool` is on PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn skip(test: &str, why: &str) {
    // Straight to the process's stderr: libtest captures println!/eprintln! of a passing test,
    // and a SKIP must show in a CI log without --nocapture.
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {why}");
}

/// A port nothing listens on right now (the OS's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` over plain HTTP/1.0; the body on a 200, else None.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of `name{labels}` (exact label text) in a Prometheus exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The password of a `scheme://user:password@host` URL.
fn password_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_string()).filter(|p| !p.is_empty())
}

/// A small sieve job of 3 chunks.
fn small_job(ns: &Namespace) -> String {
    let draws = write_json(ns, "draws.json", &json!([3, 1, 4]));
    ns.sieve(&[
        "--prng",
        "xorshift32",
        "--draws",
        &draws,
        "--threshold",
        "1",
        "--seed-start",
        "1",
        "--seed-end",
        "3001",
        "--chunk-size",
        "1000",
    ])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// --- monitoring ------------------------------------------------------------------------------

/// scripts/check-monitoring.sh against a consumer that ran a job and dead-lettered a malformed
/// message, with --strict: every dashboard query returns series (the failures panel too), and
/// no panel or rule query errors.
#[test]
fn monitoring_check_runs_every_dashboard_and_rule_query() {
    const TEST: &str = "monitoring_check_runs_every_dashboard_and_rule_query";
    if let Some(missing) = ["promtool", "prometheus", "python3"]
        .into_iter()
        .find(|t| !on_path(t))
    {
        skip(
            TEST,
            &format!(
                "{missing} is not on PATH (Debian: apt-get install prometheus python3); \
                 scripts/check-monitoring.sh was not run"
            ),
        );
        return;
    }
    let mut ns = Namespace::new("ops-monitoring");
    let node = format!("{}-node", ns.name);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    ns.start_consumer_with(
        &node,
        &[
            "--backend",
            "cpu",
            "--slots",
            "1",
            "--cpu-threads",
            "1",
            "--no-calibrate",
            "--metrics-port",
            &port.to_string(),
            "--metrics-addr",
            "127.0.0.1",
        ],
    );
    eventually(
        "the consumer's metrics endpoint",
        Duration::from_secs(60),
        || http_get(&addr, "/metrics").is_some(),
    );
    let job = small_job(&ns);
    ns.wait(&job, 300);
    // One failure, so that the failures-by-reason panel has a series to show.
    seedq_e2e::publish_raw(
        &Topology::new(&ns.name).seeds_queue(),
        &[b"{ not json".to_vec()],
    )
    .unwrap();
    eventually(
        "the malformed message counted as a failure",
        Duration::from_secs(60),
        || {
            http_get(&addr, "/metrics")
                .and_then(|m| sample(&m, "seedq_chunk_failures_total{reason=\"malformed_json\"}"))
                == Some(1.0)
        },
    );
    let metrics = http_get(&addr, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, "seedq_chunks_finished_total{slot=\"cpu0\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "seedq_seeds_processed_total{slot=\"cpu0\"}"),
        Some(3000.0)
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "seedq_node_info{{node=\"{node}\",backend=\"cpu\",namespace=\"{}\"",
            ns.name
        ))),
        "{metrics}"
    );

    let started = Instant::now();
    let out = Command::new(workspace_root().join("scripts/check-monitoring.sh"))
        .args(["--target", &addr, "--strict"])
        .output()
        .expect("run scripts/check-monitoring.sh");
    let took = started.elapsed();
    let report = text(&out);
    println!("{report}");
    println!("check-monitoring.sh took {:.1} s", took.as_secs_f64());
    assert!(
        out.status.success(),
        "check-monitoring.sh failed ({}):\n{report}",
        out.status
    );
    assert!(!report.contains("ERROR"), "{report}");
    let summary = report
        .lines()
        .find(|l| l.starts_with("dashboard: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{report}"));
    assert!(summary.ends_with("0 error(s)"), "{summary}");
    assert!(
        summary.contains(" 0 empty;"),
        "--strict passed yet: {summary}"
    );
    // Every panel of the dashboard was run: the count in the summary is the dashboard's.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/dashboards/seedq.json"))
            .unwrap(),
    )
    .unwrap();
    let targets: usize = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        summary.starts_with(&format!("dashboard: {targets} queries")),
        "{summary} (the dashboard has {targets} queries)"
    );
}

// --- logs ------------------------------------------------------------------------------------

/// Every line of `log` parsed as a JSON object (panics naming the first line that is not).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line {} is not JSON ({e}): {line:?}", i + 1));
            assert!(v.is_object(), "line {} is not an object: {line}", i + 1);
            for field in ["timestamp", "level", "message", "target"] {
                assert!(
                    v.get(field).is_some(),
                    "line {} has no {field}: {line}",
                    i + 1
                );
            }
            v
        })
        .collect()
}

fn assert_no_secret(log: &str, secrets: &[String]) {
    for secret in secrets {
        for (i, line) in log.lines().enumerate() {
            assert!(
                !line.contains(secret.as_str()),
                "log line {} contains a password: {line}",
                i + 1
            );
        }
    }
}

/// A consumer with `--log-format json` runs a 3-chunk job and dead-letters a malformed message:
/// every line of its stderr is a JSON object, each chunk has a `chunk done` line with job,
/// chunk, slot and seeds, the dead letter names its reason, and neither the AMQP nor the Redis
/// password (a canary password Redis accepts for its default user) appears anywhere.
#[test]
fn json_logs_name_jobs_chunks_and_reasons_and_never_a_password() {
    let mut ns = Namespace::new("ops-jsonlog");
    // Give the Redis URL a password of its own: Redis accepts any password for a `default` user
    // without one, so the consumer really connects with it. A URL that already carries
    // credentials is used as it is.
    let canary = format!("canary-{}", ns.name.rsplit('-').next().unwrap());
    if !ns.redis_url.contains('@') {
        ns.redis_url = ns
            .redis_url
            .replacen("://", &format!("://default:{canary}@"), 1);
    }
    let secrets: Vec<String> = [
        password_of(&seedq_e2e::amqp_url()),
        password_of(&ns.redis_url),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(!secrets.is_empty());
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer_with(
        &node,
        &[
            "--backend",
            "cpu",
            "--slots",
            "1",
            "--cpu-threads",
            "1",
            "--no-calibrate",
            "--log-format",
            "json",
        ],
    );
    eventually("the slot to subscribe", Duration::from_secs(60), || {
        ns.consumer(consumer).log_text().contains("slot subscribed")
    });
    let job = small_job(&ns);
    ns.wait(&job, 300);
    seedq_e2e::publish_raw(
        &Topology::new(&ns.name).seeds_queue(),
        &[b"{ not json".to_vec()],
    )
    .unwrap();
    eventually(
        "the dead letter in the log",
        Duration::from_secs(60),
        || ns.consumer(consumer).log_text().contains("dead-lettering"),
    );
    ns.consumer(consumer)
        .terminate(Duration::from_secs(60))
        .expect("the consumer drains and exits");
    let log = ns.consumer(consumer).log_text();
    let lines = json_lines(&log);
    assert_no_secret(&log, &secrets);

    let by_message = |m: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["message"].as_str() == Some(m))
            .collect()
    };
    let running = by_message("node running; SIGINT/SIGTERM drains");
    assert_eq!(running.len(), 1, "{log}");
    assert_eq!(running[0]["node"], node.as_str());
    assert_eq!(running[0]["namespace"], ns.name.as_str());

    let mut done: BTreeMap<u64, &Value> = BTreeMap::new();
    for line in by_message("chunk done") {
        assert_eq!(line["job"], job.as_str(), "{line}");
        assert_eq!(line["slot"], "cpu0", "{line}");
        assert_eq!(line["node"], node.as_str(), "{line}");
        assert_eq!(line["seeds"], 1000, "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["secs"].as_f64().is_some(), "{line}");
        done.insert(line["chunk"].as_u64().expect("chunk is a number"), line);
    }
    assert_eq!(
        done.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "one `chunk done` line per chunk:\n{log}"
    );

    let dead = by_message("dead-lettering");
    assert_eq!(dead.len(), 1, "{log}");
    assert_eq!(dead[0]["reason"], "malformed_json", "{}", dead[0]);
    assert_eq!(dead[0]["level"], "WARN");
    assert!(
        dead[0]["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        dead[0]
    );
    // Unparseable: no job to name, and the log says so rather than inventing one.
    assert_eq!(dead[0]["job"], "?");
    assert_eq!(dead[0]["slot"], "cpu0");
    assert!(!by_message("drained; exiting").is_empty(), "{log}");
}

/// The paths where a password is most at risk: a broker that cannot be reached (library errors,
/// retried and logged) and a URL so malformed its parser would echo it back. The consumer's
/// stderr stays one JSON object per line to its last line (the fatal error included) and holds
/// neither password.
#[test]
fn json_logs_stay_json_and_secret_when_the_consumer_cannot_start() {
    let ns = Namespace::new("ops-jsonfail");
    let secret = format!("hunter-{}-pw", std::process::id());
    let run = |amqp: &str, redis: &str, wait: Duration| -> (Option<i32>, String) {
        let mut child = Command::new(consumer_bin())
            .args(["--config", ns.config.to_str().unwrap()])
            .args(["--node", "jsonfail", "--backend", "cpu", "--slots", "1"])
            .args(["--no-calibrate", "--log-format", "json"])
            .env("SEEDQ_NAMESPACE", &ns.name)
            .env("SEEDQ_AMQP_URL", amqp)
            .env("SEEDQ_REDIS_URL", redis)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn seedq-consumer");
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status, log)
    };

    // Nothing listens on this port: lapin's connection errors are logged at every retry.
    let closed = free_port();
    let (status, log) = run(
        &format!("amqp://seedq:{secret}@127.0.0.1:{closed}/%2f"),
        &ns.redis_url,
        Duration::from_secs(4),
    );
    assert_eq!(status, None, "still retrying after 4 s:\n{log}");
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach RabbitMQ"))),
        "the retries are logged:\n{log}"
    );
    assert_no_secret(&log, std::slice::from_ref(&secret));

    // No `scheme://`: refused up front, as one JSON error line, without the value.
    let (status, log) = run(
        &seedq_e2e::amqp_url(),
        &format!("redis:default:{secret}@127.0.0.1:6379"),
        Duration::from_secs(30),
    );
    assert_eq!(status, Some(1), "{log}");
    let lines = json_lines(&log);
    let fatal = lines.last().expect("a fatal error line");
    assert_eq!(fatal["level"], "ERROR", "{fatal}");
    assert!(
        fatal["error"]
            .as_str()
            .is_some_and(|e| e.contains("--redis-url")),
        "{fatal}"
    );
    assert_no_secret(&log, std::slice::from_ref(&secret));
}

// --- install-node.sh -------------------------------------------------------------------------

/// Every file under `root`: relative path -> (mode, content hash, size).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u64, u64)> {
    use std::hash::{Hash, Hasher};
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, u64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    (
                        meta.permissions().mode() & 0o7777,
                        hasher.finish(),
                        meta.len(),
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The `--drain-timeout-secs` default from the consumer's --help.
fn drain_timeout_default() -> u64 {
    let help = Command::new(consumer_bin())
        .args(["run", "--help"])
        .output()
        .expect("seedq-consumer run --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let at = help
        .find("--drain-timeout-secs")
        .expect("--drain-timeout-secs in --help");
    let rest = &help[at..];
    let default = rest
        .find("[default: ")
        .map(|i| &rest[i + 10..])
        .and_then(|d| d.split(']').next())
        .expect("a default for --drain-timeout-secs");
    default.trim().parse().expect("a number of seconds")
}

/// install-node.sh into a temporary root, twice: the second run writes nothing and says so, the
/// tree is identical, the credentials file is mode 600 and survives an edit, a changed config is
/// the only file updated; the unit's stop timeout exceeds the consumer's drain timeout, and
/// `systemd-analyze verify` accepts the installed unit (against a copy of the root that also
/// holds the host's targets, where systemd is not running).
#[test]
fn install_node_twice_changes_nothing_and_the_unit_verifies() {
    const TEST: &str = "install_node_twice_changes_nothing_and_the_unit_verifies";
    let ns = Namespace::new("ops-install");
    let root = ns.path("root");
    let script = workspace_root().join("scripts/install-node.sh");
    let config = ns.path("cluster.toml");
    std::fs::copy(workspace_root().join("config/cluster.toml"), &config).unwrap();
    let install = || {
        let out = Command::new(&script)
            .args(["--root", root.to_str().unwrap(), "--node", "rig-6600"])
            .args(["--binary", consumer_bin().to_str().unwrap()])
            .args(["--config", config.to_str().unwrap()])
            .output()
            .expect("run install-node.sh");
        let report = text(&out);
        assert!(out.status.success(), "install-node.sh failed:\n{report}");
        report
    };

    let first = install();
    let after_first = tree(&root);
    let expected: Vec<PathBuf> = [
        "etc/seedq/cluster.toml",
        "etc/seedq/node.env",
        "etc/seedq/seedq-consumer.env",
        "etc/systemd/system/seedq-consumer.service",
        "usr/local/bin/seedq-consumer",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(
        after_first.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{first}"
    );
    let mode = |p: &str| after_first[&PathBuf::from(p)].0;
    assert_eq!(mode("etc/seedq/seedq-consumer.env"), 0o600);
    assert_eq!(mode("usr/local/bin/seedq-consumer"), 0o755);
    assert_eq!(mode("etc/systemd/system/seedq-consumer.service"), 0o644);
    let node_env = std::fs::read_to_string(root.join("etc/seedq/node.env")).unwrap();
    assert!(
        node_env.lines().any(|l| l == "SEEDQ_NODE=rig-6600"),
        "{node_env}"
    );
    assert!(
        node_env
            .lines()
            .any(|l| l == "LD_LIBRARY_PATH=/opt/rocm/lib"),
        "a hip node gets the ROCm loader path:\n{node_env}"
    );
    assert!(first.contains("not touching systemd"), "{first}");

    let second = install();
    assert_eq!(
        tree(&root),
        after_first,
        "the second run changed the tree:\n{second}"
    );
    assert!(
        second.contains("nothing to do: node rig-6600 is already installed"),
        "{second}"
    );
    for line in second.lines().filter(|l| l.starts_with("install-node: ")) {
        assert!(
            !line.starts_with("install-node: installed ")
                && !line.starts_with("install-node: updated "),
            "the second run wrote something: {line}\n{second}"
        );
    }

    // The operator fills in the credentials: never overwritten. A new config: the one update.
    let env_file = root.join("etc/seedq/seedq-consumer.env");
    std::fs::write(
        &env_file,
        "SEEDQ_AMQP_URL=amqp://seedq:filled-in@coordinator/%2f\n",
    )
    .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap()
        .write_all(b"\n# a comment added by the operator\n")
        .unwrap();
    let third = install();
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "SEEDQ_AMQP_URL=amqp://seedq:filled-in@coordinator/%2f\n"
    );
    let written: Vec<&str> = third
        .lines()
        .filter(|l| {
            l.starts_with("install-node: installed ") || l.starts_with("install-node: updated ")
        })
        .collect();
    assert_eq!(
        written,
        vec!["install-node: updated  /etc/seedq/cluster.toml"],
        "{third}"
    );

    // The unit's stop timeout must outlast the drain it asks for.
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/seedq-consumer.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    let stop: u64 = setting("TimeoutStopSec").parse().unwrap();
    let exec = setting("ExecStart");
    let drain: u64 = exec
        .split_once("--drain-timeout-secs ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("ExecStart passes --drain-timeout-secs");
    assert_eq!(
        drain,
        drain_timeout_default(),
        "the unit spells out the consumer's default"
    );
    assert!(
        stop > drain,
        "TimeoutStopSec={stop} must exceed the drain ({drain} s)"
    );
    for want in ["--config /etc/seedq/cluster.toml", "--node ${SEEDQ_NODE}"] {
        assert!(exec.contains(want), "{exec}");
    }
    for (key, value) in [
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("KillMode", "mixed"),
    ] {
        assert_eq!(setting(key), value);
    }
    assert!(unit.contains("EnvironmentFile=/etc/seedq/seedq-consumer.env"));

    if !on_path("systemd-analyze") {
        skip(
            TEST,
            "systemd-analyze is not on PATH; the unit was not verified",
        );
        return;
    }
    // verify resolves the unit's dependencies (multi-user.target, network-online.target...):
    // give a copy of the root the host's targets and slices, so that only our unit is judged.
    let copy = ns.path("verify-root");
    std::fs::create_dir_all(&copy).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(&copy)
        .status()
        .expect("cp -a");
    assert!(status.success());
    let units = copy.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let mut copied = 0;
    for dir in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.ends_with(".target") || name.ends_with(".slice"))
                && std::fs::copy(entry.path(), units.join(&*name)).is_ok()
            {
                copied += 1;
            }
        }
    }
    if copied == 0 {
        skip(
            TEST,
            "the host has no systemd targets to verify the unit against",
        );
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--root"])
        .arg(&copy)
        .arg("/etc/systemd/system/seedq-consumer.service")
        .output()
        .expect("systemd-analyze verify");
    let report = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{report}"
    );
    // verify reports unknown keys and bad values as warnings with status 0: none allowed.
    assert!(
        report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
}
