//! Script jobs end to end, against the real RabbitMQ and Redis and the real binaries: per-node
//! concurrency by prefetch, every failure mode ending as a dead letter with its reason without
//! blocking the node, `collect` byte for byte, outputs private to each run (or taking turns on a
//! fixed path), messages of an earlier life of a batch refused, and what the management UI shows.
//!
//! Each test writes its own cluster.toml (nodes with their own script roots under the test's
//! temp directory, python3 as the interpreter) and starts its consumers with it. The fixture
//! script is `e2e/fixtures/scripts/job.py` (see its doc for the modes).

mod scripts_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use scripts_support::{alive, intervals, peak, sleep_job, Cluster, NodeSpec};
use seedq_e2e::{encode_segment, eventually, mgmt_request, PrivateRedis};

#[test]
fn nodes_never_exceed_their_limit_and_all_take_work() {
    let mut cluster = Cluster::new(
        "scripts-limits",
        &[
            NodeSpec {
                name: "node-a",
                limit: 2,
                gpus: 2,
            },
            NodeSpec {
                name: "node-b",
                limit: 1,
                gpus: 0,
            },
        ],
        3,
    );
    cluster.start("node-a");
    cluster.start("node-b");
    cluster.wait_for_script_consumers(&["node-a", "node-b"]);

    // The management UI: both queues, one consumer per node, tag <node>/scripts, prefetch = limit,
    // named connections.
    let shared = format!("{}.scripts", cluster.ns.name);
    let mut consumers = cluster.queue_consumers(&shared);
    consumers.sort();
    assert_eq!(consumers.len(), 2, "{consumers:?}");
    assert_eq!(
        (consumers[0].0.as_str(), consumers[0].1),
        ("node-a/scripts", 2)
    );
    assert_eq!(
        (consumers[1].0.as_str(), consumers[1].1),
        ("node-b/scripts", 1)
    );
    // The channel's connection is the node's named one (`seedq-consumer@node-a` in the UI); the
    // management API fills in connection details a moment after it lists a consumer.
    eventually(
        "node-a's script consumer on its named connection",
        Duration::from_secs(30),
        || {
            let named = seedq_e2e::node_connections("node-a").unwrap_or_default();
            cluster
                .queue_consumers(&shared)
                .iter()
                .any(|c| c.0 == "node-a/scripts" && named.contains(&c.2))
        },
    );
    let pinned = cluster.queue_consumers(&format!("{}.scripts.node-a", cluster.ns.name));
    assert_eq!(
        pinned.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        vec!["node-a/scripts"]
    );
    let (code, body) = mgmt_request(
        "GET",
        &format!("/api/queues/%2F/{}", encode_segment(&shared)),
    )
    .unwrap();
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["type"], "quorum");
    assert_eq!(info["durable"], true);

    let log = cluster.ns.path("timeline.log").display().to_string();
    let jobs: Vec<Value> = (0..12)
        .map(|i| sleep_job(&format!("sleep_{i:02}"), 1.0, &log))
        .collect();
    let file = cluster.jobs_file("sleep_jobs.json", &json!({ "jobs": jobs }));
    let out_dir = cluster.ns.path("collected");
    let stdout = cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--wait",
        "--timeout",
        "180",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let batch = stdout.lines().next().unwrap().trim().to_string();

    let runs = intervals(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(runs.len(), 12, "every job ran exactly once: {runs:?}");
    let per_node = |node: &str| {
        runs.iter()
            .filter(|r| r.0 == node)
            .map(|r| (r.2, r.3))
            .collect::<Vec<_>>()
    };
    let (a, b) = (per_node("node-a"), per_node("node-b"));
    assert_eq!(peak(&a), 2, "node-a (limit 2) ran {} at once", peak(&a));
    assert_eq!(peak(&b), 1, "node-b (limit 1) ran {} at once", peak(&b));
    // A pull queue: the node with two permits takes more of the work, and the other one works
    // too (a static round-robin would give 6 and 6, a stuck node 0).
    assert!(
        a.len() > b.len() && b.len() >= 2,
        "node-a ran {}, node-b ran {}",
        a.len(),
        b.len()
    );
    // Both nodes stay busy while work remains: no node starts its last job before the other
    // node has started jobs that were queued behind it, i.e. each node's last start comes after
    // the other's first end.
    let first_end = |runs: &[(f64, f64)]| runs.iter().map(|r| r.1).fold(f64::MAX, f64::min);
    let last_start = |runs: &[(f64, f64)]| runs.iter().map(|r| r.0).fold(f64::MIN, f64::max);
    assert!(
        last_start(&a) > first_end(&b) && last_start(&b) > first_end(&a),
        "a node went idle while work remained"
    );

    // Outputs came back through Redis; the nodes' copies are gone; GPUs were bound on node-a.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("collect_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["collected"], 12, "{summary}");
    for i in 0..12 {
        let id = format!("sleep_{i:02}");
        let output: Value =
            serde_json::from_slice(&std::fs::read(out_dir.join(format!("{id}.json"))).unwrap())
                .unwrap();
        assert_eq!(output["task"], id.as_str());
        match output["node"].as_str().unwrap() {
            "node-a" => {
                let gpu = output["cuda_visible_devices"].as_str().unwrap();
                assert!(gpu == "0" || gpu == "1", "{output}");
                assert_eq!(output["hip_visible_devices"], gpu);
            }
            _ => assert!(output["cuda_visible_devices"].is_null(), "{output}"),
        }
        for root in cluster.roots.values() {
            assert!(
                !root.join(format!("out/{id}.json")).exists(),
                "{id}'s output left on a node"
            );
        }
    }
    assert_eq!(summary["job_id"], batch.as_str());
}

#[test]
fn every_failure_mode_dead_letters_with_its_reason_and_never_blocks_the_node() {
    let mut cluster = Cluster::new(
        "scripts-failures",
        &[NodeSpec {
            name: "solo",
            limit: 1,
            gpus: 1,
        }],
        2,
    );
    let root = cluster.root("solo").to_path_buf();
    let outside = cluster.ns.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // If any of these ran, it would succeed: refusing them is the only way to fail.
    std::fs::write(
        outside.join("evil.py"),
        "import sys\nopen(sys.argv[1], 'w').write('{}')\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.join("evil.py"), root.join("link.py")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    let stale = root.join("out/stale.json");
    std::fs::write(&stale, "{\"status\": \"success\"}").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let pids = cluster.ns.path("hang.pids").display().to_string();
    let job = |id: &str, script: &str, args: Vec<&str>, timeout: u64| json!({"job_id": id, "script": script, "args": args, "expected_output": format!("out/{id}.json"), "timeout": timeout});
    let evil = outside.join("evil.py").display().to_string();
    let jobs = json!([
        job("ok_first", "job.py", vec!["sleep", "out/ok_first.json", "0.1", "/dev/null"], 60),
        job("no_output", "job.py", vec!["no-output", "out/no_output.json"], 60),
        {"job_id": "stale", "script": "job.py", "args": ["stale", "out/stale.json"], "expected_output": "out/stale.json", "timeout": 60},
        job("error", "job.py", vec!["error", "out/error.json"], 60),
        job("exit3", "job.py", vec!["fail", "out/exit3.json"], 60),
        job("hang", "job.py", vec!["hang", "out/hang.json", &pids], 2),
        job("dotdot", "../outside/evil.py", vec!["out/dotdot.json"], 60),
        job("absolute", &evil, vec!["out/absolute.json"], 60),
        job("symlink", "link.py", vec!["out/symlink.json"], 60),
        job("ok_last", "job.py", vec!["sleep", "out/ok_last.json", "0.1", "/dev/null"], 60),
    ]);
    let file = cluster.jobs_file("failing_jobs.json", &jobs);
    cluster.start("solo");
    cluster.wait_for_script_consumers(&["solo"]);
    let batch = cluster.scripts_with_dead_letters(&file, 180);
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
    let expected: BTreeMap<String, String> = [
        ("no_output", "missing_output"),
        ("stale", "stale_output"),
        ("error", "status_error"),
        ("exit3", "exit_status"),
        ("hang", "timeout"),
        ("dotdot", "path_escapes_root"),
        ("absolute", "path_escapes_root"),
        ("symlink", "path_escapes_root"),
    ]
    .into_iter()
    .map(|(t, r)| (format!("t:{t}"), r.to_string()))
    .collect();
    assert_eq!(reasons, expected, "{dlq}");
    for letter in dlq["letters"].as_array().unwrap() {
        // Refused paths are dead-lettered at once; the others after the retry.
        let attempt = if letter["reason"] == "path_escapes_root" {
            "1"
        } else {
            "2"
        };
        assert_eq!(letter["attempt"], attempt, "{letter}");
        assert_eq!(
            letter["source_queue"],
            format!("{}.scripts", cluster.ns.name)
        );
    }
    assert!(
        !outside.join("out").exists() && !root.join("out/dotdot.json").exists(),
        "a refused script ran"
    );
    // The stale file is untouched (it was there before) and the hung script's children are gone.
    assert!(stale.exists());
    let pid_lines = std::fs::read_to_string(&pids).unwrap_or_default();
    let hung: Vec<&str> = pid_lines.split_whitespace().collect();
    assert_eq!(hung.len(), 2, "the hanging job ran twice: {pid_lines:?}");
    for pid in hung {
        eventually(
            &format!("child {pid} of the timed-out job to be gone"),
            Duration::from_secs(10),
            || !alive(pid),
        );
    }
    // Both ok jobs, one before and one after all the failures, succeeded on the single slot.
    let collected = cluster.ns.path("ok");
    let out = cluster.producer(&[
        "collect",
        &batch,
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "collect reports the failures");
    assert!(collected.join("ok_first.json").exists() && collected.join("ok_last.json").exists());
    let summary: Value =
        serde_json::from_slice(&std::fs::read(collected.join("collect_summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (summary["collected"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(8)),
        "{summary}"
    );
    let error_task = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == "error")
        .unwrap();
    assert_eq!(error_task["failure"], "status_error");
}

#[test]
fn collect_reproduces_outputs_byte_for_byte_with_and_without_preserved_paths() {
    let mut cluster = Cluster::new(
        "scripts-collect",
        &[NodeSpec {
            name: "collector",
            limit: 2,
            gpus: 0,
        }],
        2,
    );
    let sources = cluster.ns.path("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let mut jobs = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..5u32 {
        // Every byte value, a UTF-8-invalid tail and CRLFs: nothing may be re-encoded on the way.
        let mut bytes: Vec<u8> = (0..=255u8)
            .cycle()
            .skip(i as usize * 37)
            .take(1000 + i as usize * 4099)
            .collect();
        bytes.extend_from_slice(b"\r\n\xff\xfe\x00end");
        let source = sources.join(format!("src{i}.bin"));
        std::fs::write(&source, &bytes).unwrap();
        let id = format!("copy_{i}");
        let output = format!("results/part{}/{id}.bin", i % 2);
        jobs.push(json!({"job_id": id, "script": "job.py", "args": ["copy", output, source.to_str().unwrap()],
                         "expected_output": output, "timeout": 60}));
        expected.insert(id, (output, bytes));
    }
    let file = cluster.jobs_file("copy_jobs.json", &Value::Array(jobs));
    cluster.start("collector");
    cluster.wait_for_script_consumers(&["collector"]);
    let flat = cluster.ns.path("flat");
    let batch = cluster
        .producer_ok(&[
            "scripts",
            "--jobs-file",
            &file,
            "--wait",
            "--timeout",
            "120",
            "--output-dir",
            flat.to_str().unwrap(),
        ])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let tree = cluster.ns.path("tree");
    cluster.producer_ok(&[
        "collect",
        &batch,
        "--output-dir",
        tree.to_str().unwrap(),
        "--preserve-paths",
    ]);
    for (id, (output, bytes)) in &expected {
        assert_eq!(
            &std::fs::read(flat.join(format!("{id}.bin"))).unwrap(),
            bytes,
            "{id} flat"
        );
        assert_eq!(
            &std::fs::read(tree.join(output)).unwrap(),
            bytes,
            "{id} preserved"
        );
        assert!(
            !cluster.root("collector").join(output).exists(),
            "{id}: node copy not removed after upload"
        );
    }
    for dir in [&flat, &tree] {
        let summary: Value =
            serde_json::from_slice(&std::fs::read(dir.join("collect_summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["collected"], 5, "{summary}");
    }
    // Enqueueing the same file with the same options again is the same batch: nothing runs twice.
    let again = cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--output-dir",
        flat.to_str().unwrap(),
    ]);
    assert_eq!(again.trim(), batch);
}

/// `POST /api/queues/%2F/<queue>/get` with requeue, for reading message headers.
fn peek_messages(queue: &str, count: u32) -> Value {
    let body =
        json!({"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"}).to_string();
    let mut stream = TcpStream::connect("127.0.0.1:15672").unwrap();
    write!(
        stream,
        "POST /api/queues/%2F/{}/get HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        encode_segment(queue),
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, json_body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(json_body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn pinned_jobs_wait_on_their_node_queue_with_descriptive_headers() {
    let cluster = Cluster::new(
        "scripts-headers",
        &[NodeSpec {
            name: "busy-rig",
            limit: 1,
            gpus: 12,
        }],
        2,
    );
    let jobs = json!([{"job_id": "pinned_7", "script": "job.py", "args": ["no-output", "out/p.json"],
                       "expected_output": "out/p.json", "timeout": 30, "node": "busy-rig", "gpu_id": 7}]);
    let file = cluster.jobs_file("pinned.json", &jobs);
    // An unknown node or GPU is refused before anything is published.
    let bad = cluster.jobs_file("bad_pin.json", &json!([{"job_id": "x", "script": "job.py", "expected_output": "o.json", "timeout": 30, "node": "busy-rig", "gpu_id": 12}]));
    let out = cluster.producer(&["scripts", "--jobs-file", &bad]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("gpu_id 12 does not exist on node 'busy-rig'"));
    let too_long = cluster.jobs_file(
        "too_long.json",
        &json!([{"job_id": "x", "script": "job.py", "expected_output": "o.json", "timeout": 7200}]),
    );
    let out = cluster.producer(&["scripts", "--jobs-file", &too_long]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("above what the broker allows"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let batch = cluster
        .producer_ok(&["scripts", "--jobs-file", &file])
        .trim()
        .to_string();
    let queue = format!("{}.scripts.busy-rig", cluster.ns.name);
    let messages = peek_messages(&queue, 1);
    let headers = &messages[0]["properties"]["headers"];
    assert_eq!(headers["x-seedq-job"], batch.as_str(), "{messages}");
    assert_eq!(headers["x-seedq-kind"], "scripts");
    assert_eq!(headers["x-seedq-task"], "pinned_7");
    assert_eq!(headers["x-seedq-node"], "busy-rig");
    assert_eq!(headers["x-seedq-attempt"], "1");
    assert_eq!(messages[0]["properties"]["delivery_mode"], 2);
    let body: Value = serde_json::from_str(messages[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(body["gpu_id"], 7);
    // The job waits on its node's queue only (queue statistics refresh every few seconds).
    let messages_in = |queue: String| {
        let (_, info) = mgmt_request(
            "GET",
            &format!("/api/queues/%2F/{}", encode_segment(&queue)),
        )
        .unwrap();
        serde_json::from_str::<Value>(&info).unwrap()["messages"].as_u64()
    };
    eventually("queue statistics", Duration::from_secs(30), || {
        messages_in(queue.clone()) == Some(1)
            && messages_in(format!("{}.scripts", cluster.ns.name)) == Some(0)
    });
}

#[test]
fn the_script_consumer_resubscribes_after_its_queues_are_deleted() {
    let mut cluster = Cluster::new(
        "scripts-resubscribe",
        &[NodeSpec {
            name: "phoenix",
            limit: 1,
            gpus: 0,
        }],
        2,
    );
    cluster.start("phoenix");
    cluster.wait_for_script_consumers(&["phoenix"]);
    let shared = format!("{}.scripts", cluster.ns.name);
    let pinned = format!("{}.scripts.phoenix", cluster.ns.name);
    // Deleting a queue cancels the node's consumer on it: a channel-level event, the node's
    // connection stays up, so only the script consumer itself can recover.
    for queue in [&shared, &pinned] {
        let (code, body) = mgmt_request(
            "DELETE",
            &format!("/api/queues/%2F/{}", encode_segment(queue)),
        )
        .unwrap();
        assert_eq!(code, 204, "deleting {queue}: {body}");
    }
    // Let the node see both cancellations first: RabbitMQ 3.10 does not tell a consumer about a
    // quorum queue deleted and at once re-declared under the same name, leaving it orphaned.
    let node_log = || std::fs::read_to_string(cluster.ns.path("phoenix.log")).unwrap();
    eventually(
        "the node to notice that its queues are gone",
        Duration::from_secs(30),
        || {
            let log = node_log();
            [&shared, &pinned].iter().all(|q| {
                log.contains(&format!(
                    "the broker cancelled the script consumer on {q} (queue deleted?)"
                ))
            })
        },
    );
    // `scripts` re-declares both queues before publishing (the node also re-declares its own);
    // the node must subscribe to them again by itself for either job to run.
    let log = cluster.ns.path("timeline.log").display().to_string();
    let mut pinned_job = sleep_job("pinned_after_delete", 0.1, &log);
    pinned_job["node"] = json!("phoenix");
    let jobs = json!([sleep_job("shared_after_delete", 0.1, &log), pinned_job]);
    let file = cluster.jobs_file("after_delete.json", &jobs);
    cluster.producer_ok(&["scripts", "--jobs-file", &file, "--wait", "--timeout", "90"]);
    assert_eq!(intervals(&std::fs::read_to_string(&log).unwrap()).len(), 2);
    let log = node_log();
    assert!(
        !log.contains("reconnected to RabbitMQ"),
        "the connection was replaced, not the channel:\n{log}"
    );
}

#[test]
fn a_redis_outage_parks_script_jobs_with_their_result_and_never_runs_them_again() {
    // Declared first, so it outlives the cluster's teardown.
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED a_redis_outage_parks_script_jobs...: redis-server is not installed");
        return;
    };
    let mut cluster = Cluster::new(
        "scripts-redisdown",
        &[NodeSpec {
            name: "outage",
            limit: 1,
            gpus: 0,
        }],
        2,
    );
    cluster.redis_url = redis.url();
    cluster.start("outage");
    cluster.wait_for_script_consumers(&["outage"]);
    let timeline = cluster.ns.path("timeline.log");
    let file = cluster.jobs_file(
        "outage.json",
        &json!([sleep_job("through_outage", 3.0, timeline.to_str().unwrap())]),
    );
    let collected = cluster.ns.path("collected");
    // With the options of the waiting call below, so that both name the same batch.
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    eventually("the job to start", Duration::from_secs(60), || {
        std::fs::read_to_string(&timeline).is_ok_and(|t| t.starts_with("start"))
    });
    redis.kill();
    // The run ends during the outage, so its result cannot be stored: the job is parked (no
    // requeue, no attempt used) with the finished result, output included, inside the parked
    // message, so it is stored on return and the script never runs again.
    let node_log = || std::fs::read_to_string(cluster.ns.path("outage.log")).unwrap();
    eventually("the job to be parked", Duration::from_secs(90), || {
        node_log().contains("Redis unavailable; message parked")
    });
    eventually("the run to end", Duration::from_secs(60), || {
        std::fs::read_to_string(&timeline).is_ok_and(|t| t.contains("end "))
    });
    // Parked a few times while Redis stays down: the script does not run again meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    redis.restart();
    // The same file again is the same batch: nothing is republished, it only waits and collects.
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &file,
        "--wait",
        "--timeout",
        "120",
        "--output-dir",
        collected.to_str().unwrap(),
    ]);
    let summary: Value =
        serde_json::from_slice(&std::fs::read(collected.join("collect_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["collected"], 1, "{summary}");
    assert_eq!(
        summary["tasks"][0]["attempt"], 1,
        "waiting for Redis used an attempt: {summary}"
    );
    let output: Value =
        serde_json::from_slice(&std::fs::read(collected.join("through_outage.json")).unwrap())
            .unwrap();
    assert_eq!(output["status"], "success");
    let starts = std::fs::read_to_string(&timeline)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("start"))
        .count();
    assert_eq!(starts, 1, "the script ran again after the outage");
    assert!(
        !cluster
            .root("outage")
            .join("out/through_outage.json")
            .exists(),
        "the node's copy stays after upload"
    );
}

/// Whether two `(start, end)` intervals overlap.
fn overlap(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn concurrent_batches_writing_one_output_name_each_collect_their_own() {
    let mut cluster = Cluster::new(
        "scripts-private",
        &[NodeSpec {
            name: "shared-rig",
            limit: 4,
            gpus: 0,
        }],
        2,
    );
    cluster.start("shared-rig");
    cluster.wait_for_script_consumers(&["shared-rig"]);
    let log = cluster.ns.path("timeline.log").display().to_string();
    // Each run writes its output at once and lingers 2 s, so runs that share the file would
    // overwrite it under each other. Four batches of one task each, all on one node at once:
    // two write `{output_dir}/result.json` (one finds it through its argument, one through
    // SEEDQ_OUTPUT_DIR), two the fixed `out/same.json` of a jobs file from before {output_dir}.
    let task = |id: &str, output_arg: &str, expected: &str| {
        json!([{"job_id": id, "script": "job.py", "args": ["tagged", output_arg, format!("tag-of-{id}"), "2", &log],
                "expected_output": expected, "timeout": 60}])
    };
    let batches = [
        task(
            "private_a",
            "{output_dir}/result.json",
            "{output_dir}/result.json",
        ),
        task(
            "private_b",
            "$SEEDQ_OUTPUT_DIR/result.json",
            "{output_dir}/result.json",
        ),
        task("fixed_a", "out/same.json", "out/same.json"),
        task("fixed_b", "out/same.json", "out/same.json"),
    ];
    let files: Vec<(String, String)> = batches
        .iter()
        .enumerate()
        .map(|(i, jobs)| {
            let id = jobs[0]["job_id"].as_str().unwrap().to_string();
            (id, cluster.jobs_file(&format!("batch_{i}.json"), jobs))
        })
        .collect();
    let collected = |id: &str| cluster.ns.path(&format!("collected-{id}"));
    for (id, file) in &files {
        let dir = collected(id);
        cluster.producer_ok(&[
            "scripts",
            "--jobs-file",
            file,
            "--output-dir",
            dir.to_str().unwrap(),
        ]);
    }
    // The same file and options again are the same batch: it only waits and collects. Every
    // batch is checked before anything is asserted, so a failure names all that went wrong.
    let mut wrong = Vec::new();
    for (id, file) in &files {
        let dir = collected(id);
        let out = cluster.producer(&[
            "scripts",
            "--jobs-file",
            file,
            "--output-dir",
            dir.to_str().unwrap(),
            "--wait",
            "--timeout",
            "120",
        ]);
        if !out.status.success() {
            wrong.push(format!(
                "batch of {id}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let output: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).unwrap())
                .unwrap();
        if output["tag"] != format!("tag-of-{id}") {
            wrong.push(format!("{id} collected another run's output: {output}"));
        }
        let summary: Value =
            serde_json::from_slice(&std::fs::read(dir.join("collect_summary.json")).unwrap())
                .unwrap();
        if summary["tasks"][0]["attempt"] != 1 {
            wrong.push(format!("{id} needed a retry: {summary}"));
        }
    }
    let runs = intervals(&std::fs::read_to_string(&log).unwrap());
    let run = |id: &str| {
        let r = runs.iter().find(|r| r.1 == id).unwrap();
        (r.2, r.3)
    };
    if runs.len() != 4 {
        wrong.push(format!("not every task ran exactly once: {runs:?}"));
    }
    if overlap(run("fixed_a"), run("fixed_b")) {
        wrong.push(format!("two runs wrote out/same.json at once: {runs:?}"));
    }
    if !overlap(run("private_a"), run("private_b")) {
        wrong.push(format!(
            "private outputs need no turn-taking, yet the runs did not overlap: {runs:?}"
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing stays on the node: no fixed output, no private directory. A run's private
    // directory goes after its result is in Redis (which is what `--wait` sees), so it is given
    // a moment to go.
    let root = cluster.root("shared-rig");
    assert!(!root.join("out/same.json").exists());
    let left = || -> Vec<_> {
        std::fs::read_dir(root.join(".seedq-out"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    eventually(
        "the runs' private output directories removed",
        Duration::from_secs(15),
        || left().is_empty(),
    );
}

#[test]
fn a_message_of_an_earlier_life_of_a_batch_is_dead_lettered_without_running() {
    let mut cluster = Cluster::new(
        "scripts-stale",
        &[NodeSpec {
            name: "lifer",
            limit: 1,
            gpus: 0,
        }],
        2,
    );
    cluster.start("lifer");
    cluster.wait_for_script_consumers(&["lifer"]);
    let ns = cluster.ns.name.clone();
    let marker = |life: &str| cluster.ns.path(&format!("{life}.log"));
    let life = |tag: &str| {
        json!([{"job_id": "task", "script": "job.py",
                "args": ["tagged", "out/result.json", tag, "0.1", marker(tag).to_str().unwrap()],
                "expected_output": "out/result.json", "timeout": 60}])
    };
    let runs_of =
        |tag: &str| intervals(&std::fs::read_to_string(marker(tag)).unwrap_or_default()).len();

    // The first life of b2 runs to the end; the node now knows b2 by that life.
    let old_file = cluster.jobs_file("b2_old.json", &life("old-life"));
    cluster.producer_ok(&[
        "scripts",
        "--jobs-file",
        &old_file,
        "--job-id",
        "b2",
        "--wait",
        "--timeout",
        "120",
    ]);
    assert_eq!(runs_of("old-life"), 1);
    // A message of that life as the producer published it (the stored definition, its epoch).
    let first = seedq_e2e::stored_job(&ns, "b2").expect("b2 is stored");
    let old_message = first.task_message("task").unwrap();
    assert_eq!(
        old_message.epoch,
        seedq_e2e::job_epoch(&cluster.redis_url, &ns, "b2")
    );
    assert_eq!(old_message.args[2], "old-life");

    // Keep the node's only permit busy, so that what follows queues up behind it in order.
    let blocker_log = cluster.ns.path("blocker.log");
    let blocker = cluster.jobs_file(
        "blocker.json",
        &json!([sleep_job("blocker", 6.0, blocker_log.to_str().unwrap())]),
    );
    cluster.producer_ok(&["scripts", "--jobs-file", &blocker]);
    eventually("the blocker to start", Duration::from_secs(60), || {
        std::fs::read_to_string(&blocker_log).is_ok_and(|t| t.starts_with("start"))
    });
    // b2 expires; the old life's message comes back (a replay, a delayed retry); b2 is created
    // again with other args, so the old message is first in line when the node is free.
    seedq_e2e::delete_job_keys(&ns, "b2");
    let scripts_queue = seedq_protocol::Topology::new(&ns).scripts_queue();
    seedq_e2e::publish_raw(&scripts_queue, &[old_message.to_json()]).unwrap();
    let new_file = cluster.jobs_file("b2_new.json", &life("new-life"));
    cluster.producer_ok(&["scripts", "--jobs-file", &new_file, "--job-id", "b2"]);
    assert!(
        !std::fs::read_to_string(&blocker_log)
            .unwrap()
            .contains("end"),
        "the blocker ended before b2 was created again: the machine is too slow for this test"
    );
    assert_ne!(
        seedq_e2e::job_epoch(&cluster.redis_url, &ns, "b2"),
        old_message.epoch
    );

    // The new life runs once, with its own args; nothing of the old message touched it (`wait`
    // would report a dead letter recorded in the batch).
    let collected = cluster.ns.path("collected");
    cluster.producer_ok(&["wait", "b2", "--timeout", "120"]);
    cluster.producer_ok(&["collect", "b2", "--output-dir", collected.to_str().unwrap()]);
    let output: Value =
        serde_json::from_slice(&std::fs::read(collected.join("task.json")).unwrap()).unwrap();
    assert_eq!(output["tag"], "new-life");
    let letters = || -> Value { cluster.dlq_of("b2") };
    eventually(
        "the old message to be dead-lettered",
        Duration::from_secs(60),
        || {
            letters()["letters"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        },
    );
    let dlq = letters();
    let letters = dlq["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dlq}");
    assert_eq!(letters[0]["reason"], "stale_message", "{dlq}");
    assert_eq!(letters[0]["member"], "t:task", "{dlq}");
    assert_eq!(letters[0]["source_queue"], scripts_queue.as_str(), "{dlq}");
    assert_eq!(runs_of("old-life"), 1, "the old life's script ran again");
    assert_eq!(
        runs_of("new-life"),
        1,
        "the new life's task ran {} times",
        runs_of("new-life")
    );
}

/// One batch of the scripts lane in [`race_batches`]: its file's name, its task-id prefix,
/// its size and the extra `scripts` flags (`--priority ...`).
struct Contender<'a>(&'a str, &'a str, usize, &'a [&'a str]);

/// On a one-node cluster whose node runs one script at a time (and keeps one task queued:
/// `min_queued = 1`), enqueues `first`, and `second` once `first` is running; waits for both.
/// Returns when `second` was enqueued (UNIX seconds) and the task ids in the order they started.
fn race_batches(
    tag: &str,
    task_secs: f64,
    first: Contender,
    second: Contender,
) -> (f64, Vec<(String, f64)>) {
    let mut cluster = Cluster::new(
        tag,
        &[NodeSpec {
            name: "node-a",
            limit: 1,
            gpus: 0,
        }],
        3,
    );
    let mut toml = std::fs::read_to_string(&cluster.config).unwrap();
    toml.push_str("[scheduler]\nmin_queued = 1\nqueued_per_slot = 0.0\n");
    std::fs::write(&cluster.config, toml).unwrap();
    cluster.start("node-a");
    cluster.wait_for_script_consumers(&["node-a"]);
    let log = cluster.ns.path("timeline.log").display().to_string();
    let file = |c: &Contender| {
        let jobs: Vec<Value> = (0..c.2)
            .map(|i| sleep_job(&format!("{}{i}", c.1), task_secs, &log))
            .collect();
        cluster.jobs_file(c.0, &json!({ "jobs": jobs }))
    };
    let (first_file, second_file) = (file(&first), file(&second));
    let mut args = vec!["scripts", "--jobs-file", &first_file];
    args.extend_from_slice(first.3);
    let first_id = cluster.producer_ok(&args);
    let first_id = first_id.lines().next().unwrap().trim().to_string();
    eventually("the first batch running", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("start"))
    });
    let enqueued = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut args = vec!["scripts", "--jobs-file", &second_file];
    args.extend_from_slice(second.3);
    args.extend_from_slice(&["--wait", "--timeout", "120"]);
    cluster.producer_ok(&args);
    cluster.producer_ok(&["wait", &first_id, "--timeout", "120"]);
    let mut runs = intervals(&std::fs::read_to_string(&log).unwrap());
    runs.sort_by(|a, b| a.2.partial_cmp(&b.2).unwrap());
    let runs: Vec<(String, f64)> = runs.into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        runs.len(),
        first.2 + second.2,
        "each task ran once: {runs:?}"
    );
    (enqueued, runs)
}

/// `scripts --priority`: with a low batch holding the node's only permit, a high batch's tasks
/// start as soon as the task queued ahead of them is through, run back to back, and the low
/// batch resumes only after them.
#[test]
fn a_high_priority_batch_overtakes_a_low_one_at_the_next_free_permit() {
    let task_secs = 1.0;
    let (enqueued, runs) = race_batches(
        "scripts-priority",
        task_secs,
        Contender("low.json", "low", 6, &["--priority", "low"]),
        Contender("high.json", "high", 2, &["--priority", "high"]),
    );
    let order: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    let first_high = order.iter().position(|t| t.starts_with("high")).unwrap();
    // Ahead of the high batch: the low task running at its enqueue and at most the one queued.
    assert!(first_high <= 2, "{order:?}");
    assert!(
        order[first_high + 1].starts_with("high"),
        "back to back: {order:?}"
    );
    assert!(
        order[first_high + 2..].iter().all(|t| t.starts_with("low")),
        "the low batch resumed only after the high one: {order:?}"
    );
    println!(
        "FIGURE scripts priority: first high task started {:.2} task durations after its enqueue, behind {} low task(s); order {order:?}",
        (runs[first_high].1 - enqueued) / task_secs,
        first_high
    );
}

/// A batch keeps at most `[jobs] max_batch_output_bytes` of results in Redis: the task whose
/// output would pass it is dead-lettered as `batch_output_limit` at once (no retry), the others
/// are done and collected, and the node goes on.
#[test]
fn a_batch_past_its_output_cap_dead_letters_the_task_that_would_pass_it() {
    let mut cluster = Cluster::new(
        "scripts-outcap",
        &[NodeSpec {
            name: "capped",
            limit: 1,
            gpus: 0,
        }],
        3,
    );
    // Each output is 6,000 bytes (8,000 in base64 in its result): two fit in 20,000, not three.
    let toml = std::fs::read_to_string(&cluster.config).unwrap().replace(
        "heartbeat_ttl_secs = 30\n",
        "heartbeat_ttl_secs = 30\nmax_batch_output_bytes = 20000\n",
    );
    std::fs::write(&cluster.config, toml).unwrap();
    let source = cluster.ns.path("big.bin");
    std::fs::write(&source, vec![b'x'; 6000]).unwrap();
    let jobs: Vec<Value> = (0..3)
        .map(|i| {
            let output = format!("out/big_{i}.bin");
            json!({"job_id": format!("big_{i}"), "script": "job.py",
                   "args": ["copy", output, source.to_str().unwrap()],
                   "expected_output": output, "timeout": 60})
        })
        .collect();
    let file = cluster.jobs_file("big.json", &json!(jobs));
    cluster.start("capped");
    cluster.wait_for_script_consumers(&["capped"]);
    let batch = cluster.scripts_with_dead_letters(&file, 120);
    let dlq = cluster.dlq_of(&batch);
    let letters = dlq["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dlq}");
    assert_eq!(letters[0]["reason"], "batch_output_limit", "{dlq}");
    assert_eq!(letters[0]["attempt"], "1", "refused, not retried: {dlq}");
    assert!(
        letters[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_batch_output_bytes")),
        "{dlq}"
    );
    let status: Value =
        serde_json::from_str(&cluster.producer_ok(&["--json", "status", &batch])).unwrap();
    assert_eq!(status["chunks_done"], 2, "{status}");
}

/// Fair share between script batches of one priority: a small batch enqueued while a big one
/// holds the node's only permit takes turns with it, task by task, instead of waiting behind
/// the big one's remaining tasks.
#[test]
fn two_batches_of_one_priority_take_turns() {
    let (_, runs) = race_batches(
        "scripts-fair",
        0.5,
        Contender("big.json", "big", 10, &[]),
        Contender("small.json", "small", 4, &[]),
    );
    let order: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    // From the small batch's first task to its last, the two alternate: besides the big tasks
    // running or queued at its enqueue (at most 2), each small task is followed by at most one
    // big one.
    let first = order.iter().position(|t| t.starts_with("small")).unwrap();
    let last = order.iter().rposition(|t| t.starts_with("small")).unwrap();
    assert!(first <= 2, "{order:?}");
    let big_between = order[first..=last]
        .iter()
        .filter(|t| t.starts_with("big"))
        .count();
    assert!(
        big_between <= 3,
        "the small batch waited behind the big one: {order:?}"
    );
    println!(
        "FIGURE scripts fair share: between the small batch's first and last task, 4 small and {big_between} big tasks ran; order {order:?}"
    );
}
