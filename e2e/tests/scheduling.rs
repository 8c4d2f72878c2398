//! Scheduling end to end: priorities, fair share between jobs of one priority, bounded queues,
//! and claimed windows whose publisher died (real producer, consumers, RabbitMQ and Redis).
//!
//! The figures the tests print (`FIGURE ...`) are the measurements quoted for the scheduler:
//! time from a high-priority enqueue to its first chunk, in chunk durations, and the chunk-rate
//! ratio of two jobs of one priority. Only loose bounds are asserted (the machine may be loaded);
//! the design bound is in `docs/scheduling.md`.

use std::time::{Duration, Instant};

use seedq_e2e::{eventually, queue_info, Namespace};
use seedq_kernels::{Family, FamilyConfig};
use serde_json::json;

/// Seeds per chunk of the pipeline shape below: about a second per chunk on one thread here.
const CHUNK: u64 = 200_000;

/// The seed planted in every test job (each job's draws come from its own seed).
fn draws_file(ns: &Namespace, name: &str, seed: u64) -> String {
    let fam = FamilyConfig::new(Family::Mt19937);
    let draws: Vec<u64> = (0..512).map(|i| fam.output_at(seed, i) % 1000).collect();
    seedq_e2e::write_json(ns, &format!("{name}.json"), &json!(draws))
}

/// The lab pipeline's mt19937 shape (512 draws mod 1000, skips 0..=20, threshold 0.01), whose
/// chunks take a steady time (no early exit shortens them), over `[1, 1 + seeds)`.
fn pipeline_job(ns: &Namespace, id: &str, seeds: u64, planted: u64, priority: &str) -> String {
    let draws = draws_file(ns, id, planted);
    let end = (1 + seeds).to_string();
    let chunk = CHUNK.to_string();
    ns.sieve(&[
        "--prng",
        "mt19937",
        "--draws",
        &draws,
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
        &chunk,
        "--job-id",
        id,
        "--priority",
        priority,
    ])
}

/// A job's counters straight from its totals hash (cheaper than a producer run per sample).
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    chunks_done: u64,
    busy_us: u64,
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
}

fn totals(ns: &Namespace, job: &str) -> Totals {
    let mut conn = redis::Client::open(ns.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let (done, busy, started, finished): (Option<u64>, Option<u64>, Option<u64>, Option<u64>) =
        redis::cmd("HMGET")
            .arg(seedq_protocol::keys::totals(&ns.name, job))
            .arg("chunks_done")
            .arg("busy_us")
            .arg("started_at_ms")
            .arg("finished_at_ms")
            .query(&mut conn)
            .unwrap();
    Totals {
        chunks_done: done.unwrap_or(0),
        busy_us: busy.unwrap_or(0),
        started_at_ms: started,
        finished_at_ms: finished,
    }
}

/// The planted seed survives (its draws are its own outputs at skip 0).
fn assert_planted(ns: &Namespace, job: &str, seed: u64) {
    let results = ns.results(job);
    assert!(
        results.iter().any(|r| r["seed"].as_u64() == Some(seed)),
        "planted seed {seed} among {} survivors of {job}",
        results.len()
    );
}

/// Scheduling settings for a 2-slot test node: one chunk waits beyond what the slots hold.
fn small_queue(ns: &mut Namespace) {
    ns.use_config(|text| {
        format!(
            "{text}\n[scheduler]\nmin_queued = 1\nqueued_per_slot = 0.0\nclaim_stale_secs = 2\n"
        )
    });
}

#[test]
fn a_high_priority_job_overtakes_a_running_low_one() {
    let mut ns = Namespace::new("priority");
    small_queue(&mut ns);
    let node = format!("{}-node", ns.name);
    ns.start_consumer(&node, 2, 1);
    ns.wait_for_consumers(1, Duration::from_secs(60));
    // The lab's case: a 2^32-seed low-priority sieve holding every slot.
    let low = pipeline_job(&ns, "low", (1 << 32) - 1, 7, "low");
    eventually(
        "the low job to run steadily",
        Duration::from_secs(300),
        || totals(&ns, &low).chunks_done >= 4,
    );
    let queued = queue_info(&format!("{}.seeds", ns.name))
        .unwrap()
        .map(|q| q["messages"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    assert!(
        queued <= 3,
        "a 21,475-chunk job keeps only what the slots can take next in the queue: {queued}"
    );
    let before = totals(&ns, &low);
    let chunk_secs = before.busy_us as f64 / 1e6 / before.chunks_done as f64;

    let enqueued = Instant::now();
    let enqueued_ms = seedq_protocol::now_ms();
    let high = pipeline_job(&ns, "high", 6 * CHUNK, 11, "high");
    let mut low_done_when_high_finished = 0;
    eventually("the high job to finish", Duration::from_secs(600), || {
        let h = totals(&ns, &high);
        if h.finished_at_ms.is_some() {
            low_done_when_high_finished = totals(&ns, &low).chunks_done;
            true
        } else {
            false
        }
    });
    let h = totals(&ns, &high);
    let took = enqueued.elapsed().as_secs_f64();
    // The first high chunk finished at `started_at_ms`; it started one chunk duration earlier.
    let first_done = (h.started_at_ms.unwrap() - enqueued_ms) as f64 / 1e3;
    let to_first_start = (first_done - chunk_secs).max(0.0) / chunk_secs;
    let low_meanwhile = low_done_when_high_finished - before.chunks_done;
    eprintln!(
        "FIGURE priority: chunk {chunk_secs:.2} s; first high chunk started {to_first_start:.2} chunk durations after the enqueue; \
         high job (6 chunks, 2 slots) done in {:.2} chunk durations; low chunks finished meanwhile: {low_meanwhile} \
         (in flight or queued at the enqueue: 3)",
        took / chunk_secs
    );
    assert!(
        to_first_start < 3.0,
        "the first high chunk waits for the chunks ahead of it, not for the low job: {to_first_start:.2} chunk durations"
    );
    // What was running or queued at the enqueue (2 slots + 1 queued) may finish; the low job
    // gets nothing new until the high job has nothing left to publish (and its last chunk may
    // overlap one low chunk).
    assert!(
        low_meanwhile <= 4,
        "the low job got {low_meanwhile} chunks while the high one ran"
    );
    assert_planted(&ns, &high, 11);
    let status = ns.status(&high);
    assert_eq!(status["priority"], "high", "{status}");
    assert_eq!(status["chunks_done"].as_u64(), Some(6), "{status}");
    ns.producer_ok(&["cancel", &low]);
}

#[test]
fn two_jobs_of_one_priority_progress_side_by_side() {
    let mut ns = Namespace::new("fairshare");
    small_queue(&mut ns);
    let node = format!("{}-node", ns.name);
    ns.start_consumer(&node, 2, 1);
    ns.wait_for_consumers(1, Duration::from_secs(60));
    // The big job first; the small one minutes (here: chunks) later.
    let big = pipeline_job(&ns, "big", 60 * CHUNK, 21, "normal");
    eventually(
        "the big job to run steadily",
        Duration::from_secs(300),
        || totals(&ns, &big).chunks_done >= 4,
    );
    let small = pipeline_job(&ns, "small", 16 * CHUNK, 23, "normal");
    // Give the small job's first chunks time to reach the slots, then count over a window in
    // which both have work.
    eventually("the small job to start", Duration::from_secs(300), || {
        totals(&ns, &small).chunks_done >= 1
    });
    let (b0, s0) = (
        totals(&ns, &big).chunks_done,
        totals(&ns, &small).chunks_done,
    );
    eventually("ten more chunks", Duration::from_secs(600), || {
        let s = totals(&ns, &small).chunks_done;
        let b = totals(&ns, &big).chunks_done;
        (s - s0) + (b - b0) >= 10 || s >= 14
    });
    let (b1, s1) = (
        totals(&ns, &big).chunks_done,
        totals(&ns, &small).chunks_done,
    );
    let (db, ds) = ((b1 - b0) as f64, (s1 - s0) as f64);
    let ratio = db.max(ds) / db.min(ds).max(0.5);
    eprintln!(
        "FIGURE fair share: over the same window the big job did {db} chunks and the small one {ds} (ratio {ratio:.2})"
    );
    assert!(ratio <= 2.0, "chunk rates {db} vs {ds}");
    ns.wait(&small, 600);
    ns.wait(&big, 900);
    assert_planted(&ns, &small, 23);
    assert_planted(&ns, &big, 21);
    for job in [&big, &small] {
        let status = ns.status(job);
        assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
        assert_eq!(
            status["seeds_done"].as_u64(),
            status["seeds_total"].as_u64(),
            "{status}"
        );
    }
}

#[test]
fn a_window_claimed_by_a_publisher_that_died_is_published_by_the_consumers() {
    let mut ns = Namespace::new("staleclaim");
    small_queue(&mut ns);
    // No consumer yet: the producer publishes min_queued chunks and leaves the rest scheduled.
    let draws = seedq_e2e::write_json(&ns, "draws.json", &json!([1, 2, 3, 4]));
    let job = ns.sieve(&[
        "--prng",
        "xorshift32",
        "--draws",
        &draws,
        "--modulus",
        "1000",
        "--threshold",
        "1",
        "--seed-start",
        "1",
        "--seed-end",
        "200001",
        "--chunk-size",
        "10000",
        "--job-id",
        "stale",
    ]);
    let seeds = format!("{}.seeds", ns.name);
    let queued = || {
        queue_info(&seeds)
            .unwrap()
            .map(|q| q["messages"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    eventually("the first window", Duration::from_secs(30), || {
        queued() == 1
    });
    // A publisher that claims a window and dies before publishing it: the claim is in Redis,
    // the chunks nowhere else.
    let mut conn = redis::Client::open(ns.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let totals_key = seedq_protocol::keys::totals(&ns.name, &job);
    let claimed_from: u64 = redis::cmd("HINCRBY")
        .arg(&totals_key)
        .arg("published_upto")
        .arg(3)
        .query::<u64>(&mut conn)
        .unwrap()
        - 3;
    let _: () = redis::cmd("ZADD")
        .arg(seedq_protocol::keys::sched_claims(&ns.name))
        .arg(seedq_protocol::now_ms())
        .arg(format!("{job}\t{claimed_from}\t{}", claimed_from + 3))
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        queued(),
        1,
        "the dead publisher's chunks are not in the queue"
    );
    let node = format!("{}-node", ns.name);
    ns.start_consumer(&node, 2, 1);
    ns.wait(&job, 300);
    let status = ns.status(&job);
    assert_eq!(status["chunks_done"].as_u64(), Some(20), "{status}");
    assert_eq!(status["seeds_done"].as_u64(), Some(200_000), "{status}");
    let claims: u64 = redis::cmd("ZCARD")
        .arg(seedq_protocol::keys::sched_claims(&ns.name))
        .query(&mut conn)
        .unwrap();
    assert_eq!(claims, 0, "every claimed window was published and released");
}
