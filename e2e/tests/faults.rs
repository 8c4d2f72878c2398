//! Exactly-once results whatever happens on the way: several consumers sharing a job, a consumer
//! SIGKILLed mid-job, its connection closed from the broker side, Redis killed and restarted
//! mid-job, Redis refusing writes (out of memory, BUSY) mid-job, a stored job no build can read,
//! a chunk that keeps killing its consumers, a cancelled job resumed, a chunk delivered
//! twice, a job enqueued twice and a producer killed mid-publish. Every scenario ends with results identical to
//! the sieve engine's and progress counters that add up exactly (a chunk applied twice would push
//! `seeds_done` past the total).

use std::time::Duration;

use seedq_e2e::{eventually, node_connections, Namespace, PrivateRedis};
use seedq_kernels::{reference, Family, FamilyConfig, SeedSet, SieveSpec, Threshold};
use serde_json::{json, Value};

/// xorshift32, 6 draws mod 10, skips 0..2, threshold 0.5: cheap per seed, many chance survivors.
struct Job {
    draws: Vec<u64>,
    draws_file: String,
    start: u64,
    end: u64,
    skip_max: u32,
    skip_max_text: String,
}

impl Job {
    fn new(ns: &Namespace, planted: u64, start: u64, end: u64) -> Job {
        Self::with_skips(ns, planted, start, end, 2)
    }

    /// A wider skip range makes each seed cost more (a job that lasts long enough to be hit).
    fn with_skips(ns: &Namespace, planted: u64, start: u64, end: u64, skip_max: u32) -> Job {
        let fam = FamilyConfig::new(Family::Xorshift32);
        let draws: Vec<u64> = (0..6)
            .map(|i| fam.output_at(planted, 1 + i * 2) % 10)
            .collect();
        let draws_file = seedq_e2e::write_json(ns, "draws.json", &json!(draws));
        Job {
            draws,
            draws_file,
            start,
            end,
            skip_max: skip_max.max(2),
            skip_max_text: skip_max.max(2).to_string(),
        }
    }

    fn args<'a>(&'a self, start: &'a str, end: &'a str, chunk: &'a str) -> Vec<&'a str> {
        vec![
            "--prng",
            "xorshift32",
            "--draws",
            &self.draws_file,
            "--modulus",
            "10",
            "--skip-min",
            "0",
            "--skip-max",
            &self.skip_max_text,
            "--threshold",
            "0.5",
            "--seed-start",
            start,
            "--seed-end",
            end,
            "--chunk-size",
            chunk,
        ]
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
}

fn seeds_of(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["seed"].as_u64().unwrap()).collect()
}

fn assert_exact(ns: &Namespace, job_id: &str, job: &Job) {
    let status = ns.status(job_id);
    assert_eq!(status["chunks_done"], status["chunks_total"], "{status}");
    assert_eq!(
        status["seeds_done"].as_u64(),
        Some(job.end - job.start),
        "seeds counted exactly once: {status}"
    );
    assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
    let expected = job.expected_seeds();
    assert!(
        expected.len() > 10,
        "the spec should give many chance survivors"
    );
    let got = seeds_of(&ns.results(job_id));
    assert_eq!(got, expected, "survivors differ from the sieve engine");
    assert_eq!(
        status["survivors"].as_u64(),
        Some(expected.len() as u64),
        "{status}"
    );
}

fn chunks_done(ns: &Namespace, job_id: &str) -> u64 {
    ns.status(job_id)["chunks_done"].as_u64().unwrap_or(0)
}

/// Seeds of [`one_long_chunk`].
const LONG_SEEDS: u64 = 6_000_000;

/// One chunk that runs for tens of seconds on one thread (so that its consumer can be stopped
/// while it runs): the lab pipeline's shape (mt19937, 512 draws mod 1000, skips 0..=20, threshold
/// 0.01), which no early exit shortens, over [`LONG_SEEDS`] seeds; its survivors are chance ones,
/// about one in 3,000 seeds. Returns the job id.
fn one_long_chunk(ns: &Namespace) -> String {
    let fam = FamilyConfig::new(Family::Mt19937);
    let draws: Vec<u64> = (0..512).map(|i| fam.output_at(99, i) % 1000).collect();
    let draws_file = seedq_e2e::write_json(ns, "long-draws.json", &json!(draws));
    let end = (1 + LONG_SEEDS).to_string();
    let size = LONG_SEEDS.to_string();
    ns.sieve(&[
        "--prng",
        "mt19937",
        "--draws",
        &draws_file,
        "--modulus",
        "1000",
        "--skip-min",
        "0",
        "--skip-max",
        "20",
        "--threshold",
        "0.01",
        "--seed-start",
        "1",
        "--seed-end",
        &end,
        "--chunk-size",
        &size,
    ])
}

#[test]
fn several_consumers_share_one_job_each_chunk_once() {
    let mut ns = Namespace::new("multi");
    let base = ns.name.clone();
    ns.start_consumer(&format!("{base}-a"), 1, 1);
    ns.start_consumer(&format!("{base}-b"), 2, 1);
    ns.start_consumer(&format!("{base}-c"), 3, 1);
    ns.wait_for_consumers(3, Duration::from_secs(60));
    let job = Job::new(&ns, 77_777, 1, 300_001);
    let id = ns.sieve(&job.args("1", "300001", "2000"));
    ns.wait(&id, 600);
    assert_exact(&ns, &id, &job);
    // Work really was shared: more than one node finished chunks.
    let status = ns.status(&id);
    let per_node = status["chunks_by_node"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let total: u64 = per_node.values().map(|v| v.as_u64().unwrap_or(0)).sum();
    assert_eq!(
        total,
        status["chunks_total"].as_u64().unwrap(),
        "per-node counts add up: {status}"
    );
    assert!(
        per_node.len() >= 2,
        "several nodes should take chunks: {status}"
    );
}

#[test]
fn a_consumer_killed_mid_job_changes_nothing() {
    let mut ns = Namespace::new("sigkill");
    let base = ns.name.clone();
    let victim = ns.start_consumer(&format!("{base}-victim"), 2, 1);
    let job = Job::new(&ns, 123_456, 1, 2_000_001);
    let id = ns.sieve(&job.args("1", "2000001", "5000"));
    eventually("some chunks to finish", Duration::from_secs(300), || {
        chunks_done(&ns, &id) >= 3
    });
    ns.consumer(victim).kill();
    ns.start_consumer(&format!("{base}-survivor"), 2, 1);
    ns.wait(&id, 900);
    assert_exact(&ns, &id, &job);
}

#[test]
fn a_connection_closed_by_the_broker_is_recovered() {
    let mut ns = Namespace::new("brokerclose");
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer(&node, 1, 1);
    let names = listed_connections(&node);
    let job = Job::with_skips(&ns, 4242, 1, 400_001, 150);
    let id = ns.sieve(&job.args("1", "400001", "2000"));
    eventually("some chunks to finish", Duration::from_secs(300), || {
        chunks_done(&ns, &id) >= 2
    });
    for name in &names {
        seedq_e2e::close_connection(name).unwrap();
    }
    let at_close = ns.status(&id);
    eprintln!(
        "closed the connection at {}/{} chunks",
        at_close["chunks_done"], at_close["chunks_total"]
    );
    // It reconnects under the same name (a new broker-side connection) and finishes the job.
    eventually(
        "the consumer to reconnect",
        Duration::from_secs(120),
        || {
            node_connections(&node)
                .map(|n| n.iter().any(|c| !names.contains(c)))
                .unwrap_or(false)
        },
    );
    ns.wait(&id, 900);
    assert!(
        ns.consumer(consumer).is_running(),
        "the consumer must survive a broker-side close"
    );
    assert_exact(&ns, &id, &job);
}

/// The broker layer under the node's recovery: once the server closes a connection, every wait
/// on it ends (an ack of a delivery held, the consumer's next delivery, a confirmed publish), so the task waiting (a slot, the feeder) moves on to the new connection.
/// lapin can leave such a wait pending for good when the close lands just as a frame is queued
/// (amqp-rs/lapin#409); the node then reconnected but one of its tasks never served again.
#[test]
fn every_broker_wait_ends_when_the_server_closes_the_connection() {
    let ns = Namespace::new("waitsend");
    let node = format!("{}-node", ns.name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = connect_as_node(&ns, &node).await;
        let queue = broker.topology().seeds_queue();
        for i in 0..2u8 {
            broker
                .publish_raw(&queue, &[i], &Default::default())
                .await
                .unwrap();
        }
        let mut subscription = seedq_broker::Subscription::open(&broker, &queue, "t", 1)
            .await
            .unwrap();
        let held = subscription.next().await.unwrap().unwrap();
        let names = listed_connections(&node);
        for name in &names {
            seedq_e2e::close_connection(name).unwrap();
        }
        // Each wait may end either way (an ack written before the close reached the client
        // succeeds) but must end: what follows it has to see the connection gone.
        let limit = Duration::from_secs(30);
        let ack = tokio::time::timeout(limit, held.ack()).await;
        assert!(ack.is_ok(), "the ack of a delivery held at the close hung");
        let consumed = tokio::time::timeout(limit, async {
            while let Some(Ok(_)) = subscription.next().await {}
        })
        .await;
        assert!(
            consumed.is_ok(),
            "the consumer did not end with the connection"
        );
        let published = tokio::time::timeout(limit, async {
            while broker
                .publish_raw(&queue, b"late", &Default::default())
                .await
                .is_ok()
            {}
        })
        .await;
        assert!(published.is_ok(), "publishes on the closed connection hung");
        assert!(!broker.is_connected());
    });
}

/// [`every_broker_wait_ends_when_the_server_closes_the_connection`] with traffic in flight at
/// the close: a publisher and a consumer acking as fast as they can, the likeliest moment for a
/// frame to be queued as the close lands. Both must end, with an error, soon after.
#[test]
fn broker_traffic_in_flight_at_a_server_close_ends_with_errors() {
    let ns = Namespace::new("busyclose");
    let node = format!("{}-node", ns.name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = std::sync::Arc::new(connect_as_node(&ns, &node).await);
        let queue = broker.topology().seeds_queue();
        let mut subscription = seedq_broker::Subscription::open(&broker, &queue, "t", 20)
            .await
            .unwrap();
        let publishers: Vec<_> = (0..4)
            .map(|_| {
                let (broker, queue) = (broker.clone(), queue.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while broker
                        .publish_raw(&queue, b"x", &Default::default())
                        .await
                        .is_ok()
                    {
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let consumer = tokio::spawn(async move {
            let mut acked = 0u64;
            while let Some(Ok(delivery)) = subscription.next().await {
                if delivery.ack().await.is_err() {
                    break;
                }
                acked += 1;
            }
            acked
        });
        let names = listed_connections(&node);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for name in &names {
            seedq_e2e::close_connection(name).unwrap();
        }
        let limit = Duration::from_secs(30);
        let acked = tokio::time::timeout(limit, consumer)
            .await
            .expect("the consumer ends after the close")
            .unwrap();
        let mut sent = 0;
        for publisher in publishers {
            sent += tokio::time::timeout(limit, publisher)
                .await
                .expect("every publisher ends after the close")
                .unwrap();
        }
        eprintln!("{sent} published and {acked} acked before the close");
        assert!(sent > 0 && acked > 0, "traffic was flowing at the close");
    });
}

/// A broker connection named as `node`'s consumer (so `node_connections` lists it), with the
/// namespace's topology declared.
async fn connect_as_node(ns: &Namespace, node: &str) -> seedq_broker::Broker {
    let name = seedq_protocol::Topology::consumer_connection_name(node);
    let broker = seedq_broker::Broker::connect(&seedq_e2e::amqp_url(), &name, &ns.name)
        .await
        .unwrap();
    broker
        .declare_topology(&seedq_protocol::BrokerSettings::default())
        .await
        .unwrap();
    broker
}

/// The names of `node`'s broker connections, once the management API lists at least one (it
/// lists a connection a moment after it opens).
fn listed_connections(node: &str) -> Vec<String> {
    let mut names = Vec::new();
    eventually(
        "the node's named connection",
        Duration::from_secs(60),
        || {
            names = node_connections(node).unwrap_or_default();
            !names.is_empty()
        },
    );
    names
}

#[test]
fn a_job_enqueued_twice_and_a_chunk_delivered_twice_count_once() {
    let mut ns = Namespace::new("twice");
    ns.start_consumer(&format!("{}-node", ns.name), 2, 1);
    let job = Job::new(&ns, 99_999, 1, 200_001);
    let args = job.args("1", "200001", "10000");
    let first = ns.sieve(&args);
    let second = ns.sieve(&args);
    assert_eq!(first, second, "the same command must name the same job");
    ns.wait(&first, 600);
    assert_exact(&ns, &first, &job);

    // Deliver every chunk of the finished job a second time (what a redelivery or a replay of
    // dead letters does), straight onto the queue.
    let topology = seedq_protocol::Topology::new(&ns.name);
    let epoch = seedq_e2e::job_epoch(&ns.redis_url, &ns.name, &first);
    assert_ne!(epoch, 0, "a new job has an epoch");
    let messages: Vec<Vec<u8>> = (0..20u64)
        .map(|i| {
            let seeds = seedq_kernels::SeedSet::Range {
                start: 1 + i * 10_000,
                end: 1 + (i + 1) * 10_000,
            };
            let mut chunk = seedq_protocol::ChunkMessage::new(
                first.clone(),
                seedq_protocol::JobKind::Sieve,
                i,
                seeds,
            );
            chunk.epoch = epoch;
            chunk.to_json()
        })
        .collect();
    seedq_e2e::publish_raw(&topology.seeds_queue(), &messages).unwrap();
    eventually(
        "the duplicates to be consumed",
        Duration::from_secs(120),
        || {
            seedq_e2e::queue_info(&topology.seeds_queue())
                .ok()
                .flatten()
                .map(|q| {
                    q["messages"].as_u64() == Some(0)
                        && q["messages_unacknowledged"].as_u64() == Some(0)
                })
                .unwrap_or(false)
        },
    );
    assert_exact(&ns, &first, &job);
}

#[test]
fn a_producer_killed_mid_publish_resumes_exactly() {
    let mut ns = Namespace::new("resume");
    let job = Job::new(&ns, 31_337, 1, 40_001);
    // 1-seed chunks: 40,000 publishes, so the kill lands mid-publish.
    let args = job.args("1", "40001", "1");
    let mut all = vec!["sieve", "--json", "--job-id", "resume-me"];
    all.extend_from_slice(&args);
    let mut child = ns
        .producer_cmd(&all)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    // Re-running the same command completes the publish; the consumer starts only now, so
    // everything published twice is on the queue at once.
    let id = ns.sieve(&all[2..]);
    assert_eq!(id, "resume-me");
    ns.start_consumer(&format!("{}-node", ns.name), 4, 1);
    ns.wait(&id, 900);
    assert_exact(&ns, &id, &job);
}

#[test]
fn a_redis_outage_mid_job_is_ridden_out() {
    // Declared first so that it outlives the namespace (whose teardown needs it).
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED a_redis_outage_mid_job_is_ridden_out: redis-server is not installed");
        return;
    };
    let mut ns = Namespace::new("redisdown");
    ns.redis_url = redis.url();
    // Every chunk queued from the start (as before windows): the outage must meet chunks in
    // flight, however fast they run.
    ns.use_config(|text| format!("{text}\n[scheduler]\nmin_queued = 1000\n"));
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer(&node, 2, 1);
    let job = Job::with_skips(&ns, 31_337, 1, 400_001, 150);
    let id = ns.sieve(&job.args("1", "400001", "2000"));
    // A pipeline step's wait, started before the outage: it must ride it out too.
    let waiter = ns
        .producer_cmd(&["wait", &id, "--timeout", "900"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("some chunks to finish", Duration::from_secs(300), || {
        chunks_done(&ns, &id) >= 3
    });
    redis.kill();
    // Longer than the store's own retries (7 with jittered backoff: at most about 18 s), so that
    // finished chunks cannot be written and are parked in the delay queue.
    std::thread::sleep(Duration::from_secs(25));
    assert!(
        ns.consumer(consumer).is_running(),
        "the consumer must survive a Redis outage"
    );
    redis.restart();
    let waited = waiter.wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "wait across the outage failed ({}): {}",
        waited.status,
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(ns.consumer(consumer).is_running());
    assert_exact(&ns, &id, &job);
    let log = ns.consumer(consumer).log_text();
    assert!(
        log.contains("Redis unavailable; message parked"),
        "the outage should have parked chunks; consumer log:\n{log}"
    );
}

#[test]
fn a_cancelled_job_resumed_completes_exactly() {
    let mut ns = Namespace::new("cancelresume");
    let base = ns.name.clone();
    let node = ns.start_consumer(&format!("{base}-node"), 1, 1);
    let job = Job::with_skips(&ns, 2024, 1, 400_001, 150);
    // 4,000 chunks: their round trips alone last seconds, however fast the kernels are.
    let id = ns.sieve(&job.args("1", "400001", "100"));
    eventually("some chunks to finish", Duration::from_secs(300), || {
        chunks_done(&ns, &id) >= 3
    });
    // Frozen while the cancel lands, however fast the kernels are: chunks remain to be skipped.
    ns.consumer(node).freeze(true);
    let cancelled = ns.producer(&["cancel", &id]);
    ns.consumer(node).freeze(false);
    assert!(
        cancelled.status.success(),
        "cancel: {}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let waited = ns.producer(&["wait", &id, "--timeout", "600"]);
    assert_eq!(
        waited.status.code(),
        Some(3),
        "a cancelled job ends with skipped chunks: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(
        String::from_utf8_lossy(&waited.stderr).contains(&format!("seedq-producer resume {id}")),
        "wait says how to go on"
    );
    // The scheduler published only a few chunks ahead: the queued ones are skipped as
    // `cancelled` (if the slot meets them after the cancel), the rest were never published.
    let status = ns.status(&id);
    assert_eq!(status["state"], "cancelled", "{status}");
    let settled =
        status["chunks_done"].as_u64().unwrap() + status["dead_lettered"].as_u64().unwrap();
    assert!(
        settled < 4000,
        "work was left when the cancel landed: {status}"
    );
    assert!(
        status["chunks_published"].as_u64().unwrap() < 4000,
        "the cancel stopped the publishing: {status}"
    );
    ns.producer_ok(&["resume", &id]);
    ns.wait(&id, 900);
    assert_exact(&ns, &id, &job);
}

#[test]
fn a_chunk_that_keeps_killing_its_consumer_is_dead_lettered_with_the_reason_and_replays() {
    let mut ns = Namespace::new("deliverylimit");
    // Limit 2: the second delivery is the last one the broker would hand out.
    ns.use_config(|text| text.replace("delivery_limit = 20", "delivery_limit = 2"));
    let base = ns.name.clone();
    let first = ns.start_consumer(&format!("{base}-first"), 1, 1);
    let id = one_long_chunk(&ns);
    let seeds = seedq_protocol::Topology::new(&ns.name).seeds_queue();
    let unacked = || {
        seedq_e2e::queue_info(&seeds)
            .ok()
            .flatten()
            .and_then(|q| q["messages_unacknowledged"].as_u64())
            .unwrap_or(0)
    };
    eventually("the chunk to be taken", Duration::from_secs(120), || {
        unacked() == 1
    });
    ns.consumer(first).kill();
    // The next delivery is the chunk's last: the consumer dead-letters it itself and tells Redis.
    let second = ns.start_consumer(&format!("{base}-second"), 1, 1);
    let waited = ns.producer(&["wait", &id, "--timeout", "300"]);
    let said = String::from_utf8_lossy(&waited.stderr).to_string();
    assert_eq!(
        waited.status.code(),
        Some(3),
        "the job settles with the chunk dead-lettered: {said}"
    );
    assert!(
        said.contains("delivery_limit"),
        "wait names the reason: {said}"
    );
    let listed = ns.producer_ok(&["--json", "dlq", "list", "--job", &id]);
    assert!(
        listed.contains("delivery_limit"),
        "the dead letter carries the reason: {listed}"
    );
    // Replayed after the "fix", it starts with a clean delivery count and completes.
    ns.producer_ok(&["dlq", "replay", "--job", &id]);
    ns.wait(&id, 900);
    assert!(ns.consumer(second).is_running());
    let status = ns.status(&id);
    assert_eq!(status["seeds_done"].as_u64(), Some(LONG_SEEDS), "{status}");
    assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
}

#[test]
fn a_seed_job_under_redis_oom_and_busy_settles_exact() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("SKIPPED a_seed_job_under_redis_oom_and_busy_settles_exact: redis-server is not installed");
        return;
    };
    let mut ns = Namespace::new("redispressure");
    ns.redis_url = redis.url();
    let node = format!("{}-node", ns.name);
    let consumer = ns.start_consumer(&node, 2, 1);
    let job = Job::with_skips(&ns, 4242, 1, 400_001, 150);
    let id = ns.sieve(&job.args("1", "400001", "2000"));
    eventually("some chunks to finish", Duration::from_secs(300), || {
        chunks_done(&ns, &id) >= 3
    });
    // Out of memory: every write is refused while reads work.
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory-policy", "noeviction");
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory", "1");
    std::thread::sleep(Duration::from_secs(8));
    seedq_e2e::redis_config_set(&redis.url(), "maxmemory", "0");
    // BUSY: a script holds the server for 8 s.
    seedq_e2e::redis_busy_for(&redis.url(), 8);
    ns.wait(&id, 900);
    assert!(ns.consumer(consumer).is_running());
    assert_exact(&ns, &id, &job);
    let log = ns.consumer(consumer).log_text();
    assert!(
        log.contains("Redis unavailable; message parked"),
        "the refused writes should have parked chunks; consumer log:\n{log}"
    );
}

#[test]
fn a_deterministic_store_error_dead_letters_chunks_with_its_own_reason() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!(
            "SKIPPED a_deterministic_store_error_dead_letters...: redis-server is not installed"
        );
        return;
    };
    let mut ns = Namespace::new("corruptjob");
    ns.redis_url = redis.url();
    let job = Job::new(&ns, 99, 1, 10_001);
    // Enqueued with no consumer running; then the stored job is replaced by one "of a newer
    // build" (valid JSON, unknown protocol version), which no wait can make readable.
    let id = ns.sieve(&job.args("1", "10001", "2000"));
    seedq_e2e::store_job_of_a_newer_build(&redis.url(), &ns.name, &id);
    ns.start_consumer(&format!("{}-node", ns.name), 1, 1);
    // The first window (min_queued = 2 with no consumer alive) reaches the consumer, which
    // dead-letters it; the scheduler cannot read the job to publish the rest, and records those
    // dead with the same reason, so the job settles.
    seedq_e2e::expect_dead_letters(&ns.name, 2, "corrupt_job");
    seedq_e2e::expect_dead_in_record(&redis.url(), &ns.name, &id, 5, "corrupt_job");
}

#[test]
fn drained_hand_backs_do_not_use_up_the_delivery_limit() {
    let mut ns = Namespace::new("handback");
    // Limit 2: if a hand-back counted as a delivery, the second consumer would take the chunk
    // on its last delivery and dead-letter it as `delivery_limit`.
    ns.use_config(|text| text.replace("delivery_limit = 20", "delivery_limit = 2"));
    let base = ns.name.clone();
    let id = one_long_chunk(&ns);
    let seeds = seedq_protocol::Topology::new(&ns.name).seeds_queue();
    let unacked = || {
        seedq_e2e::queue_info(&seeds)
            .ok()
            .flatten()
            .and_then(|q| q["messages_unacknowledged"].as_u64())
            .unwrap_or(0)
    };
    for round in 0..3 {
        let node = format!("{base}-drain{round}");
        let c = ns.start_consumer_with(
            &node,
            &[
                "--backend",
                "cpu",
                "--slots",
                "1",
                "--cpu-threads",
                "1",
                "--no-calibrate",
                "--drain-timeout-secs",
                "0",
            ],
        );
        // The management API's counts lag by seconds (the previous round's unacked chunk may
        // still show): wait for this node's own signal handler and subscription, then for the
        // chunk, which nobody else can hold.
        eventually(
            "the node to run and subscribe",
            Duration::from_secs(120),
            || {
                let log = ns.consumer(c).log_text();
                log.contains("node running") && log.contains("slot subscribed")
            },
        );
        std::thread::sleep(Duration::from_secs(2));
        eventually("the chunk to be taken", Duration::from_secs(120), || {
            unacked() == 1
        });
        let status = ns.consumer(c).terminate(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "a drained consumer exits cleanly: {status:?}"
        );
        let log = ns.consumer(c).log_text();
        assert!(
            log.contains("drain timeout: returning the in-flight chunk to the queue"),
            "round {round}: the chunk was handed back on drain:\n{log}"
        );
    }
    ns.start_consumer(&format!("{base}-last"), 1, 1);
    ns.wait(&id, 900);
    let status = ns.status(&id);
    assert_eq!(status["seeds_done"].as_u64(), Some(LONG_SEEDS), "{status}");
    assert_eq!(
        status["dead_lettered"].as_u64().unwrap_or(0),
        0,
        "hand-backs are not faults: {status}"
    );
}
