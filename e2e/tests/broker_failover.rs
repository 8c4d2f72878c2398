//! The broker going away under a running job, on RabbitMQ nodes of the tests' own (never the
//! shared broker): a restart of the only node (stop, start again on the same data) while chunks
//! and scripts are in flight, and the loss of the node leading the seeds queue in a three-node
//! cluster, with the consumer and the producer given every node's address. Either way the sieve
//! results must equal the sieve engine's exactly (no chunk lost or counted twice) and every
//! script must run exactly once.
//!
//! A test that cannot start its private nodes (RabbitMQ not installed, a node that does not
//! boot) says `SKIPPED <test>: <reason>` on stderr and passes; `SEEDQ_REQUIRE_PRIVATE_RABBIT=1`
//! makes that a failure. The cluster test is `#[ignore]`d (see its doc); `scripts/cluster-check.sh`
//! runs it.

mod scripts_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use scripts_support::{intervals, sleep_job, Cluster, NodeSpec};
use seedq_e2e::{eventually, skip, Namespace, PrivateRabbit, PrivateRedis, RabbitCluster};
use seedq_kernels::{reference, Family, FamilyConfig, SeedSet, SieveSpec, Threshold};

/// A sieve with a planted seed: xorshift32, 6 draws mod 10, skips 0..=`skip_max`, threshold 0.5
/// (many chance survivors, so that a lost or repeated chunk shows in the survivors as well as in
/// the counters).
struct SieveJob {
    draws: Vec<u64>,
    draws_file: String,
    start: u64,
    end: u64,
    skip_max: u32,
}

impl SieveJob {
    fn new(ns: &Namespace, start: u64, end: u64, skip_max: u32) -> SieveJob {
        let fam = FamilyConfig::new(Family::Xorshift32);
        // Skip 1 between the planted seed's draws: it matches all six.
        let draws: Vec<u64> = (0..6)
            .map(|i| fam.output_at(PLANTED, 1 + i * 2) % 10)
            .collect();
        let draws_file = seedq_e2e::write_json(ns, "draws.json", &json!(draws));
        SieveJob {
            draws,
            draws_file,
            start,
            end,
            skip_max,
        }
    }

    fn args(&self, chunk_size: u64) -> Vec<String> {
        [
            "--prng",
            "xorshift32",
            "--draws",
            &self.draws_file,
            "--modulus",
            "10",
            "--skip-min",
            "0",
            "--skip-max",
            &self.skip_max.to_string(),
            "--threshold",
            "0.5",
            "--seed-start",
            &self.start.to_string(),
            "--seed-end",
            &self.end.to_string(),
            "--chunk-size",
            &chunk_size.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn expected_seeds(&self) -> Vec<u64> {
        let spec = SieveSpec {
            family: FamilyConfig::new(Family::Xorshift32),
            draws: self.draws.clone(),
            modulus: 10,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: self.skip_max,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        };
        reference::sieve(
            &spec,
            &SeedSet::Range {
                start: self.start,
                end: self.end,
            },
        )
        .survivors
        .iter()
        .map(|s| s.seed)
        .collect()
    }

    /// Every chunk done once, every seed counted once, survivors equal to the engine's.
    fn assert_exact(&self, ns: &Namespace, job_id: &str) {
        let status = ns.status(job_id);
        assert_eq!(status["chunks_done"], status["chunks_total"], "{status}");
        assert_eq!(
            status["seeds_done"].as_u64(),
            Some(self.end - self.start),
            "seeds counted exactly once: {status}"
        );
        assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
        let expected = self.expected_seeds();
        assert!(expected.len() > 10, "the spec should give many survivors");
        let got: Vec<u64> = ns
            .results(job_id)
            .iter()
            .map(|r| r["seed"].as_u64().unwrap())
            .collect();
        assert_eq!(got, expected, "survivors differ from the sieve engine");
        assert_eq!(
            status["survivors"].as_u64(),
            Some(expected.len() as u64),
            "{status}"
        );
        assert!(got.contains(&PLANTED), "the planted seed survives");
    }
}

/// The seed the draws are generated from (inside both tests' ranges).
const PLANTED: u64 = 31_337;

fn chunks_done(ns: &Namespace, job: &str) -> (u64, u64) {
    let status = ns.status(job);
    (
        status["chunks_done"].as_u64().unwrap_or(0),
        status["chunks_total"].as_u64().unwrap_or(0),
    )
}

/// `(started, ended)` task ids of the fixture's timeline log.
fn timeline(log: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut started = Vec::new();
    let mut ended = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.nth(1)) {
            (Some("start"), Some(task)) => started.push(task.to_string()),
            (Some("end"), Some(task)) => ended.push(task.to_string()),
            _ => {}
        }
    }
    (started, ended)
}

/// Scripts running when the broker restarts: long enough that the node is reconnected, and the
/// broker has handed it their deliveries again, well before they end.
const SCRIPT_SECS: f64 = 60.0;
const SCRIPTS: usize = 4;

/// The only broker node stops and starts again (same data) while a sieve's chunks and a batch of
/// scripts are in flight on one consumer. Every delivery in flight is handed out again after the
/// restart: the chunks' results must still count once, and the scripts, whose first runs are
/// still going when their redeliveries arrive on the same node, must not run a second time (the
/// consumer's per-task lock holds each redelivery until the run ends, then acks it as done).
#[test]
fn a_broker_restart_mid_job_loses_and_repeats_nothing() {
    const TEST: &str = "a_broker_restart_mid_job_loses_and_repeats_nothing";
    let began = Instant::now();
    let mut rabbit = match PrivateRabbit::start() {
        Ok(rabbit) => rabbit,
        Err(reason) => return skip(TEST, &reason),
    };
    let Some(redis) = PrivateRedis::start() else {
        return skip(TEST, "redis-server is not installed");
    };
    eprintln!("private broker up after {:?}", began.elapsed());
    let mut cluster = Cluster::new(
        "failover-restart",
        &[NodeSpec {
            name: "solo",
            limit: SCRIPTS as u32,
            gpus: 0,
        }],
        3,
    );
    cluster.amqp_url = rabbit.url();
    cluster.redis_url = redis.url();
    cluster.ns.amqp_url = rabbit.url();
    cluster.ns.redis_url = redis.url();
    // The consumer's model (delivery limit...) for the producer too: they declare the same queues.
    cluster.ns.config = cluster.config.clone();
    cluster.start("solo");
    let mgmt = rabbit.mgmt();
    let seeds = format!("{}.seeds", cluster.ns.name);
    let scripts = format!("{}.scripts", cluster.ns.name);
    let subscribed = |queue: &str, tag: &str| mgmt.consumer_tags(queue).iter().any(|t| t == tag);
    eventually(
        "the consumer's seed slot and script consumer on the private broker",
        Duration::from_secs(120),
        || subscribed(&seeds, "solo/cpu0") && subscribed(&scripts, "solo/scripts"),
    );

    let log = cluster.ns.path("timeline.log");
    let log_text = log.display().to_string();
    let tasks: Vec<Value> = (0..SCRIPTS)
        .map(|i| sleep_job(&format!("long_{i}"), SCRIPT_SECS, &log_text))
        .collect();
    let file = cluster.jobs_file("jobs.json", &json!({ "jobs": tasks }));
    let batch = cluster.producer_ok(&["scripts", "--jobs-file", &file]);
    let batch = batch.lines().next().unwrap().trim().to_string();
    // About a minute of sieving on one CPU thread here: chunks are still queued and in flight
    // across the restart.
    let job = SieveJob::new(&cluster.ns, 1, 1_200_001, 150);
    let args = job.args(10_000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sieve = cluster.ns.sieve(&args);

    eventually(
        "every script to start and some chunks to finish",
        Duration::from_secs(120),
        || timeline(&log).0.len() == SCRIPTS && chunks_done(&cluster.ns, &sieve).0 >= 2,
    );
    let (done, total) = chunks_done(&cluster.ns, &sieve);
    assert!(
        done < total,
        "the sieve finished before the restart ({done}/{total}): make it longer"
    );
    let restart = Instant::now();
    rabbit.restart();
    eprintln!(
        "broker restarted in {:?} at {done}/{total} chunks",
        restart.elapsed()
    );
    assert!(
        timeline(&log).1.is_empty(),
        "a script ended during the restart: SCRIPT_SECS is too short for this machine"
    );

    // The node reconnects and the broker hands it every script again, while the first runs go on:
    // all of them unacked on the node at once, with none of the runs over.
    eventually(
        "the redelivered scripts to be held by the node",
        Duration::from_secs(90),
        || {
            mgmt.queue(&scripts)
                .ok()
                .flatten()
                .and_then(|q| q["messages_unacknowledged"].as_u64())
                == Some(SCRIPTS as u64)
        },
    );
    let (started, ended) = timeline(&log);
    assert!(
        ended.is_empty(),
        "the redeliveries came only after a run ended ({ended:?}): the per-task lock was not exercised"
    );
    assert_eq!(
        started.len(),
        SCRIPTS,
        "nothing ran twice so far: {started:?}"
    );
    eprintln!(
        "redeliveries held {:?} after the restart began",
        restart.elapsed()
    );

    cluster.ns.wait(&sieve, 900);
    job.assert_exact(&cluster.ns, &sieve);
    cluster.ns.wait(&batch, 300);
    let status = cluster.ns.status(&batch);
    assert_eq!(
        status["chunks_done"].as_u64(),
        Some(SCRIPTS as u64),
        "{status}"
    );
    assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
    let runs = intervals(&std::fs::read_to_string(&log).unwrap());
    let mut per_task: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *per_task.entry(run.1.as_str()).or_default() += 1;
    }
    assert_eq!(runs.len(), SCRIPTS, "runs == tasks: {runs:?}");
    assert!(per_task.values().all(|n| *n == 1), "{per_task:?}");
    let consumer_log = std::fs::read_to_string(cluster.ns.path("solo.log")).unwrap();
    assert!(
        consumer_log.contains("reconnected to RabbitMQ"),
        "{consumer_log}"
    );
    let acked_as_done = consumer_log
        .matches("task already done (redelivery); acking without running it")
        .count();
    assert_eq!(
        acked_as_done, SCRIPTS,
        "every redelivered script acked as done, none run again:\n{consumer_log}"
    );
    eprintln!("{TEST}: {:?} in all", began.elapsed());
}

/// A three-node cluster; the consumer and the producer are given all three addresses, node 1
/// first, so both connect to node 1, and the seeds queue, declared there, is led by it. Node 1
/// is SIGKILLed while the producer is still publishing and chunks are in flight: the queues'
/// leadership moves to the survivors, the consumer and the producer reconnect to another node,
/// the producer publishes its unconfirmed window again, and the job completes exactly.
///
/// Ignored by default: three RabbitMQ nodes take about a minute to boot and cluster on a 2-core
/// machine and, beside the other e2e tests running in parallel, slow all of them down. Run it
/// alone with `scripts/cluster-check.sh`.
#[test]
#[ignore = "three private RabbitMQ nodes: too heavy beside the rest of the suite on 2 cores; run scripts/cluster-check.sh"]
fn the_node_leading_the_seeds_queue_dies_and_the_job_completes_exactly() {
    const TEST: &str = "the_node_leading_the_seeds_queue_dies_and_the_job_completes_exactly";
    let began = Instant::now();
    let mut rabbit = match RabbitCluster::start() {
        Ok(cluster) => cluster,
        Err(reason) => return skip(TEST, &reason),
    };
    eprintln!("three-node cluster up after {:?}", began.elapsed());
    let mut ns = Namespace::new("failover-cluster");
    // The producer publishes the whole job itself (room for every chunk), so that the kill
    // lands in the middle of its publish: this test is about the publisher's failover.
    ns.use_config(|text| format!("{text}\n[scheduler]\nmin_queued = 1000000\n"));
    ns.amqp_url = rabbit.urls().join(",");
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer(&node, 2, 1);
    let seeds = format!("{}.seeds", ns.name);
    eventually(
        "the consumer's slots on node 1",
        Duration::from_secs(120),
        || rabbit.mgmt(1).consumer_tags(&seeds).len() == 2,
    );
    let leader = rabbit.leader(&seeds);
    assert_eq!(
        leader,
        Some(1),
        "the seeds queue is led by the node it was declared on"
    );

    // Many small chunks: the publish takes seconds, so the kill lands in the middle of it.
    let job = SieveJob::new(&ns, 1, 200_001, 2);
    let mut args = vec!["sieve", "--json", "--job-id", "failover-cluster"];
    let sieve_args = job.args(10);
    args.extend(sieve_args.iter().map(String::as_str));
    let mut producer = ns
        .producer_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let published = || {
        let mut conn = redis::Client::open(ns.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis");
        redis::cmd("HGET")
            .arg(seedq_protocol::keys::totals(&ns.name, "failover-cluster"))
            .arg("published_upto")
            .query::<Option<u64>>(&mut conn)
            .unwrap()
            .unwrap_or(0)
    };
    eventually(
        "the producer to have published its first windows",
        Duration::from_secs(120),
        || published() >= 2048,
    );
    let mid_publish = producer.try_wait().unwrap().is_none();
    let at_kill = published();
    let killed = Instant::now();
    rabbit.kill(1);
    eprintln!(
        "killed node 1 at {at_kill} chunks published (producer still publishing: {mid_publish})"
    );
    eventually(
        "a survivor to lead the seeds queue",
        Duration::from_secs(60),
        || matches!(rabbit.leader(&seeds), Some(2 | 3)),
    );
    eprintln!(
        "node {:?} leads the seeds queue {:?} after the kill",
        rabbit.leader(&seeds),
        killed.elapsed()
    );

    let out = producer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the producer must fail over ({}):\n{stderr}",
        out.status
    );
    if mid_publish {
        assert!(
            stderr.contains("failing over"),
            "the producer was publishing when its node died:\n{stderr}"
        );
    }
    ns.wait("failover-cluster", 900);
    job.assert_exact(&ns, "failover-cluster");
    assert!(ns.consumer(consumer).is_running());
    let log = ns.consumer(consumer).log_text();
    assert!(log.contains("reconnected to RabbitMQ"), "{log}");
    for survivor in [2, 3] {
        if log.contains(&format!("127.0.0.1:{}", port_of(&rabbit.url(survivor)))) {
            eprintln!("the consumer failed over to node {survivor}");
        }
    }
    assert!(
        !stderr.contains("guest:guest") && !log.contains("guest:guest"),
        "a password reached a log"
    );
    eprintln!("{TEST}: {:?} in all", began.elapsed());
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL")
}

/// Needs no broker: a consumer given a list of addresses none of which answers keeps retrying
/// every one of them, names each in its log, and logs neither password.
#[test]
fn every_address_of_a_dead_list_is_tried_and_no_password_is_logged() {
    let ns = Namespace::new("failover-deadlist");
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let (a, b) = (closed(), closed());
    let secrets = [
        format!("first-{}-pw", std::process::id()),
        format!("second-{}-pw", std::process::id()),
    ];
    let list = format!(
        "amqp://seedq:{}@127.0.0.1:{a}/%2f,amqp://seedq:{}@127.0.0.1:{b}/%2f",
        secrets[0], secrets[1]
    );
    let mut child = std::process::Command::new(seedq_e2e::consumer_bin())
        .args(["--config", ns.config.to_str().unwrap()])
        .args(["--node", "deadlist", "--backend", "cpu", "--slots", "1"])
        .arg("--no-calibrate")
        .env("SEEDQ_NAMESPACE", &ns.name)
        .env("SEEDQ_AMQP_URL", &list)
        .env("SEEDQ_REDIS_URL", &ns.redis_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn seedq-consumer");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still retrying after 4 s"
    );
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("RabbitMQ unreachable at every address"),
        "{log}"
    );
    for port in [a, b] {
        assert!(
            log.contains(&format!("amqp://seedq:***@127.0.0.1:{port}/%2f")),
            "both addresses named, redacted:\n{log}"
        );
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a password was logged:\n{log}"
        );
    }
}
