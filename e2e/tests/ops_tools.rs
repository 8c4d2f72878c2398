//! The operator toolkit end to end: `dlq list|replay` after a fix, `cancel`, `resume` after a
//! lost queue, `nodes`, and `teardown` next to namespaces nested under the same name, against
//! the real RabbitMQ, Redis and binaries.

mod scripts_support;

use std::time::Duration;

use serde_json::{json, Value};

use scripts_support::{intervals, sleep_job, Cluster, NodeSpec};
use seedq_e2e::{
    encode_segment, eventually, mgmt_request, mgmt_request_with_body, queue_info, write_json,
    Namespace,
};
use seedq_protocol::Topology;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn a_dead_letter_replayed_after_the_fix_completes_the_batch() {
    let mut cluster = Cluster::new(
        "ops-replay",
        &[NodeSpec {
            name: "ops-node",
            limit: 1,
            gpus: 0,
        }],
        1,
    );
    let input = cluster.ns.path("input.bin");
    let jobs = json!([{"job_id": "needs_input", "script": "job.py", "args": ["copy", "out/r.bin", input.to_str().unwrap()],
                       "expected_output": "out/r.bin", "timeout": 60}]);
    let file = cluster.jobs_file("replay.json", &jobs);
    cluster.start("ops-node");
    cluster.wait_for_script_consumers(&["ops-node"]);
    let batch = cluster.scripts_with_dead_letters(&file, 120);

    let listed = cluster.dlq_of(&batch);
    assert_eq!(listed["matched"], 1, "{listed}");
    assert_eq!(listed["letters"][0]["reason"], "exit_status");
    assert!(
        listed["letters"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("FileNotFoundError"),
        "{listed}"
    );
    // Listing does not consume.
    assert_eq!(cluster.dlq_of(&batch)["matched"], 1);

    // The fix, then the replay.
    let bytes: Vec<u8> = (0..=255u8).rev().cycle().take(5000).collect();
    std::fs::write(&input, &bytes).unwrap();
    let before = json_of(&cluster.producer_ok(&["--json", "status", &batch]));
    assert_eq!(before["state"], "finished_with_failures", "{before}");
    // Replay with the node stopped, so the replayed task cannot settle before `status` looks:
    // the batch must read as running again, with no dead letter left, until the task is done.
    for child in &mut cluster.consumers {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    cluster.consumers.clear();
    let replayed = json_of(&cluster.producer_ok(&["--json", "dlq", "replay", "--job", &batch]));
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    let reopened = json_of(&cluster.producer_ok(&["--json", "status", &batch]));
    assert_eq!(
        (
            reopened["state"].as_str(),
            reopened["finished"].as_bool(),
            reopened["dead_lettered"].as_u64()
        ),
        (Some("running"), Some(false), Some(0)),
        "{reopened}"
    );
    cluster.start("ops-node");
    let collected = cluster.ns.path("collected");
    eventually(
        "the replayed task to succeed",
        Duration::from_secs(60),
        || {
            cluster
                .producer(&[
                    "collect",
                    &batch,
                    "--output-dir",
                    collected.to_str().unwrap(),
                ])
                .status
                .success()
        },
    );
    assert_eq!(
        std::fs::read(collected.join("needs_input.bin")).unwrap(),
        bytes
    );
    let after = json_of(&cluster.producer_ok(&["--json", "status", &batch]));
    assert_eq!(after["state"], "finished", "{after}");
    assert_eq!(cluster.dlq_of(&batch)["matched"], 0);
}

#[test]
fn cancel_stops_queued_tasks_and_lets_the_running_one_finish() {
    let mut cluster = Cluster::new(
        "ops-cancel",
        &[NodeSpec {
            name: "cancel-node",
            limit: 1,
            gpus: 0,
        }],
        2,
    );
    let log = cluster.ns.path("timeline.log").display().to_string();
    let jobs: Vec<Value> = (0..4)
        .map(|i| sleep_job(&format!("slow_{i}"), 2.0, &log))
        .collect();
    let file = cluster.jobs_file("slow.json", &Value::Array(jobs));
    cluster.start("cancel-node");
    cluster.wait_for_script_consumers(&["cancel-node"]);
    let batch = cluster
        .producer_ok(&["scripts", "--jobs-file", &file])
        .trim()
        .to_string();
    eventually("the first task to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty())
    });
    cluster.producer_ok(&["cancel", &batch]);
    eventually(
        "the cancelled batch to settle",
        Duration::from_secs(60),
        || json_of(&cluster.producer_ok(&["--json", "status", &batch]))["finished"] == true,
    );
    let status = json_of(&cluster.producer_ok(&["--json", "status", &batch]));
    let runs = intervals(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(runs.len(), 1, "only the task already running ran: {runs:?}");
    assert_eq!(status["chunks_done"], 1, "{status}");
    // The scheduler had published what the node's one permit leaves room for (the running task
    // and the queued ones); those were skipped as cancelled, the rest never went out.
    let skipped = status["failures"]["cancelled"].as_u64().unwrap();
    let never_published = 4 - status["chunks_published"].as_u64().unwrap();
    assert!(skipped >= 1, "{status}");
    assert_eq!(skipped + never_published, 3, "{status}");
    assert_eq!(status["state"], "cancelled", "{status}");
}

#[test]
fn resume_republishes_only_what_is_neither_done_nor_queued_and_nodes_shows_the_node() {
    let mut cluster = Cluster::new(
        "ops-resume",
        &[NodeSpec {
            name: "resume-node",
            limit: 1,
            gpus: 0,
        }],
        2,
    );
    let log = cluster.ns.path("timeline.log").display().to_string();
    let jobs: Vec<Value> = (0..3)
        .map(|i| sleep_job(&format!("r_{i}"), 0.2, &log))
        .collect();
    let file = cluster.jobs_file("resume.json", &Value::Array(jobs));
    // No consumer yet: the scheduler publishes `min_queued` (2) tasks, which wait in the queue,
    // and keeps the third; resume has nothing to do (the third is the scheduler's).
    let batch = cluster
        .producer_ok(&["scripts", "--jobs-file", &file])
        .trim()
        .to_string();
    let nothing = json_of(&cluster.producer_ok(&["--json", "resume", &batch]));
    assert_eq!(
        (
            nothing["republished"].as_u64(),
            nothing["outstanding"].as_u64(),
            nothing["unpublished"].as_u64()
        ),
        (Some(0), Some(2), Some(1)),
        "{nothing}"
    );
    // The queue is lost (purged by hand): --outstanding republishes what is not done.
    let queue = format!("{}.scripts", cluster.ns.name);
    let (code, body) = mgmt_request(
        "DELETE",
        &format!("/api/queues/%2F/{}/contents", encode_segment(&queue)),
    )
    .unwrap();
    assert!((200..300).contains(&code), "{code} {body}");
    let again = json_of(&cluster.producer_ok(&["--json", "resume", &batch, "--outstanding"]));
    assert_eq!(again["republished"], 2, "{again}");
    cluster.start("resume-node");
    eventually(
        "the resumed batch to finish",
        Duration::from_secs(60),
        || json_of(&cluster.producer_ok(&["--json", "status", &batch]))["finished"] == true,
    );
    let runs = intervals(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(runs.len(), 3, "each task ran once: {runs:?}");
    // A finished batch has nothing left to resume.
    let done = json_of(&cluster.producer_ok(&["--json", "resume", &batch, "--outstanding"]));
    assert_eq!(done["republished"], 0, "{done}");

    let nodes = json_of(&cluster.producer_ok(&["--json", "nodes"]));
    let node = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "resume-node")
        .expect("live node");
    assert_eq!(node["script_limit"], 1, "{node}");
    assert_eq!(node["backend"], "cpu");
    assert!(node["heartbeat_age_secs"].as_f64().unwrap() < 60.0);
}

/// Declares a durable quorum queue by name (what a consumer does for its pinned script queue).
fn declare_queue(name: &str) {
    let (code, body) = mgmt_request_with_body(
        "PUT",
        &format!("/api/queues/%2F/{}", encode_segment(name)),
        r#"{"durable": true, "arguments": {"x-queue-type": "quorum"}}"#,
    )
    .unwrap();
    assert!((200..300).contains(&code), "declare {name}: {code} {body}");
}

/// Keys of a namespace in Redis.
fn redis_keys(namespace: &str) -> Vec<String> {
    let client = redis::Client::open(seedq_e2e::redis_url()).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    redis::cmd("KEYS")
        .arg(seedq_protocol::keys::namespace_pattern(namespace))
        .query(&mut conn)
        .unwrap()
}

#[test]
fn teardown_leaves_the_namespaces_nested_under_its_name_alone() {
    let parent = Namespace::new("teardown");
    // `<parent>.b` only shares the prefix; `<parent>.scripts` has queue names that are also
    // names of the parent's pinned script queues (`<parent>.scripts.seeds`: node `seeds`).
    let nested = parent.nested("b");
    let lookalike = parent.nested("scripts");
    let draws = write_json(&parent, "draws.json", &json!([1, 2, 3, 4]));
    let job = |ns: &Namespace| {
        ns.sieve(&[
            "--prng",
            "mt19937",
            "--draws",
            &draws,
            "--threshold",
            "0.5",
            "--seed-end",
            "1000",
        ])
    };
    let parent_job = job(&parent);
    let others = [(&nested, job(&nested)), (&lookalike, job(&lookalike))];
    // Pinned script queues of nodes no longer in any node index: the parent's must go, the
    // nested namespace's must stay.
    let parent_leftover = Topology::new(&parent.name).node_scripts_queue("gone-node");
    let nested_pinned = Topology::new(&nested.name).node_scripts_queue("node-1");
    declare_queue(&parent_leftover);
    declare_queue(&nested_pinned);
    assert!(parent.status(&parent_job)["chunks_total"].as_u64() > Some(0));

    parent.producer_ok(&["teardown", "--yes"]);

    let topology = Topology::new(&parent.name);
    for q in topology.fixed_queues().iter().chain([&parent_leftover]) {
        assert!(
            queue_info(q).unwrap().is_none(),
            "{q} survived its teardown"
        );
    }
    assert_eq!(redis_keys(&parent.name), Vec::<String>::new());
    assert!(queue_info(&nested_pinned).unwrap().is_some());
    for (ns, job_id) in others {
        let t = Topology::new(&ns.name);
        for q in [t.seeds_queue(), t.scripts_queue(), t.retry_queue(), t.dlq()] {
            assert!(
                queue_info(&q).unwrap().is_some(),
                "{q} of namespace {} was deleted by the teardown of {}",
                ns.name,
                parent.name
            );
        }
        let status = ns.status(&job_id);
        let chunks = status["chunks_total"].as_u64().unwrap();
        eventually(
            "the nested namespace's chunks to be counted in its queue",
            Duration::from_secs(30),
            || {
                queue_info(&t.seeds_queue())
                    .unwrap()
                    .and_then(|q| q["messages"].as_u64())
                    == Some(chunks)
            },
        );
        assert!(
            !redis_keys(&ns.name).is_empty(),
            "the keys of {} were deleted",
            ns.name
        );
    }
}
