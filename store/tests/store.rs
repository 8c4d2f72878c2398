//! Store behaviour against the real Redis (127.0.0.1:6379 or SEEDQ_REDIS_URL): exactly-once
//! application, job idempotency, failure settling, throughput EMA, heartbeats. Each test uses its
//! own namespace and purges it.

mod common;

use common::spec;
use seedq_core::{PassResult, Survivor};
use seedq_protocol::survivors::RecordShape;
use seedq_protocol::{
    ChunkResult, FailureEvent, FailureReason, Job, JobSeeds, JobSpec, NodeHeartbeat,
    PROTOCOL_VERSION,
};
use seedq_store::{
    ApplyOutcome, CreateOutcome, RecordOutcome, Store, StoreError, ThroughputSample,
};

/// A store with a 600-s job expiry.
async fn store(tag: &str) -> Store {
    common::store("store", tag).await.with_job_ttl(600)
}

/// The epoch of every test job (a fixed one, so results made apart from the job match it).
const EPOCH: u64 = 4242;

fn job(id: &str, end: u128, chunk: u64) -> Job {
    Job::new_seed_job(
        id,
        JobSpec::Sieve(spec()),
        JobSeeds::Range { start: 0, end },
        chunk,
    )
    .map(|mut j| {
        j.epoch = EPOCH;
        j
    })
    .unwrap()
}

fn survivor(seed: u64) -> Survivor {
    Survivor {
        seed,
        forward: Some(PassResult {
            matches: 3,
            total: 3,
            best_skip: Some(1),
            best_offset: None,
            strategy: None,
            skip_pattern: None,
        }),
        reverse: None,
    }
}

fn result(job: &str, chunk: u64, seeds: u64, mut survivors: Vec<Survivor>) -> ChunkResult {
    survivors.sort_by_key(|s| s.seed);
    let pieces = seedq_protocol::survivors::encode(&RecordShape::of(&spec()), &survivors).unwrap();
    ChunkResult {
        v: PROTOCOL_VERSION,
        job_id: job.into(),
        chunk,
        attempt: 1,
        epoch: EPOCH,
        seeds_tested: seeds,
        survivor_pieces: pieces,
        survivor_count: survivors.len() as u64,
        counts: None,
        flagged: vec![],
        summary: None,
        duration_secs: 0.5,
        units_per_sec: None,
        node: "n1".into(),
        slot: "cpu0".into(),
        backend: "cpu".into(),
        gpu_model: "cpu".into(),
        finished_at_ms: seedq_protocol::now_ms(),
    }
}

#[tokio::test]
async fn applying_the_same_chunk_twice_counts_it_once() {
    let s = store("apply").await;
    let j = job("j1", 30, 10);
    assert_eq!(s.create_job(&j).await.unwrap(), CreateOutcome::Created);
    let r0 = result("j1", 0, 10, vec![survivor(7), survivor(3)]);
    assert_eq!(
        s.apply_chunk_result(&r0, None).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        s.apply_chunk_result(&r0, None).await.unwrap(),
        ApplyOutcome::AlreadyDone
    );
    // A different attempt of the same chunk (e.g. a duplicate publish) is still the same chunk.
    let mut again = r0.clone();
    again.attempt = 2;
    again.node = "n2".into();
    assert_eq!(
        s.apply_chunk_result(&again, None).await.unwrap(),
        ApplyOutcome::AlreadyDone
    );
    let p = s.progress("j1").await.unwrap().unwrap();
    assert_eq!(
        (p.chunks_done, p.seeds_done, p.survivors, p.chunks_total),
        (1, 10, 2, 3)
    );
    assert_eq!(p.chunks_by_node.get("n1"), Some(&1));
    assert!(!p.chunks_by_node.contains_key("n2"));
    assert!(!p.finished());

    s.apply_chunk_result(&result("j1", 1, 10, vec![survivor(13)]), None)
        .await
        .unwrap();
    s.apply_chunk_result(&result("j1", 2, 10, vec![survivor(25)]), None)
        .await
        .unwrap();
    let p = s.progress("j1").await.unwrap().unwrap();
    assert_eq!((p.chunks_done, p.seeds_done, p.survivors), (3, 30, 4));
    assert!(p.finished() && p.succeeded());
    let seeds: Vec<u64> = s
        .sieve_survivors("j1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.seed)
        .collect();
    assert_eq!(
        seeds,
        vec![3, 7, 13, 25],
        "sorted by seed, each chunk's once"
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn results_for_unknown_jobs_are_refused() {
    let s = store("unknown").await;
    assert_eq!(
        s.apply_chunk_result(&result("nope", 0, 1, vec![]), None)
            .await
            .unwrap(),
        ApplyOutcome::UnknownJob
    );
    assert!(s.progress("nope").await.unwrap().is_none());
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn create_job_is_idempotent_and_refuses_conflicts() {
    let s = store("create").await;
    let j = job("j2", 100, 10);
    assert_eq!(s.create_job(&j).await.unwrap(), CreateOutcome::Created);
    // Same identity, different plan and time: the stored job (and its plan) wins.
    let mut later = job("j2", 100, 25);
    later.created_at_ms += 1000;
    match s.create_job(&later).await.unwrap() {
        CreateOutcome::Existing(stored) => assert_eq!(stored.chunk_size, 10),
        other => panic!("expected Existing, got {other:?}"),
    }
    let conflicting = job("j2", 200, 10);
    assert!(matches!(
        s.create_job(&conflicting).await,
        Err(StoreError::JobConflict { .. })
    ));
    assert_eq!(s.load_job("j2").await.unwrap().unwrap(), j);
    assert_eq!(s.list_jobs().await.unwrap(), vec!["j2".to_string()]);
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn dead_letters_settle_a_job_and_a_later_success_replaces_them() {
    let s = store("dead").await;
    s.create_job(&job("j3", 20, 10)).await.unwrap();
    s.apply_chunk_result(&result("j3", 0, 10, vec![]), None)
        .await
        .unwrap();
    let event = |dead| FailureEvent {
        member: "c1".into(),
        reason: FailureReason::BackendError,
        detail: "boom".into(),
        dead_lettered: dead,
        node: "n1".into(),
        attempt: 1,
        at_ms: seedq_protocol::now_ms(),
    };
    assert_eq!(
        s.record_failure("j3", EPOCH, &event(false)).await.unwrap(),
        RecordOutcome::Recorded
    );
    assert!(!s.progress("j3").await.unwrap().unwrap().finished());
    assert_eq!(
        s.record_failure("j3", EPOCH, &event(true)).await.unwrap(),
        RecordOutcome::Recorded
    );
    let p = s.progress("j3").await.unwrap().unwrap();
    assert!(p.finished() && !p.succeeded());
    assert_eq!(p.failures.get("backend_error"), Some(&2));
    assert_eq!(
        p.dead_lettered.get("c1").map(String::as_str),
        Some("backend_error")
    );
    assert_eq!(s.failure_log("j3", 10).await.unwrap().len(), 2);
    // Replayed from the DLQ and succeeded: no longer dead.
    s.apply_chunk_result(&result("j3", 1, 10, vec![]), None)
        .await
        .unwrap();
    let p = s.progress("j3").await.unwrap().unwrap();
    assert!(p.dead_lettered.is_empty() && p.succeeded());
    assert_eq!(
        s.record_failure("missing", EPOCH, &event(true))
            .await
            .unwrap(),
        RecordOutcome::UnknownJob,
        "unknown job: nothing written"
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn throughput_is_an_ema_with_alpha() {
    let s = store("ema").await;
    assert_eq!(
        s.record_throughput("RX 6600", "mt19937", 100.0, 0.3)
            .await
            .unwrap(),
        100.0
    );
    let v = s
        .record_throughput("RX 6600", "mt19937", 200.0, 0.3)
        .await
        .unwrap();
    assert!((v - 130.0).abs() < 1e-9, "{v}");
    // Folded into a chunk result as well.
    s.create_job(&job("j4", 10, 10)).await.unwrap();
    let sample = ThroughputSample {
        gpu_model: "RX 6600".into(),
        family: "mt19937".into(),
        units_per_sec: 30.0,
        alpha: 0.3,
    };
    s.apply_chunk_result(&result("j4", 0, 10, vec![]), Some(&sample))
        .await
        .unwrap();
    let v = s.throughput("RX 6600", "mt19937").await.unwrap().unwrap();
    assert!((v - (0.3 * 30.0 + 0.7 * 130.0)).abs() < 1e-9, "{v}");
    // A duplicate result does not move the average.
    s.apply_chunk_result(&result("j4", 0, 10, vec![]), Some(&sample))
        .await
        .unwrap();
    assert_eq!(
        s.throughput("RX 6600", "mt19937").await.unwrap().unwrap(),
        v
    );
    assert_eq!(
        s.all_throughput().await.unwrap(),
        vec![("RX 6600".into(), "mt19937".into(), v)]
    );
    // A startup calibration only fills a gap; it never overrides what chunks taught.
    assert!(!s.seed_throughput("RX 6600", "mt19937", 1e9).await.unwrap());
    assert_eq!(
        s.throughput("RX 6600", "mt19937").await.unwrap().unwrap(),
        v
    );
    assert!(s.seed_throughput("RX 6600", "lcg32", 2.5e10).await.unwrap());
    assert_eq!(
        s.throughput("RX 6600", "lcg32").await.unwrap(),
        Some(2.5e10)
    );
    assert!(!s
        .seed_throughput("RX 6600", "pcg32", f64::NAN)
        .await
        .unwrap());
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn heartbeats_list_live_nodes() {
    let s = store("hb").await;
    let hb = NodeHeartbeat {
        node: "zeus".into(),
        backend: "cuda".into(),
        gpus: vec!["RTX 3080 Ti".into()],
        gpu_model: "RTX 3080 Ti".into(),
        slots: vec![],
        busy_slots: 0,
        chunks_done: 5,
        chunks_failed: 0,
        scripts_running: 0,
        script_limit: 2,
        signed_jobs: true,
        version: "0.1.0".into(),
        pid: 1,
        started_at_ms: 0,
        at_ms: seedq_protocol::now_ms(),
    };
    s.write_heartbeat(&hb, 30).await.unwrap();
    assert_eq!(s.list_nodes().await.unwrap(), vec![hb.clone()]);
    // Only nodes that say they require signed jobs count, and the asker's own heartbeat never.
    let keyless = NodeHeartbeat {
        node: "hera".into(),
        signed_jobs: false,
        ..hb.clone()
    };
    s.write_heartbeat(&keyless, 30).await.unwrap();
    assert_eq!(
        s.nodes_requiring_signed_jobs(None).await.unwrap(),
        vec!["zeus".to_string()]
    );
    assert!(s
        .nodes_requiring_signed_jobs(Some("zeus"))
        .await
        .unwrap()
        .is_empty());
    s.clear_heartbeat("hera").await.unwrap();
    s.clear_heartbeat("zeus").await.unwrap();
    assert!(s.list_nodes().await.unwrap().is_empty());
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn cancel_flag() {
    let s = store("cancel").await;
    s.create_job(&job("j5", 10, 10)).await.unwrap();
    assert!(!s.is_cancelled("j5").await.unwrap());
    s.cancel("j5").await.unwrap();
    assert!(s.is_cancelled("j5").await.unwrap());
    let p = s.progress("j5").await.unwrap().unwrap();
    assert!(p.cancelled);
    assert!(
        p.finished(),
        "nothing was published, so nothing is left to skip: the cancelled job is over"
    );
    // `resume`: the cancel lifted and the job reopened (no dead members) runs again.
    s.uncancel("j5").await.unwrap();
    s.reopen("j5", &[]).await.unwrap();
    assert!(!s.progress("j5").await.unwrap().unwrap().finished());
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn reopening_a_dead_lettered_job_runs_it_again_until_the_replay_settles() {
    let s = store("reopen").await;
    s.create_job(&job("j4", 20, 10)).await.unwrap();
    let mut events = s.job_events("j4").await.unwrap();
    s.apply_chunk_result(&result("j4", 0, 10, vec![]), None)
        .await
        .unwrap();
    assert!(
        events
            .next(std::time::Duration::from_secs(5))
            .await
            .unwrap(),
        "a settled chunk publishes an event"
    );
    let dead = FailureEvent {
        member: "c1".into(),
        reason: FailureReason::BackendError,
        detail: "boom".into(),
        dead_lettered: true,
        node: "n1".into(),
        attempt: 5,
        at_ms: seedq_protocol::now_ms(),
    };
    s.record_failure("j4", EPOCH, &dead).await.unwrap();
    assert!(
        events
            .next(std::time::Duration::from_secs(5))
            .await
            .unwrap(),
        "a dead letter publishes an event"
    );
    assert!(s.progress("j4").await.unwrap().unwrap().finished());
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let totals = seedq_protocol::keys::totals(s.namespace(), "j4");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&totals)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0, "a finished job's keys expire");

    // `dlq replay` of c1: running again, no dead entry, no TTL.
    assert_eq!(s.reopen("j4", &["c1".to_string()]).await.unwrap(), Some(1));
    let p = s.progress("j4").await.unwrap().unwrap();
    assert!(!p.finished() && p.dead_lettered.is_empty(), "{p:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&totals)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "a running job's keys do not expire");
    // The replayed chunk succeeds: finished, succeeded, TTL back.
    s.apply_chunk_result(&result("j4", 1, 10, vec![]), None)
        .await
        .unwrap();
    let p = s.progress("j4").await.unwrap().unwrap();
    assert!(p.finished() && p.succeeded(), "{p:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&totals)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0);

    // Re-opening for a member that is already done re-stamps at once (nothing else would).
    assert_eq!(s.reopen("j4", &["c1".to_string()]).await.unwrap(), Some(0));
    assert!(s.progress("j4").await.unwrap().unwrap().finished());
    assert_eq!(
        s.reopen("missing", &["c0".to_string()]).await.unwrap(),
        None
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn a_failed_republish_marks_reopened_members_dead_again_but_never_a_done_one() {
    let s = store("markdead").await;
    s.create_job(&job("j6", 20, 10)).await.unwrap();
    for member in ["c0", "c1"] {
        let dead = FailureEvent {
            member: member.into(),
            reason: FailureReason::BackendError,
            detail: "boom".into(),
            dead_lettered: true,
            node: "n1".into(),
            attempt: 5,
            at_ms: seedq_protocol::now_ms(),
        };
        s.record_failure("j6", EPOCH, &dead).await.unwrap();
    }
    assert!(s.progress("j6").await.unwrap().unwrap().finished());
    // `resume` reopens both; c0 is applied by a copy still in flight; the publish fails.
    let both = ["c0".to_string(), "c1".to_string()];
    assert_eq!(s.reopen("j6", &both).await.unwrap(), Some(2));
    s.apply_chunk_result(&result("j6", 0, 10, vec![]), None)
        .await
        .unwrap();
    let restore: Vec<(String, String)> = both
        .iter()
        .map(|m| (m.clone(), "backend_error".to_string()))
        .collect();
    assert_eq!(s.mark_dead("j6", &restore).await.unwrap(), Some(1));
    let p = s.progress("j6").await.unwrap().unwrap();
    assert_eq!(p.chunks_done, 1, "{p:?}");
    assert_eq!(
        p.dead_lettered.keys().cloned().collect::<Vec<_>>(),
        vec!["c1".to_string()],
        "the done chunk is not dead again: {p:?}"
    );
    assert!(p.finished(), "settled again, so `wait` ends: {p:?}");
    assert_eq!(s.mark_dead("missing", &restore).await.unwrap(), None);
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn messages_of_another_life_or_outside_the_plan_touch_nothing() {
    let s = store("epoch").await;
    s.create_job(&job("je", 20, 10)).await.unwrap();
    let mut old = result("je", 0, 10, vec![survivor(3)]);
    old.epoch = EPOCH + 1;
    assert_eq!(
        s.apply_chunk_result(&old, None).await.unwrap(),
        ApplyOutcome::Stale,
        "a result of an earlier job under the same id"
    );
    let outside = result("je", 15, 10, vec![]);
    assert_eq!(
        s.apply_chunk_result(&outside, None).await.unwrap(),
        ApplyOutcome::Stale,
        "chunk 15 of a 2-chunk plan"
    );
    let event = |member: &str| FailureEvent {
        member: member.into(),
        reason: FailureReason::BackendError,
        detail: "old".into(),
        dead_lettered: true,
        node: "n1".into(),
        attempt: 3,
        at_ms: seedq_protocol::now_ms(),
    };
    assert_eq!(
        s.record_failure("je", EPOCH + 1, &event("c1"))
            .await
            .unwrap(),
        RecordOutcome::Stale
    );
    assert_eq!(
        s.record_failure("je", EPOCH, &event("c14")).await.unwrap(),
        RecordOutcome::Stale,
        "a dead chunk outside the plan would make '15 of 2 chunks dead'"
    );
    let p = s.progress("je").await.unwrap().unwrap();
    assert_eq!((p.chunks_done, p.seeds_done, p.survivors), (0, 0, 0));
    assert!(p.dead_lettered.is_empty() && p.failures.is_empty());
    assert!(s.failure_log("je", 10).await.unwrap().is_empty());
    // The live epoch still applies.
    assert_eq!(
        s.apply_chunk_result(&result("je", 1, 10, vec![]), None)
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_skip_is_refused_once_the_cancel_is_lifted() {
    let s = store("cancel").await;
    s.create_job(&job("jc", 20, 10)).await.unwrap();
    let skip = FailureEvent {
        member: "c0".into(),
        reason: FailureReason::Cancelled,
        detail: "job cancelled; chunk skipped".into(),
        dead_lettered: true,
        node: "n1".into(),
        attempt: 1,
        at_ms: seedq_protocol::now_ms(),
    };
    s.cancel("jc").await.unwrap();
    s.uncancel("jc").await.unwrap();
    // A consumer that read "cancelled" before the resume records its skip only now.
    assert_eq!(
        s.record_failure("jc", EPOCH, &skip).await.unwrap(),
        RecordOutcome::NotCancelled
    );
    assert!(s
        .progress("jc")
        .await
        .unwrap()
        .unwrap()
        .dead_lettered
        .is_empty());
    s.cancel("jc").await.unwrap();
    assert_eq!(
        s.record_failure("jc", EPOCH, &skip).await.unwrap(),
        RecordOutcome::Recorded
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn redis_errors_are_classified_by_what_waiting_does() {
    use seedq_store::ErrorClass;
    // Real error replies from the server, as the client parses them (a Lua error_reply carries
    // the same code as Redis's own OOM or BUSY refusals).
    let client = redis::Client::open(common::redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply = |code: &'static str| {
        let script = format!("return redis.error_reply('{code} refused for the test')");
        let mut conn = conn.clone();
        async move {
            let e = redis::cmd("EVAL")
                .arg(script)
                .arg(0)
                .query_async::<()>(&mut conn)
                .await
                .unwrap_err();
            StoreError::Redis(e)
        }
    };
    for code in ["OOM", "BUSY", "LOADING", "READONLY", "TRYAGAIN", "MISCONF"] {
        let e = reply(code).await;
        assert_eq!(e.class(), ErrorClass::Busy, "{code}: {e}");
        assert_eq!(e.reason(), FailureReason::RedisUnavailable);
        assert!(e.is_unavailable());
    }
    // A pipeline refused by an out-of-memory server (how the survivor pieces are written).
    let private_oom = {
        let script = "return redis.error_reply('OOM command not allowed for the test')";
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(script).arg(0).ignore();
        pipe.cmd("EVAL").arg(script).arg(0).ignore();
        let mut conn = conn.clone();
        StoreError::Redis(pipe.query_async::<()>(&mut conn).await.unwrap_err())
    };
    assert_eq!(
        private_oom.class(),
        ErrorClass::Busy,
        "pipelined OOM: {private_oom}"
    );
    let other = reply("ERR").await;
    assert_eq!(other.class(), ErrorClass::Permanent, "{other}");
    assert_eq!(other.reason(), FailureReason::StoreError);
    let io = StoreError::Redis(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "refused",
    )));
    assert_eq!(io.class(), ErrorClass::Unreachable);
    let corrupt = StoreError::Corrupt {
        key: "k".into(),
        message: "bad".into(),
    };
    assert_eq!(corrupt.class(), ErrorClass::Permanent);
    assert_eq!(corrupt.reason(), FailureReason::CorruptJob);
    let conflict = StoreError::JobConflict { job_id: "j".into() };
    assert_eq!(conflict.reason(), FailureReason::StoreError);
}
