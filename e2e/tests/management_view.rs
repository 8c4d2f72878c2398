//! What an operator sees in the RabbitMQ management UI (read here through its HTTP API on port
//! 15672): the consumer's named connection, one consumer per seed slot tagged `<node>/<slot>`,
//! chunk messages whose headers say what they are, and dead letters with their reason.

use std::time::Duration;

use seedq_e2e::{encode_segment, eventually, mgmt_peek, mgmt_request, node_connections, Namespace};
use seedq_protocol::{headers as h, Topology};
use serde_json::{json, Value};

fn seed_queue_consumers(queue: &str) -> Vec<(String, String)> {
    let Ok((200, body)) =
        mgmt_request("GET", &format!("/api/queues/%2F/{}", encode_segment(queue)))
    else {
        return Vec::new();
    };
    let info: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut tags: Vec<(String, String)> = info["consumer_details"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let tag = c["consumer_tag"].as_str().unwrap_or_default().to_string();
                    let conn = c["channel_details"]["connection_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    (tag, conn)
                })
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["properties"]["headers"][name].as_str()
}

#[test]
fn the_management_ui_shows_slots_headers_and_dead_letter_reasons() {
    let mut ns = Namespace::new("mgmtview");
    // With no consumer alive the scheduler publishes `min_queued` chunks: room for all three.
    ns.use_config(|text| format!("{text}\n[scheduler]\nmin_queued = 3\n"));
    let node = format!("{}-node", ns.name);
    let topology = Topology::new(&ns.name);
    let seeds = topology.seeds_queue();

    // Slots: one consumer per slot, tagged <node>/cpuN, on the connection named
    // seedq-consumer@<node> (the API lists channels by the broker's own connection name).
    let consumer = ns.start_consumer(&node, 2, 1);
    let mut slots = Vec::new();
    eventually(
        "both slot consumers in the management API",
        Duration::from_secs(60),
        || {
            // Channel details (the connection name) fill in a stats interval after the consumers.
            slots = seed_queue_consumers(&seeds);
            slots.len() == 2 && slots.iter().all(|(_, conn)| !conn.is_empty())
        },
    );
    let tags: Vec<&str> = slots.iter().map(|(tag, _)| tag.as_str()).collect();
    assert_eq!(
        tags,
        vec![format!("{node}/cpu0"), format!("{node}/cpu1")],
        "consumer tags"
    );
    // The API lists a new connection a moment after its channels' consumers.
    let mut named = Vec::new();
    eventually(
        "the node's named connection in the management API",
        Duration::from_secs(60),
        || {
            named = node_connections(&node).unwrap_or_default();
            !named.is_empty()
        },
    );
    assert_eq!(named.len(), 1, "one named connection per node: {named:?}");
    assert!(
        slots.iter().all(|(_, conn)| *conn == named[0]),
        "both slots on the node's connection {named:?}: {slots:?}"
    );

    // Headers: with the node stopped, a job's chunks wait in the queue for inspection.
    ns.consumer(consumer)
        .terminate(Duration::from_secs(30))
        .expect("the consumer drains and exits");
    let draws = seedq_e2e::write_json(&ns, "d.json", &json!([3, 1, 4]));
    let id = ns.sieve(&[
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
    ]);
    let mut queued = Vec::new();
    eventually(
        "the chunks in the management API",
        Duration::from_secs(30),
        || {
            queued = mgmt_peek(&seeds, 10).unwrap_or_default();
            queued.len() == 3
        },
    );
    let mut described: Vec<(String, String)> = queued
        .iter()
        .map(|m| {
            assert_eq!(header(m, h::JOB), Some(id.as_str()), "{m}");
            assert_eq!(header(m, h::KIND), Some("sieve"), "{m}");
            assert_eq!(header(m, h::FAMILY), Some("xorshift32"), "{m}");
            (
                header(m, h::CHUNK).unwrap_or_default().to_string(),
                header(m, h::SEEDS).unwrap_or_default().to_string(),
            )
        })
        .collect();
    described.sort();
    assert_eq!(
        described,
        vec![
            ("0".into(), "[1,1001)".into()),
            ("1".into(), "[1001,2001)".into()),
            ("2".into(), "[2001,3001)".into())
        ],
        "chunk and seeds headers"
    );

    // Dead letters: a malformed message ends in the DLQ with its reason in a header.
    seedq_e2e::publish_raw(&seeds, &[b"{ not json".to_vec()]).unwrap();
    ns.start_consumer(&node, 2, 1);
    ns.wait(&id, 300);
    let mut dead = Vec::new();
    eventually(
        "the dead letter in the management API",
        Duration::from_secs(60),
        || {
            dead = mgmt_peek(&topology.dlq(), 10).unwrap_or_default();
            !dead.is_empty()
        },
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"].as_str(), Some("{ not json"));
    assert_eq!(
        header(&dead[0], h::ERROR),
        Some("malformed_json"),
        "{}",
        dead[0]
    );
    assert_eq!(
        header(&dead[0], h::SOURCE_QUEUE),
        Some(seeds.as_str()),
        "{}",
        dead[0]
    );
    assert!(
        header(&dead[0], h::ERROR_DETAIL).is_some_and(|d| !d.is_empty()),
        "{}",
        dead[0]
    );
}
