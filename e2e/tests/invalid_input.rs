//! Bad input never gets through and never takes a node down.
//!
//! * The producer refuses malformed JSON draws, an unknown family, an empty window, a range
//!   outside the seed space and a threshold outside (0, 1] with a clear message and a non-zero
//!   exit, BEFORE publishing anything: no job in Redis, no message on the queue.
//! * The same payloads published straight to the seed queue (bypassing the producer) land in the
//!   dead-letter queue with the reason in a header, and the consumer stays up and keeps working.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use seedq_e2e::{eventually, queue_info, Namespace};
use seedq_protocol::Topology;
use serde_json::json;

fn refusal(ns: &Namespace, args: &[&str], expected: &str) {
    let out = ns.producer(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} must be refused, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.to_lowercase().contains(&expected.to_lowercase()),
        "{args:?}: stderr should mention '{expected}':\n{stderr}"
    );
}

#[test]
fn producer_refuses_before_publishing() {
    let ns = Namespace::new("refuse");
    let good = seedq_e2e::write_json(&ns, "good.json", &json!([1, 2, 3, 4]));
    let malformed = ns.path("malformed.json");
    std::fs::write(&malformed, b"[1, 2, {\"draw\": ").unwrap();
    let malformed = malformed.to_str().unwrap();
    let base = |draws: &str| -> Vec<String> {
        [
            "sieve",
            "--prng",
            "mt19937",
            "--draws",
            draws,
            "--threshold",
            "0.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |mut args: Vec<String>, extra: &[&str], expected: &str| {
        args.extend(extra.iter().map(|s| s.to_string()));
        refusal(
            &ns,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            expected,
        );
    };
    run(base(malformed), &[], "not valid JSON");
    let mut unknown = base(&good);
    unknown[2] = "mersenne".into();
    run(unknown, &[], "unknown PRNG family 'mersenne'");
    run(base(&good), &["--window", "0"], "window is empty");
    run(base(&good), &["--draw-start", "4"], "window is empty");
    run(
        base(&good),
        &["--draw-start", "2", "--window", "5"],
        "lower --draw-start or --window",
    );
    run(
        base(&good),
        &["--seed-start", "4294967000", "--seed-end", "4294968000"],
        "outside the mt19937 seed space",
    );
    let mut zero = base(&good);
    zero[6] = "0".into();
    run(zero, &[], "threshold must be in (0, 1]");
    let mut above = base(&good);
    above[6] = "1.01".into();
    run(above, &[], "threshold must be in (0, 1]");
    run(base(&good), &["--skip-min", "9", "--skip-max", "2"], "skip");
    run(base(&good), &["--chunk-size", "0"], "--chunk-size");

    // Nothing reached Redis or the broker.
    let status = ns.producer_ok(&["status", "--json"]);
    let jobs: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        jobs.as_array().map(|a| a.len()),
        Some(0),
        "no job may exist after refusals: {jobs}"
    );
    let topology = Topology::new(&ns.name);
    if let Some(q) = queue_info(&topology.seeds_queue()).unwrap() {
        assert_eq!(
            q["messages"].as_u64().unwrap_or(0),
            0,
            "nothing may be published: {q}"
        );
    }
}

#[test]
fn a_seed_that_would_outlast_the_consumer_timeout_is_refused_before_anything_is_published() {
    let ns = Namespace::new("refuse-slow");
    // 4096 draws over a skip span of 4e9: about 1.6e13 draw comparisons a seed, over an hour on
    // config/local.toml's CPU profile, against its 1800 s consumer_timeout.
    let window: Vec<u64> = (0..4096).collect();
    let draws = seedq_e2e::write_json(&ns, "window.json", &json!(window));
    let out = ns.producer(&[
        "sieve",
        "--prng",
        "mt19937",
        "--draws",
        &draws,
        "--threshold",
        "0.5",
        "--skip-min",
        "0",
        "--skip-max",
        "4000000000",
        "--seed-end",
        "1000",
        "--count-only",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "must be refused, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in [
        "one seed takes about",
        "consumer_timeout of 1800 s",
        "--window",
        "rabbitmq.conf",
        "consumer_timeout_ms",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr should mention '{needle}':\n{stderr}"
        );
    }

    let client = redis::Client::open(seedq_e2e::redis_url()).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(seedq_protocol::keys::namespace_pattern(&ns.name))
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "the refusal wrote to Redis: {keys:?}");
    if let Some(q) = queue_info(&Topology::new(&ns.name).seeds_queue()).unwrap() {
        assert_eq!(
            q["messages"].as_u64().unwrap_or(0),
            0,
            "nothing may be published: {q}"
        );
    }
}

/// Raw bodies that a broken or hostile publisher could send, what each exercises, and the
/// reason its dead letter must carry.
fn poison_payloads() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let spec = |family: serde_json::Value, draws: serde_json::Value, threshold: &str| {
        json!({"sieve": {
            "family": family, "draws": draws, "modulus": 1000, "offset": 0,
            "skip_min": 0, "skip_max": 3, "threshold": threshold
        }})
    };
    let chunk = |job: &str, seeds: serde_json::Value, spec: serde_json::Value| {
        serde_json::to_vec(&json!({"v": 1, "job_id": job, "kind": "sieve", "chunk": 0, "seeds": seeds, "attempt": 1, "spec": spec})).unwrap()
    };
    let mt = json!({"family": "mt19937"});
    vec![
        (
            "malformed json",
            b"{\"v\": 1, \"job_id\": \"x\", \"kind\": \"sieve\", \"chunk\": ".to_vec(),
            "malformed_json",
        ),
        (
            "not even json",
            b"\x00\x01 hello".to_vec(),
            "malformed_json",
        ),
        (
            "unknown family",
            chunk(
                "poison-family",
                json!({"range": {"start": 0, "end": 10}}),
                spec(json!({"family": "nope"}), json!([1, 2]), "0.5"),
            ),
            "unknown_family",
        ),
        (
            "empty window",
            chunk(
                "poison-window",
                json!({"range": {"start": 0, "end": 10}}),
                spec(mt.clone(), json!([]), "0.5"),
            ),
            "empty_window",
        ),
        (
            "range outside the seed space",
            chunk(
                "poison-range",
                json!({"range": {"start": 4294967290u64, "end": 4294967400u64}}),
                spec(mt.clone(), json!([1, 2]), "0.5"),
            ),
            "seeds_out_of_range",
        ),
        (
            "threshold above 1",
            chunk(
                "poison-thr",
                json!({"range": {"start": 0, "end": 10}}),
                spec(mt.clone(), json!([1, 2]), "1.5"),
            ),
            "invalid_threshold",
        ),
        (
            "threshold 0",
            chunk(
                "poison-thr0",
                json!({"range": {"start": 0, "end": 10}}),
                spec(mt, json!([1, 2]), "0"),
            ),
            "invalid_threshold",
        ),
        (
            "chunk of a job that does not exist",
            chunk(
                "no-such-job",
                json!({"range": {"start": 0, "end": 10}}),
                json!(null),
            ),
            "unknown_job",
        ),
    ]
}

#[test]
fn poison_messages_are_dead_lettered_and_the_consumer_survives() {
    let mut ns = Namespace::new("poison");
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer(&node, 1, 1);
    ns.wait_for_consumers(1, Duration::from_secs(60));
    let topology = Topology::new(&ns.name);
    let payloads = poison_payloads();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dead: Vec<(Vec<u8>, Option<String>)> =
        rt.block_on(async {
            let conn = Connection::connect(&seedq_e2e::amqp_url(), ConnectionProperties::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(Default::default()).await.unwrap();
            for (_, body, _) in &payloads {
                ch.basic_publish(
                    "".into(),
                    topology.seeds_queue().as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
            // Collect the dead letters (each once).
            let mut dead = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while dead.len() < payloads.len() && std::time::Instant::now() < deadline {
                match ch
                    .basic_get(topology.dlq().as_str().into(), BasicGetOptions::default())
                    .await
                    .unwrap()
                {
                    Some(msg) => {
                        let reason = msg.delivery.properties.headers().as_ref().and_then(
                            |h: &FieldTable| {
                                h.inner()
                                    .get(seedq_protocol::headers::ERROR)
                                    .map(|v| match v {
                                        AMQPValue::LongString(s) => s.to_string(),
                                        AMQPValue::ShortString(s) => s.to_string(),
                                        other => format!("{other:?}"),
                                    })
                            },
                        );
                        dead.push((msg.delivery.data.clone(), reason));
                        msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            conn.close(0, "done".into()).await.ok();
            dead
        });

    for (what, body, expected) in &payloads {
        let found = dead.iter().find(|(b, _)| b == body);
        let (_, reason) = found.unwrap_or_else(|| {
            panic!(
                "'{what}' did not reach the dead-letter queue ({} dead letters)",
                dead.len()
            )
        });
        assert_eq!(
            reason.as_deref(),
            Some(*expected),
            "'{what}' was dead-lettered with the wrong reason"
        );
    }
    assert!(
        ns.consumer(consumer).is_running(),
        "the consumer must survive poison messages"
    );

    // ...and it still does real work afterwards.
    let draws = seedq_e2e::write_json(&ns, "d.json", &json!([1, 2, 3]));
    let job = ns.sieve(&[
        "--prng",
        "xorshift32",
        "--draws",
        &draws,
        "--threshold",
        "1",
        "--seed-start",
        "1",
        "--seed-end",
        "5001",
        "--chunk-size",
        "1000",
    ]);
    ns.wait(&job, 300);
    let status = ns.status(&job);
    assert_eq!(status["seeds_done"].as_u64(), Some(5000), "{status}");
    eventually("the seed queue to drain", Duration::from_secs(30), || {
        queue_info(&topology.seeds_queue())
            .ok()
            .flatten()
            .map(|q| q["messages"].as_u64() == Some(0))
            .unwrap_or(false)
    });
}
