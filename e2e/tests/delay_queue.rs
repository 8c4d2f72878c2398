//! The way back from the delay queue is at least once: a retry or parked message that expires
//! while its work queue is missing (deleted, or leaderless during a failover) waits in the delay
//! queue and arrives once the work queue is back, instead of being dropped as a classic queue's
//! dead-lettering would. Runs on a private RabbitMQ node whose dead-letter worker retries after
//! 1 s (the broker's default is 3 minutes), so that the test is quick.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use seedq_broker::{Broker, Headers};
use seedq_e2e::PrivateRabbit;
use seedq_protocol::{BrokerSettings, Topology};

#[test]
fn a_retry_whose_work_queue_is_briefly_gone_waits_for_it() {
    let rabbit = match PrivateRabbit::start_with_advanced(
        "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 1000}]}].",
    ) {
        Ok(r) => r,
        Err(e) => {
            seedq_e2e::skip("a_retry_whose_work_queue_is_briefly_gone_waits_for_it", &e);
            return;
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ns = format!("seedq-e2e-delay-{}", std::process::id());
        let topology = Topology::new(&ns);
        let settings = BrokerSettings::default();
        let broker = Broker::connect(&rabbit.url(), "seedq-e2e-delay", &ns)
            .await
            .unwrap();
        broker.declare_topology(&settings).await.unwrap();
        let conn = Connection::connect(&rabbit.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_delete(
            topology.seeds_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
        // A retry of 200 ms, published while its work queue does not exist.
        broker
            .publish_retry(&topology.seeds_queue(), b"retry-1", &Headers::new(), 200)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The queue comes back (a consumer or producer declares the topology again).
        broker.declare_topology(&settings).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = ch
                .basic_get(
                    topology.seeds_queue().as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(message) = got {
                assert_eq!(message.delivery.data, b"retry-1");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the retry expired while its work queue was gone and never arrived: it was dropped"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = conn.close(200, "done".into()).await;
        broker.close().await;
    });
}
