//! Security end to end, against the real services and binaries: what a script sees of its node
//! (a cleared environment: no broker, Redis or job-key credential, nothing of the consumer's own
//! environment beyond the allowlist), secrets kept out of every log line, error, status,
//! heartbeat, metric and Redis record, credentials read from `SEEDQ_*_FILE`, and signed jobs
//! (unsigned or wrongly signed messages dead-lettered as `bad_signature` with nothing run, while
//! the retry path keeps signed jobs running).
//!
//! The secrets used here have the shapes redaction must survive: a Redis password with `@` and
//! `:` written unencoded in the URL, a job key, and a variable of the consumer's environment
//! that no script may see.

mod scripts_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use scripts_support::{Cluster, NodeSpec};
use seedq_e2e::{skip, PrivateRedis};

const REDIS_PASSWORD: &str = "p@ss:w0rd-R3dis-S3CRET";
const JOB_KEY: &str = "job-key-S3CRET-0123456789abcdef";
const DECOY: &str = "decoy-S3CRET-token-42";

/// Every form of a secret that must never show (as written, percent-encoded, and the parts
/// around an `@` a naive redaction would leave visible).
fn forbidden() -> Vec<&'static str> {
    vec![
        REDIS_PASSWORD,
        "w0rd-R3dis-S3CRET",
        "p%40ss",
        JOB_KEY,
        "S3CRET-0123456789",
        DECOY,
        "guest:guest",
    ]
}

fn assert_clean(what: &str, text: &str) {
    for secret in forbidden() {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret:?}:\n{text}"
        );
    }
}

/// Everything Redis holds under the namespace, as text.
fn redis_dump(url: &str, namespace: &str) -> String {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to the private Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}*"))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty(), "nothing stored under {namespace}");
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query(&mut conn),
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut conn),
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(&mut conn),
            _ => Ok(redis::Value::Nil),
        }
        .unwrap();
        out.push_str(&format!("{key} = {value:?}\n"));
        if let redis::Value::BulkString(bytes) = &value {
            out.push_str(&String::from_utf8_lossy(bytes));
        }
    }
    out
}

/// Runs `cmd` for up to `limit`, then stops it; its exit status (if it ended) and its stdout
/// and stderr.
fn run_briefly(
    mut cmd: std::process::Command,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status, text)
}

fn http_get(port: u16, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

const ENV_DUMP: &str = r#"import json, os, sys
env = dict(os.environ)
print(json.dumps(env))
print(json.dumps(env), file=sys.stderr)
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
with open(sys.argv[1], "w") as f:
    json.dump({"status": "ok", "env": env}, f)
"#;

#[test]
fn scripts_see_no_credentials_and_no_secret_reaches_logs_records_or_metrics() {
    let Some(redis) = PrivateRedis::start_with(Some(("default", REDIS_PASSWORD)), &[]) else {
        skip(
            "scripts_see_no_credentials_and_no_secret_reaches_logs_records_or_metrics",
            "redis-server is not installed",
        );
        return;
    };
    let mut cluster = Cluster::new(
        "sec-env",
        &[NodeSpec {
            name: "sec-a",
            limit: 2,
            gpus: 0,
        }],
        1,
    );
    // The node lets jobs set OMP_NUM_THREADS, nothing else.
    let toml = std::fs::read_to_string(&cluster.config).unwrap().replace(
        "python_env = \"python3\"\n",
        "python_env = \"python3\"\nscript_env_allow = [\"OMP_NUM_THREADS\"]\n",
    );
    std::fs::write(&cluster.config, toml).unwrap();
    std::fs::write(cluster.root("sec-a").join("envdump.py"), ENV_DUMP).unwrap();
    // The consumer gets its Redis URL from a file (as a docker secret is mounted), the producer
    // from the variable; both hold the job key, and the consumer a variable of its own.
    let url_file = cluster.ns.path("redis-url.secret");
    std::fs::write(&url_file, format!("{}\n", redis.url())).unwrap();
    cluster.redis_url = redis.url();
    cluster.extra_env = vec![
        ("SEEDQ_JOB_KEY".into(), JOB_KEY.into()),
        ("DECOY_TOKEN".into(), DECOY.into()),
    ];
    let metrics_port = free_port();
    // The consumer: SEEDQ_REDIS_URL_FILE instead of SEEDQ_REDIS_URL.
    cluster.extra_env.push((
        "SEEDQ_REDIS_URL_FILE".into(),
        url_file.display().to_string(),
    ));
    cluster.start_with_unset(
        "sec-a",
        &["--metrics-port", &metrics_port.to_string()],
        &["SEEDQ_REDIS_URL"],
    );
    cluster.extra_env.pop();
    cluster.wait_for_script_consumers(&["sec-a"]);

    let jobs = json!([
        {"job_id": "dump", "script": "envdump.py", "args": ["out/dump.json"],
         "expected_output": "out/dump.json", "timeout": 60, "env": {"OMP_NUM_THREADS": "3"}},
        {"job_id": "forbidden", "script": "envdump.py", "args": ["out/forbidden.json"],
         "expected_output": "out/forbidden.json", "timeout": 60, "env": {"NOT_ALLOWED": "1"}},
    ]);
    let file = cluster.jobs_file("env_jobs.json", &jobs);
    let out = cluster.producer(&[
        "scripts",
        "--jobs-file",
        &file,
        "--wait",
        "--timeout",
        "120",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "one job is refused:\n{stderr}");
    assert_clean("the producer's stderr", &stderr);
    let batch = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();

    // The job that set a variable its node does not allow never ran.
    let dlq = cluster.dlq_of(&batch);
    let reasons: BTreeMap<String, String> = dlq["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["member"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([("t:forbidden".to_string(), "env_not_allowed".to_string())]),
        "{dlq}"
    );
    assert!(!cluster.root("sec-a").join("out/forbidden.json").exists());

    // The script's own view of its environment: the allowlist, its binding, its job's variable.
    let collected = cluster.ns.path("collected");
    let out = cluster.producer(&[
        "collect",
        &batch,
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let dumped: Value =
        serde_json::from_slice(&std::fs::read(collected.join("dump.json")).unwrap()).unwrap();
    let env = dumped["env"].as_object().unwrap();
    assert_eq!(env["OMP_NUM_THREADS"], "3", "{env:?}");
    assert_eq!(env["SEEDQ_TASK_ID"], "dump");
    for name in env.keys() {
        assert!(
            ![
                "SEEDQ_AMQP_URL",
                "SEEDQ_REDIS_URL",
                "SEEDQ_REDIS_URL_FILE",
                "SEEDQ_JOB_KEY",
                "DECOY_TOKEN",
                "NOT_ALLOWED"
            ]
            .contains(&name.as_str()),
            "{name} reached the script: {env:?}"
        );
    }
    let allowed_seedq = [
        "SEEDQ_NODE",
        "SEEDQ_BATCH_ID",
        "SEEDQ_TASK_ID",
        "SEEDQ_ATTEMPT",
        "SEEDQ_OUTPUT_DIR",
    ];
    for name in env.keys().filter(|n| n.starts_with("SEEDQ_")) {
        assert!(allowed_seedq.contains(&name.as_str()), "{name}: {env:?}");
    }
    let collected_text: String = std::fs::read_dir(&collected)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert_clean("the collected outputs", &collected_text);

    // Nothing of the secrets in Redis (log tails included), status, heartbeats, metrics, logs.
    let stored = redis_dump(&redis.url(), &cluster.ns.name);
    assert!(stored.contains("OMP_NUM_THREADS"), "the tails were stored");
    assert_clean("Redis", &stored);
    assert_clean(
        "status",
        &cluster.producer_ok(&["status", &batch, "--json"]),
    );
    assert_clean("nodes", &cluster.producer_ok(&["nodes", "--json"]));
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.contains("seedq_"), "{metrics}");
    assert_clean("the metrics", &metrics);
    let log = std::fs::read_to_string(cluster.ns.path("sec-a.log")).unwrap();
    assert!(log.contains("job key set"), "{log}");
    assert_clean("the consumer log", &log);
}

#[test]
fn secrets_stay_out_of_errors_whatever_the_url_looks_like() {
    let ns = seedq_e2e::Namespace::new("sec-errors");
    let bad: Vec<(&str, String, String)> = vec![
        // Unreachable, password with '@' and ':' unencoded.
        (
            "redis unreachable",
            format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:1/"),
            seedq_e2e::amqp_url(),
        ),
        // Not a number as the port: the parser's own error.
        (
            "redis bad port",
            format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:notaport/"),
            seedq_e2e::amqp_url(),
        ),
        // No scheme: a client would echo the whole value.
        (
            "redis no scheme",
            format!("default:{REDIS_PASSWORD}@127.0.0.1:6379"),
            seedq_e2e::amqp_url(),
        ),
        (
            "amqp unreachable",
            seedq_e2e::redis_url(),
            format!("amqp://seedq:{REDIS_PASSWORD}@127.0.0.1:1/%2f"),
        ),
        (
            "amqp bad port",
            seedq_e2e::redis_url(),
            format!("amqp://seedq:{REDIS_PASSWORD}@127.0.0.1:notaport/%2f"),
        ),
        (
            "amqp list, one bad",
            seedq_e2e::redis_url(),
            format!(
                "amqp://seedq:{REDIS_PASSWORD}@127.0.0.1:1/%2f,amqp://x:{JOB_KEY}@127.0.0.1:2/%2f"
            ),
        ),
    ];
    for (what, redis_url, amqp_url) in &bad {
        // Redis cases fail at once; the broker is retried for a minute, so a broker case is
        // read for a few seconds (its retry warnings quote the client's error) and stopped.
        let command: &[&str] = if what.starts_with("redis") {
            &["status"]
        } else {
            &["dlq", "list"]
        };
        let mut cmd = ns.producer_cmd(command);
        cmd.env("SEEDQ_REDIS_URL", redis_url)
            .env("SEEDQ_AMQP_URL", amqp_url)
            .env("SEEDQ_JOB_KEY", JOB_KEY)
            .env("RUST_LOG", "debug");
        let (status, text) = run_briefly(cmd, Duration::from_secs(4));
        // A process still retrying when stopped has said nothing final; one that ended must
        // have failed and said why.
        if let Some(status) = status {
            assert!(!status.success(), "{what}: {command:?} succeeded");
            assert!(text.contains("error"), "{what}: {text}");
        }
        assert_clean(what, &text);
    }
    // A consumer that cannot start says why, without the secret.
    let out = std::process::Command::new(seedq_e2e::consumer_bin())
        .args(["--backend", "cpu", "--slots", "1", "--no-calibrate"])
        .env("SEEDQ_NAMESPACE", &ns.name)
        .env(
            "SEEDQ_REDIS_URL",
            format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:notaport/"),
        )
        .env("SEEDQ_JOB_KEY", JOB_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("Redis"), "{text}");
    assert_clean("the consumer's fatal error", &text);

    // Secret files: unreadable, empty, or set twice: a clear error naming the variable.
    let empty = ns.path("empty.secret");
    std::fs::write(&empty, "\n").unwrap();
    for (file_var, value, also_plain, needle) in [
        (
            "SEEDQ_REDIS_URL_FILE",
            "/nonexistent/secret",
            false,
            "cannot be read",
        ),
        (
            "SEEDQ_JOB_KEY_FILE",
            empty.to_str().unwrap(),
            false,
            "is empty",
        ),
        (
            "SEEDQ_AMQP_URL_FILE",
            empty.to_str().unwrap(),
            true,
            "unset one of them",
        ),
    ] {
        let mut cmd = ns.producer_cmd(&["status"]);
        cmd.env(file_var, value);
        if !also_plain {
            cmd.env_remove(file_var.trim_end_matches("_FILE"));
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file_var}");
        assert!(text.contains(file_var) && text.contains(needle), "{text}");
    }
    // A key too short to be one.
    let out = ns
        .producer_cmd(&["status"])
        .env("SEEDQ_JOB_KEY", "short")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("openssl rand"),
        "{text}"
    );
}

#[test]
fn unsigned_or_wrongly_signed_jobs_run_nothing_and_signed_ones_survive_retries() {
    let mut cluster = Cluster::new(
        "sec-sign",
        &[NodeSpec {
            name: "sec-s",
            limit: 2,
            gpus: 0,
        }],
        2,
    );
    cluster.extra_env = vec![("SEEDQ_JOB_KEY".into(), JOB_KEY.into())];
    let root = cluster.root("sec-s").to_path_buf();
    // More tasks than the node's permits and queue allow at once, so that a node's scheduler
    // publishes (or refuses) the rest.
    const TASKS: usize = 6;

    // Before any node is up (a producer without the key is refused once a keyed node is):
    // 1. a signed sieve whose record is then edited in Redis: its seal no longer holds;
    let draws = seedq_e2e::write_json(&cluster.ns, "d.json", &json!([1, 2, 3]));
    let args = sieve_args("edited", &draws);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let edited: Value = serde_json::from_str(&cluster.producer_ok(&args)).unwrap();
    let mut redis = redis::Client::open(cluster.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    let spec_key = seedq_protocol::keys::job_spec(&cluster.ns.name, "edited");
    let record: String = redis::cmd("GET").arg(&spec_key).query(&mut redis).unwrap();
    let changed = record.replacen("[1,2,3]", "[1,2,4]", 1);
    assert_ne!(changed, record, "the draws are in the record: {record}");
    let _: () = redis::cmd("SET")
        .arg(&spec_key)
        .arg(&changed)
        .query(&mut redis)
        .unwrap();
    // 2. a sieve and a script batch enqueued without the key (unsigned, unsealed).
    let args = sieve_args("unsigned", &draws);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = unkeyed_producer(&cluster, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unsigned"), "the producer warns: {stderr}");
    let unsigned_sieve: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (unsigned_ids, file) = batch_of(&cluster, "unsigned", TASKS);
    let out = unkeyed_producer(&cluster, &["scripts", "--jobs-file", &file])
        .output()
        .unwrap();
    let unsigned_batch = enqueued_batch("unsigned", &out);

    cluster.start("sec-s");
    cluster.wait_for_script_consumers(&["sec-s"]);
    // With a keyed node alive, a producer without the key is refused before it creates
    // anything.
    let (_, file) = batch_of(&cluster, "refused", TASKS);
    let out = unkeyed_producer(&cluster, &["scripts", "--jobs-file", &file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("sec-s") && stderr.contains("SEEDQ_JOB_KEY"),
        "{stderr}"
    );
    let created: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:job:*refused*", cluster.ns.name))
        .query(&mut redis)
        .unwrap();
    assert!(created.is_empty(), "nothing was enqueued: {created:?}");
    // Nor does a node without the key join it (its scheduler would publish the keyed jobs'
    // windows unsigned).
    let mut keyless = std::process::Command::new(seedq_e2e::consumer_bin())
        .args(["--config", cluster.config.to_str().unwrap()])
        .args(["--node", "sec-keyless", "--backend", "cpu", "--slots", "1"])
        .env("SEEDQ_NAMESPACE", &cluster.ns.name)
        .env("SEEDQ_AMQP_URL", &cluster.amqp_url)
        .env("SEEDQ_REDIS_URL", &cluster.redis_url)
        .env_remove("SEEDQ_JOB_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(status) = keyless.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            keyless.kill().unwrap();
            panic!("a node without the key kept running beside a keyed one");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut keyless.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !exited.success() && stderr.contains("sec-s") && stderr.contains("SEEDQ_JOB_KEY"),
        "{stderr}"
    );
    // 3. a script batch signed (and sealed) with another key.
    let (forged_ids, file) = batch_of(&cluster, "forged", TASKS);
    let out = unkeyed_producer(&cluster, &["scripts", "--jobs-file", &file])
        .env("SEEDQ_JOB_KEY", "another-key-0123456789abcdef")
        .output()
        .unwrap();
    let forged_batch = enqueued_batch("forged", &out);

    // None of them runs anything, and each settles, holding no scheduler places.
    let edited_published = edited["published"].as_u64().unwrap();
    refused_everywhere(&cluster, "edited", 4, edited_published);
    let letters = cluster.dlq_of("edited")["letters"].clone();
    assert!(
        letters.as_array().unwrap().iter().all(|l| l["detail"]
            .as_str()
            .unwrap_or("")
            .contains("does not match its seal")),
        "{letters}"
    );
    let sieve_published = unsigned_sieve["published"].as_u64().unwrap();
    refused_everywhere(&cluster, "unsigned", 4, sieve_published);
    for ((batch, published), ids) in [(unsigned_batch, unsigned_ids), (forged_batch, forged_ids)] {
        refused_everywhere(&cluster, &batch, TASKS, published as u64);
        for id in &ids {
            assert!(
                !root.join(format!("out/{id}.json")).exists(),
                "the script {id} ran"
            );
        }
        // Replaying them would sign them with the replaying producer's key: refused, they stay.
        cluster.producer_ok(&["dlq", "replay", "--job", &batch]);
        assert_eq!(dead_letters(&cluster, &batch, published).len(), published);
    }
    // A producer with the key will not publish an unsealed job again either, and says why.
    let out = cluster.producer(&["resume", "unsigned"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("created without the job key"),
        "{stderr}"
    );

    // Signed: one succeeds; one fails twice, its second attempt republished (and signed again)
    // by the node through the delay queue, and runs.
    let file = cluster.jobs_file(
        "signed.json",
        &json!([
            script_job("signed_ok", "sleep"),
            script_job("signed_fails", "fail")
        ]),
    );
    let signed_batch = cluster.scripts_with_dead_letters(&file, 120);
    let collected = cluster.ns.path("signed-collected");
    cluster.producer(&[
        "collect",
        &signed_batch,
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    assert!(
        collected.join("signed_ok.json").exists(),
        "the signed job ran"
    );
    let dlq = cluster.dlq_of(&signed_batch);
    let letters = dlq["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dlq}");
    assert_eq!(letters[0]["reason"], "exit_status", "{dlq}");
    assert_eq!(letters[0]["attempt"], "2", "the retry ran: {dlq}");
}

/// A task of the fixture script in `mode` (`sleep`, `fail`), writing `out/<id>.json`.
fn script_job(id: &str, mode: &str) -> Value {
    let output = format!("out/{id}.json");
    json!({"job_id": id, "script": "job.py", "args": [mode, output, "0.1", "/dev/null"],
           "expected_output": output, "timeout": 60})
}

/// A jobs file of `n` sleeping tasks `<tag>_job<i>`, and their ids.
fn batch_of(cluster: &Cluster, tag: &str, n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}_job{i}")).collect();
    let file = cluster.jobs_file(
        &format!("{tag}.json"),
        &Value::Array(ids.iter().map(|id| script_job(id, "sleep")).collect()),
    );
    (ids, file)
}

/// The batch id a `scripts` run printed and how many tasks it published itself (fewer than
/// the batch holds: the node's scheduler has the rest).
fn enqueued_batch(tag: &str, out: &std::process::Output) -> (String, usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tag}: {stderr}");
    let published: usize = stderr
        .split_once("script task(s) as batch")
        .and_then(|(_, rest)| rest.split_once('(')?.1.split_once(" published now"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{tag}: how many the producer published: {stderr}"));
    let total = stderr
        .split_once("enqueued ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{tag}: the batch's size: {stderr}"));
    assert!(
        published < total,
        "{tag}: the producer published them all: {stderr}"
    );
    let batch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (batch, published)
}

/// A job the key did not seal (enqueued without it, or edited in Redis) runs nothing and still
/// settles, so it holds no scheduler places: each of its `n` chunks or tasks ends dead in its
/// record with `bad_signature`, those its producer published refused by the node (so in the
/// dead-letter queue too), the rest by the node's scheduler, which publishes nothing of it.
fn refused_everywhere(cluster: &Cluster, job: &str, n: usize, published: u64) {
    seedq_e2e::expect_dead_in_record(
        &cluster.redis_url,
        &cluster.ns.name,
        job,
        n,
        "bad_signature",
    );
    let letters = dead_letters(cluster, job, published as usize);
    assert!(
        letters.iter().all(|l| l["reason"] == "bad_signature"),
        "{letters:?}"
    );
    let status: Value =
        serde_json::from_str(&cluster.producer_ok(&["status", job, "--json"])).unwrap();
    assert_eq!(status["chunks_done"].as_u64(), Some(0), "{status}");
    assert_eq!(status["state"], "finished_with_failures", "{status}");
}

/// A sieve of 4 chunks as job `id` (`--json`).
fn sieve_args(id: &str, draws: &str) -> Vec<String> {
    [
        "sieve",
        "--job-id",
        id,
        "--json",
        "--prng",
        "xorshift32",
        "--draws",
        draws,
        "--threshold",
        "1",
        "--seed-start",
        "1",
        "--seed-end",
        "4001",
        "--chunk-size",
        "1000",
    ]
    .map(String::from)
    .to_vec()
}

/// `seedq-producer ARGS` of the cluster's namespace without its job key.
fn unkeyed_producer(cluster: &Cluster, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(seedq_e2e::producer_bin());
    cmd.args(["--config", cluster.config.to_str().unwrap()])
        .args(args)
        .env("SEEDQ_NAMESPACE", &cluster.ns.name)
        .env("SEEDQ_AMQP_URL", &cluster.amqp_url)
        .env("SEEDQ_REDIS_URL", &cluster.redis_url)
        .env_remove("SEEDQ_JOB_KEY");
    cmd
}

/// Waits until the job has `n` dead letters and returns them (`dlq list --json`).
fn dead_letters(cluster: &Cluster, job: &str, n: usize) -> Vec<Value> {
    let mut letters = Vec::new();
    seedq_e2e::eventually(
        &format!("{n} dead letter(s) of {job}"),
        Duration::from_secs(60),
        || {
            let dlq = cluster.dlq_of(job);
            letters = dlq["letters"].as_array().cloned().unwrap_or_default();
            letters.len() >= n
        },
    );
    assert_eq!(letters.len(), n, "{letters:?}");
    letters
}

/// The shipped deployment as files: every published port but authenticated AMQP is on
/// 127.0.0.1, Redis runs with an ACL file and protected mode, the broker's users are the
/// namespace's role users (no `guest`), and the secrets `init-secrets.sh` writes are ignored
/// by git. (No container runtime is assumed here; `scripts/services.sh` runs the services.)
#[test]
fn the_shipped_deployment_publishes_nothing_unauthenticated_beyond_loopback() {
    let root = seedq_e2e::workspace_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let compose = read("docker-compose.yml");
    let mut ports = 0;
    let mut lines = compose.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "ports:" {
            continue;
        }
        while let Some(entry) = lines.next_if(|l| l.trim_start().starts_with("- ")) {
            ports += 1;
            let mapping = entry.trim().trim_start_matches("- ").trim_matches('"');
            assert!(
                mapping.starts_with("127.0.0.1:") || mapping.ends_with(":5672"),
                "published beyond loopback: {mapping}"
            );
        }
    }
    assert!(ports >= 3, "found {ports} published ports");
    assert!(compose.contains("--aclfile"), "Redis without its ACL users");
    let redis_conf = read("config/redis.conf");
    assert!(redis_conf.contains("protected-mode yes"));
    let definitions: Value = serde_json::from_str(&read("config/definitions.json")).unwrap();
    let users: Vec<&str> = definitions["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(!users.is_empty() && !users.contains(&"guest"), "{users:?}");
    assert!(users.iter().all(|u| u.starts_with("@NS@-")), "{users:?}");
    let ignored = read(".gitignore");
    assert!(ignored.lines().any(|l| l == "/secrets/") && ignored.lines().any(|l| l == "/.env"));
}
