//! Broker behaviour against the real RabbitMQ (127.0.0.1:5672 or SEEDQ_AMQP_URL): confirmed
//! mandatory publishes, the retry delay queue, dead letters with reasons. Each test uses its own
//! namespace and deletes its queues.

use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use seedq_broker::{headers_of, Broker, BrokerError, Headers};
use seedq_protocol::topology::headers as h;
use seedq_protocol::BrokerSettings;

fn amqp_url() -> String {
    std::env::var("SEEDQ_AMQP_URL").unwrap_or_else(|_| seedq_protocol::DEFAULT_AMQP_URL.to_string())
}

async fn broker(tag: &str) -> Broker {
    let ns = format!(
        "t-broker-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let b = Broker::connect(&amqp_url(), &format!("seedq-test@{tag}"), &ns)
        .await
        .expect("rabbitmq reachable");
    b.declare_topology(&BrokerSettings::default())
        .await
        .unwrap();
    b
}

/// Polls `queue` with basic.get until a message arrives (or a generous deadline passes).
async fn get_one(b: &Broker, queue: &str) -> Option<(Vec<u8>, Headers)> {
    let ch = b.channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            let out = (
                msg.delivery.data.clone(),
                headers_of(&msg.delivery.properties),
            );
            msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
            return Some(out);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error() {
    let b = broker("unroutable").await;
    let err = b
        .publish_raw("t-broker-no-such-queue-anywhere", b"x", &Headers::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");
    // The channel stays usable afterwards.
    b.publish_raw(&b.topology().seeds_queue(), b"{}", &Headers::new())
        .await
        .unwrap();
    assert_eq!(
        b.queue_depth(&b.topology().seeds_queue())
            .await
            .unwrap()
            .messages,
        1
    );
    b.purge_namespace(&[]).await.unwrap();
}

#[tokio::test]
async fn a_retry_comes_back_to_its_queue_after_the_delay() {
    let b = broker("retry").await;
    let queue = b.topology().seeds_queue();
    let mut headers = Headers::new();
    headers.insert(h::ATTEMPT.into(), "2".into());
    b.publish_retry(&queue, b"again", &headers, 200)
        .await
        .unwrap();
    let (body, headers) = get_one(&b, &queue)
        .await
        .expect("the retried message returns to the work queue");
    assert_eq!(body, b"again");
    assert_eq!(headers.get(h::ATTEMPT).map(String::as_str), Some("2"));
    assert_eq!(headers.get(h::SOURCE_QUEUE), Some(&queue));
    assert_eq!(
        b.queue_depth(&b.topology().retry_queue())
            .await
            .unwrap()
            .messages,
        0
    );
    b.purge_namespace(&[]).await.unwrap();
}

#[tokio::test]
async fn dead_letters_carry_the_reason() {
    let b = broker("dlq").await;
    let queue = b.topology().seeds_queue();
    b.publish_dead_letter(
        &queue,
        b"bad",
        &Headers::new(),
        seedq_protocol::FailureReason::MalformedJson,
        "not JSON",
    )
    .await
    .unwrap();
    let (body, headers) = get_one(&b, &b.topology().dlq()).await.expect("dead letter");
    assert_eq!(body, b"bad");
    assert_eq!(
        headers.get(h::ERROR).map(String::as_str),
        Some("malformed_json")
    );
    assert_eq!(
        headers.get(h::ERROR_DETAIL).map(String::as_str),
        Some("not JSON")
    );
    assert_eq!(headers.get(h::SOURCE_QUEUE), Some(&queue));
    b.purge_namespace(&[]).await.unwrap();
}

#[tokio::test]
async fn declaring_twice_is_harmless_and_pinned_queues_route() {
    let b = broker("declare").await;
    b.declare_topology(&BrokerSettings::default())
        .await
        .unwrap();
    b.declare_node_scripts_queue("zeus", &BrokerSettings::default())
        .await
        .unwrap();
    let job: seedq_protocol::ScriptJob = serde_json::from_value(serde_json::json!({
        "batch_id": "b1", "task_id": "t1", "script": "x.py", "timeout_secs": 10, "node": "zeus"
    }))
    .unwrap();
    b.publish_script(&job).await.unwrap();
    assert_eq!(
        b.queue_depth(&b.topology().node_scripts_queue("zeus"))
            .await
            .unwrap()
            .messages,
        1
    );
    let mut other = job.clone();
    other.node = Some("nobody".into());
    assert!(matches!(
        b.publish_script(&other).await,
        Err(BrokerError::Unroutable { .. })
    ));
    b.purge_namespace(&["zeus"]).await.unwrap();
}
