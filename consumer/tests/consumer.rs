//! The consumer binary against the real RabbitMQ and Redis: a job enqueued (with duplicate
//! chunk messages) is applied exactly once and equals the reference sieve; poison messages are
//! dead-lettered with a reason while the node keeps working; SIGTERM drains and exits 0.
//!
//! Each test runs its own `seedq-consumer` in its own namespace and cleans up.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use seedq_broker::{headers_of, Broker, Headers};
use seedq_kernels::{Family, FamilyConfig, SeedSet, SieveSpec, Threshold};
use seedq_protocol::topology::headers as h;
use seedq_protocol::{BrokerSettings, ChunkMessage, Job, JobSeeds, JobSpec};
use seedq_store::{CreateOutcome, Store};

fn amqp_url() -> String {
    std::env::var("SEEDQ_AMQP_URL").unwrap_or_else(|_| seedq_protocol::DEFAULT_AMQP_URL.to_string())
}

fn redis_url() -> String {
    std::env::var("SEEDQ_REDIS_URL")
        .unwrap_or_else(|_| seedq_protocol::DEFAULT_REDIS_URL.to_string())
}

struct Node {
    ns: String,
    child: Child,
    store: Store,
    broker: Broker,
}

impl Node {
    async fn start(tag: &str, slots: u32) -> Node {
        let ns = format!(
            "t-cons-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let child = Command::new(env!("CARGO_BIN_EXE_seedq-consumer"))
            .args([
                "--node",
                &format!("{ns}-node"),
                "--namespace",
                &ns,
                "--backend",
                "cpu",
                "--no-scripts",
            ])
            .args([
                "--slots",
                &slots.to_string(),
                "--cpu-threads",
                "1",
                "--drain-timeout-secs",
                "30",
            ])
            .args(["--amqp-url", &amqp_url(), "--redis-url", &redis_url()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn seedq-consumer");
        let store = Store::connect(&redis_url(), &ns).await.unwrap();
        let broker = Broker::connect(&amqp_url(), "seedq-test@consumer", &ns)
            .await
            .unwrap();
        broker
            .declare_topology(&BrokerSettings::default())
            .await
            .unwrap();
        Node {
            ns,
            child,
            store,
            broker,
        }
    }

    async fn wait_finished(&self, job: &str) -> seedq_protocol::JobProgress {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let p = self.store.progress(job).await.unwrap().expect("job exists");
            if p.finished() {
                return p;
            }
            assert!(Instant::now() < deadline, "job {job} did not finish: {p:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "consumer did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn cleanup(mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self
            .broker
            .purge_namespace(&[&format!("{}-node", self.ns)])
            .await;
        let _ = self.store.purge_namespace().await;
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn spec() -> SieveSpec {
    SieveSpec {
        family: FamilyConfig::new(Family::Xorshift32),
        draws: vec![3, 1, 4, 1],
        modulus: 5,
        offset: 0,
        offset_max: None,
        skip_min: 0,
        skip_max: 3,
        threshold: Threshold::parse("0.75").unwrap(),
        reverse_threshold: None,
        direction: Default::default(),
        skip_mode: Default::default(),
    }
}

#[tokio::test]
async fn chunks_are_applied_exactly_once_and_match_the_reference() {
    let node = Node::start("exact", 2).await;
    let job = Job::new_seed_job(
        "exact-1",
        JobSpec::Sieve(spec()),
        JobSeeds::Range {
            start: 1,
            end: 30_001,
        },
        1000,
    )
    .unwrap();
    assert_eq!(
        node.store.create_job(&job).await.unwrap(),
        CreateOutcome::Created
    );
    let mut msgs: Vec<ChunkMessage> = (0..job.chunk_count)
        .map(|i| job.chunk_message(i).unwrap())
        .collect();
    // Duplicate publishes (a producer resumed after a crash) must not double count.
    msgs.extend(msgs[..10].to_vec());
    node.broker.publish_chunks(&job, &msgs).await.unwrap();

    let p = node.wait_finished("exact-1").await;
    assert_eq!(
        (p.chunks_done, p.seeds_done, p.chunks_total),
        (30, 30_000, 30),
        "{p:?}"
    );
    assert!(p.dead_lettered.is_empty() && p.failures.is_empty(), "{p:?}");
    let expected = seedq_kernels::reference::sieve(
        &spec(),
        &SeedSet::Range {
            start: 1,
            end: 30_001,
        },
    );
    assert!(
        !expected.survivors.is_empty(),
        "the test spec must have survivors"
    );
    assert_eq!(
        node.store.sieve_survivors("exact-1").await.unwrap(),
        expected.survivors
    );
    assert_eq!(p.survivors as usize, expected.survivors.len());
    // The duplicates were consumed (acked) too: nothing is left behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node
        .broker
        .queue_depth(&node.broker.topology().seeds_queue())
        .await
        .unwrap()
        .messages
        > 0
    {
        assert!(Instant::now() < deadline, "duplicates were not consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.cleanup().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_node_keeps_working() {
    let mut node = Node::start("poison", 1).await;
    let queue = node.broker.topology().seeds_queue();
    let bad_spec = |family: &str, draws: serde_json::Value, threshold: &str| {
        serde_json::to_vec(&serde_json::json!({"v": 1, "job_id": "p1", "kind": "sieve", "chunk": 0,
            "seeds": {"range": {"start": 0, "end": 10}},
            "spec": {"sieve": {"family": {"family": family}, "draws": draws, "modulus": 1000, "offset": 0,
                "skip_min": 0, "skip_max": 1, "threshold": threshold}}}))
        .unwrap()
    };
    let payloads: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"v\": 1, \"job_id\": ".to_vec(), "malformed_json"),
        (
            bad_spec("nope", serde_json::json!([1]), "0.5"),
            "unknown_family",
        ),
        (
            bad_spec("mt19937", serde_json::json!([]), "0.5"),
            "empty_window",
        ),
        (
            bad_spec("mt19937", serde_json::json!([1]), "1.5"),
            "invalid_threshold",
        ),
        (
            serde_json::to_vec(&ChunkMessage::new(
                "no-such-job",
                seedq_protocol::JobKind::Sieve,
                0,
                SeedSet::Range { start: 0, end: 5 },
            ))
            .unwrap(),
            "unknown_job",
        ),
    ];
    for (body, _) in &payloads {
        node.broker
            .publish_raw(&queue, body, &Headers::new())
            .await
            .unwrap();
    }
    let ch = node.broker.channel().await.unwrap();
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reasons.len() < payloads.len() {
        assert!(
            Instant::now() < deadline,
            "only {} dead letters: {reasons:?}",
            reasons.len()
        );
        match ch
            .basic_get(
                node.broker.topology().dlq().as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            Some(m) => {
                let hs = headers_of(&m.delivery.properties);
                reasons.push((
                    m.delivery.data.clone(),
                    hs.get(h::ERROR).cloned().unwrap_or_default(),
                ));
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    for (body, reason) in &payloads {
        let got = reasons
            .iter()
            .find(|(b, _)| b == body)
            .map(|(_, r)| r.as_str());
        assert_eq!(
            got,
            Some(*reason),
            "payload {:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "the consumer must survive poison messages"
    );

    // Still works, and drains cleanly on SIGTERM.
    let job = Job::new_seed_job(
        "after",
        JobSpec::Sieve(spec()),
        JobSeeds::Range {
            start: 0,
            end: 2000,
        },
        500,
    )
    .unwrap();
    node.store.create_job(&job).await.unwrap();
    let msgs: Vec<ChunkMessage> = (0..job.chunk_count)
        .map(|i| job.chunk_message(i).unwrap())
        .collect();
    node.broker.publish_chunks(&job, &msgs).await.unwrap();
    let p = node.wait_finished("after").await;
    assert!(p.succeeded(), "{p:?}");
    let status = node.terminate();
    assert!(
        status.success(),
        "SIGTERM must drain and exit 0, got {status}"
    );
    node.cleanup().await;
}
