//! Script jobs while Redis refuses writes without being down: out of memory under `maxmemory`
//! with `noeviction`, and BUSY behind a long script. Each runs against a private redis-server
//! (the shared one's configuration is never touched). What must hold: no script runs twice (a
//! finished run's result waits inside its parked message until Redis takes it), nothing is lost,
//! and the batch settles once Redis recovers. A stored batch that cannot be read (corrupt, or
//! written by a newer build) is a deterministic error: its tasks are dead-lettered with reason
//! `corrupt_job`, never parked forever.

mod scripts_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use scripts_support::{sleep_job, Cluster, NodeSpec};
use seedq_e2e::{eventually, PrivateRedis};

/// How often each task started, from the fixture's timeline log.
fn starts(log: &str) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.first() == Some(&"start") {
            *runs.entry(parts[2].to_string()).or_default() += 1;
        }
    }
    runs
}

fn one_node_cluster(tag: &str, redis: &PrivateRedis) -> Cluster {
    let mut cluster = Cluster::new(
        tag,
        &[NodeSpec {
            name: "pressure",
            limit: 2,
            gpus: 0,
        }],
        3,
    );
    cluster.redis_url = redis.url();
    cluster.start("pressure");
    cluster.wait_for_script_consumers(&["pressure"]);
    cluster
}

#[test]
fn script_batch_under_redis_oom_runs_each_task_once() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED script_batch_under_redis_oom_runs_each_task_once: redis-server is not installed");
        return;
    };
    let cluster = one_node_cluster("oom-scripts", &redis);
    let timeline = cluster.ns.path("timeline.log");
    let log = timeline.to_str().unwrap();
    let tasks: Vec<Value> = (0..4)
        .map(|i| sleep_job(&format!("oom_{i:02}"), 1.0, log))
        .collect();
    let file = cluster.jobs_file("oom.json", &json!(tasks));
    let collected = cluster.ns.path("collected");
    // The same options as the waiting call below: the same batch.
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    eventually("the first task to start", Duration::from_secs(60), || {
        !starts(log).is_empty()
    });
    // Every write is refused from now on; reads still work, so tasks run and then cannot store.
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory-policy", "noeviction");
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory", "1");
    eventually("every task to have run", Duration::from_secs(120), || {
        starts(log).len() == 4
    });
    let node_log = || std::fs::read_to_string(cluster.ns.path("pressure.log")).unwrap();
    eventually(
        "a finished run to be parked",
        Duration::from_secs(60),
        || node_log().contains("Redis unavailable; message parked"),
    );
    // Out of memory for a while longer: parked messages come back and are parked again.
    std::thread::sleep(Duration::from_secs(8));
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory", "0");
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--wait",
        "--timeout",
        "180",
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    let runs = starts(log);
    assert_eq!(runs.len(), 4, "{runs:?}");
    for (task, n) in &runs {
        assert_eq!(*n, 1, "task {task} ran {n} times: {runs:?}\n{}", node_log());
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(collected.join("collect_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["collected"], 4, "{summary}");
    for task in summary["tasks"].as_array().unwrap() {
        assert_eq!(
            task["attempt"], 1,
            "waiting for Redis used an attempt: {summary}"
        );
    }
}

#[test]
fn script_batch_under_redis_busy_runs_each_task_once() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED script_batch_under_redis_busy_runs_each_task_once: redis-server is not installed");
        return;
    };
    let cluster = one_node_cluster("busy-scripts", &redis);
    let timeline = cluster.ns.path("timeline.log");
    let log = timeline.to_str().unwrap();
    let tasks: Vec<Value> = (0..3)
        .map(|i| sleep_job(&format!("busy_{i:02}"), 0.5, log))
        .collect();
    let file = cluster.jobs_file("busy.json", &json!(tasks));
    cluster.producer_ok(&["scripts", "--jobs-file", &file]);
    eventually("the first task to start", Duration::from_secs(60), || {
        !starts(log).is_empty()
    });
    // A script keeps the server busy for 10 s.
    seedq_e2e::redis_busy_for(&redis.url(), 10);
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--wait",
        "--timeout",
        "180",
    ]);
    let runs = starts(log);
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (task, n) in &runs {
        assert_eq!(*n, 1, "task {task} ran {n} times: {runs:?}");
    }
}

#[test]
fn a_corrupt_stored_batch_dead_letters_its_tasks_with_their_own_reason() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED a_corrupt_stored_batch_dead_letters...: redis-server is not installed");
        return;
    };
    let mut cluster = Cluster::new(
        "corrupt-batch",
        &[NodeSpec {
            name: "pressure",
            limit: 2,
            gpus: 0,
        }],
        3,
    );
    cluster.redis_url = redis.url();
    let timeline = cluster.ns.path("timeline.log");
    let log = timeline.to_str().unwrap();
    let tasks: Vec<Value> = (0..3)
        .map(|i| sleep_job(&format!("corrupt_{i:02}"), 0.2, log))
        .collect();
    let file = cluster.jobs_file("corrupt.json", &json!(tasks));
    // Enqueued while no node runs, then the stored batch is replaced by one "of a newer build"
    // (valid JSON, unknown protocol version), which no retry or wait can make readable.
    let batch_id = cluster
        .producer_ok(&["scripts", "--jobs-file", &file])
        .trim()
        .to_string();
    seedq_e2e::store_job_of_a_newer_build(&redis.url(), &cluster.ns.name, &batch_id);
    cluster.start("pressure");
    // The first window (min_queued = 2 with no node alive) reaches the node, which
    // dead-letters it and records it in the batch's record; the scheduler cannot read the batch
    // to publish the third task, and records it dead with the same reason: the batch settles.
    seedq_e2e::expect_dead_letters(&cluster.ns.name, 2, "corrupt_job");
    seedq_e2e::expect_dead_in_record(&redis.url(), &cluster.ns.name, &batch_id, 3, "corrupt_job");
    assert!(starts(log).is_empty(), "a task of an unreadable batch ran");
}
