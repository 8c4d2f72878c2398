//! The scheduler's Redis state against the real Redis: capacity, priority order, round robin,
//! in-flight accounting from the done set and the dead hash, cancels, and stale claims. Each
//! test uses its own namespace and purges it.

mod common;

use seedq_protocol::{
    ChunkResult, FailureEvent, FailureReason, Job, JobSeeds, JobSpec, Priority, SchedulerConfig,
    PROTOCOL_VERSION,
};
use seedq_store::{Pick, Scheduled, Store};

async fn store(tag: &str) -> Store {
    common::store("sched", tag).await
}

/// A job of `chunks` chunks of 10 seeds.
async fn job(s: &Store, id: &str, chunks: u64) -> Job {
    let spec = common::spec();
    let job = Job::new_seed_job(
        id,
        JobSpec::Sieve(spec),
        JobSeeds::Range {
            start: 0,
            end: u128::from(chunks) * 10,
        },
        10,
    )
    .unwrap();
    s.create_job(&job).await.unwrap();
    job
}

fn config(min_queued: u64) -> SchedulerConfig {
    SchedulerConfig {
        min_queued,
        queued_per_slot: 0.5,
        ..SchedulerConfig::default()
    }
}

fn done(job: &Job, chunk: u64) -> ChunkResult {
    ChunkResult {
        v: PROTOCOL_VERSION,
        job_id: job.job_id.clone(),
        chunk,
        attempt: 1,
        epoch: job.epoch,
        seeds_tested: 10,
        survivor_pieces: vec![],
        survivor_count: 0,
        counts: None,
        flagged: vec![],
        summary: None,
        duration_secs: 0.1,
        units_per_sec: None,
        node: "n1".into(),
        slot: "cpu0".into(),
        backend: "cpu".into(),
        gpu_model: "cpu".into(),
        finished_at_ms: seedq_protocol::now_ms(),
    }
}

fn ids(picks: &[Pick]) -> Vec<String> {
    picks
        .iter()
        .map(|p| format!("{}{}", p.job_id, p.chunk))
        .collect()
}

#[tokio::test]
async fn capacity_bounds_what_is_claimed_and_settling_frees_room() {
    let s = store("cap").await;
    let a = job(&s, "a", 100).await;
    assert_eq!(
        s.schedule_job("a", Priority::Normal, 0.0).await.unwrap(),
        Scheduled::Queued
    );
    assert_eq!(
        s.schedule_job("nope", Priority::Normal, 0.0).await.unwrap(),
        Scheduled::UnknownJob
    );
    // No live node: min_queued.
    let first = s.claim_chunks(&config(3), 1000).await.unwrap();
    assert_eq!(ids(&first.picks), ["a0", "a1", "a2"]);
    assert_eq!(first.claims.len(), 1);
    assert!(
        s.claim_chunks(&config(3), 1000)
            .await
            .unwrap()
            .picks
            .is_empty(),
        "full"
    );
    // A node with 4 slots: 4 + max(3, ceil(4 * 0.5)) = 7 in flight.
    s.set_capacities("n1", 4, 0, 30).await.unwrap();
    let more = s.claim_chunks(&config(3), 1000).await.unwrap();
    assert_eq!(more.picks.len(), 4);
    // A settled chunk (done) and a dead-lettered one free two places; a retried one does not.
    s.apply_chunk_result(&done(&a, 0), None).await.unwrap();
    let dead = FailureEvent {
        member: "c1".into(),
        reason: FailureReason::BackendError,
        detail: "x".into(),
        dead_lettered: true,
        node: "n1".into(),
        attempt: 3,
        at_ms: seedq_protocol::now_ms(),
    };
    s.record_failure("a", a.epoch, &dead).await.unwrap();
    let retry = FailureEvent {
        member: "c2".into(),
        dead_lettered: false,
        ..dead.clone()
    };
    s.record_failure("a", a.epoch, &retry).await.unwrap();
    let after = s.claim_chunks(&config(3), 1000).await.unwrap();
    assert_eq!(ids(&after.picks), ["a7", "a8"]);
    // A reopened dead chunk is in flight again: no room.
    s.reopen("a", &["c1".to_string()]).await.unwrap();
    assert!(s
        .claim_chunks(&config(3), 1000)
        .await
        .unwrap()
        .picks
        .is_empty());
    // The node leaves: its capacity goes with it.
    s.clear_capacity("n1").await.unwrap();
    assert!(s
        .claim_chunks(&config(3), 1000)
        .await
        .unwrap()
        .picks
        .is_empty());
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn higher_priority_first_and_round_robin_within_one() {
    let s = store("prio").await;
    let low = job(&s, "low", 50).await;
    job(&s, "n1", 50).await;
    job(&s, "n2", 3).await;
    s.schedule_job("low", Priority::Low, 0.0).await.unwrap();
    let picks = s.claim_chunks(&config(2), 1000).await.unwrap().picks;
    assert_eq!(ids(&picks), ["low0", "low1"], "alone, the low job runs");
    s.schedule_job("n1", Priority::Normal, 0.0).await.unwrap();
    s.schedule_job("n2", Priority::Normal, 0.0).await.unwrap();
    for c in 0..2 {
        s.apply_chunk_result(&done(&low, c), None).await.unwrap();
    }
    s.set_capacities("node", 6, 0, 30).await.unwrap();
    // Room for 6 + 3 = 9: the normal jobs alternate, n2 runs out after 3, the low job waits.
    let picks = s.claim_chunks(&config(2), 1000).await.unwrap();
    let picked = ids(&picks.picks);
    let n1: Vec<_> = picked.iter().filter(|p| p.starts_with("n1")).collect();
    let n2: Vec<_> = picked.iter().filter(|p| p.starts_with("n2")).collect();
    assert_eq!(n2.len(), 3, "{picked:?}");
    assert_eq!(n1.len(), 6, "{picked:?}");
    assert!(picked.iter().all(|p| !p.starts_with("low")), "{picked:?}");
    assert_eq!(&picked[..4], ["n10", "n20", "n11", "n21"], "interleaved");
    // A high job jumps ahead of both once room frees up.
    job(&s, "hi", 5).await;
    s.schedule_job("hi", Priority::High, 0.0).await.unwrap();
    let n1_job = s.load_job("n1").await.unwrap().unwrap();
    s.apply_chunk_result(&done(&n1_job, 0), None).await.unwrap();
    let picks = s.claim_chunks(&config(2), 1000).await.unwrap().picks;
    assert_eq!(ids(&picks), ["hi0"]);
    // Changing a priority takes effect at the next pick.
    s.schedule_job("low", Priority::High, 0.0).await.unwrap();
    s.apply_chunk_result(&done(&n1_job, 1), None).await.unwrap();
    s.apply_chunk_result(&done(&n1_job, 2), None).await.unwrap();
    let picks = s.claim_chunks(&config(2), 1000).await.unwrap().picks;
    assert_eq!(
        ids(&picks),
        ["low2", "hi1"],
        "round robin among the high ones"
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn cancelled_jobs_are_skipped_until_resumed() {
    let s = store("cancel").await;
    job(&s, "a", 10).await;
    job(&s, "b", 10).await;
    s.schedule_job("a", Priority::Normal, 0.0).await.unwrap();
    s.schedule_job("b", Priority::Normal, 0.0).await.unwrap();
    s.cancel("a").await.unwrap();
    let picks = s.claim_chunks(&config(3), 1000).await.unwrap().picks;
    assert_eq!(ids(&picks), ["b0", "b1", "b2"]);
    s.uncancel("a").await.unwrap();
    s.schedule_job("a", Priority::Normal, 0.0).await.unwrap();
    s.set_capacities("node", 2, 0, 30).await.unwrap();
    let picks = s.claim_chunks(&config(3), 1000).await.unwrap().picks;
    assert_eq!(ids(&picks)[0], "a0", "{picks:?}");
    let sched = s.job_schedule("a").await.unwrap();
    assert_eq!(
        (sched.priority, sched.published, sched.verify_fraction),
        (Some(Priority::Normal), 1, Some(0.0))
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn unreleased_claims_go_stale_and_are_taken_once() {
    let s = store("stale").await;
    job(&s, "a", 10).await;
    s.schedule_job("a", Priority::Normal, 0.0).await.unwrap();
    let claimed = s.claim_chunks(&config(4), 1000).await.unwrap();
    assert_eq!(claimed.claims.len(), 1);
    assert_eq!(s.pending_claims().await.unwrap(), claimed.claims);
    let fresh = SchedulerConfig {
        claim_stale_secs: 3600,
        ..config(4)
    };
    assert!(
        s.take_stale_claims(&fresh, 10).await.unwrap().is_empty(),
        "not stale yet"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stale = SchedulerConfig {
        claim_stale_secs: 1,
        ..config(4)
    };
    let taken = s.take_stale_claims(&stale, 10).await.unwrap();
    assert_eq!(taken, claimed.claims);
    assert!(
        s.take_stale_claims(&stale, 10).await.unwrap().is_empty(),
        "a taker re-stamps what it took"
    );
    s.release_claims(&taken).await.unwrap();
    assert!(s.pending_claims().await.unwrap().is_empty());
    s.purge_namespace().await.unwrap();
}

/// Settles task `index` of `job` (dead-lettered: settled like done, for the scheduler).
async fn settle_task(s: &Store, job: &Job, index: usize) {
    let JobSpec::Scripts(b) = &job.spec else {
        unreachable!()
    };
    let event = FailureEvent {
        member: b.tasks[index].member(),
        reason: FailureReason::ExitStatus,
        detail: "x".into(),
        dead_lettered: true,
        node: "n1".into(),
        attempt: 1,
        at_ms: seedq_protocol::now_ms(),
    };
    s.record_failure(&job.job_id, job.epoch, &event)
        .await
        .unwrap();
}

#[tokio::test]
async fn script_batches_have_their_own_lane_by_priority_against_script_permits() {
    let s = store("scripts").await;
    let low = common::batch(&s, "low", 6).await;
    job(&s, "seeds", 20).await;
    s.schedule_job("seeds", Priority::Normal, 0.0)
        .await
        .unwrap();
    assert_eq!(
        s.schedule_batch("low", Priority::Low).await.unwrap(),
        Scheduled::Queued
    );
    // Script permits are room for scripts only, seed slots for chunks only.
    s.set_capacities("n1", 0, 2, 30).await.unwrap();
    let tasks = s.claim_tasks(&config(1), 1000).await.unwrap();
    assert_eq!(
        ids(&tasks.picks),
        ["low0", "low1", "low2"],
        "2 permits + 1 queued"
    );
    let chunks = s.claim_chunks(&config(1), 1000).await.unwrap().picks;
    assert_eq!(ids(&chunks), ["seeds0"], "no seed slots: min_queued only");
    assert!(s
        .claim_tasks(&config(1), 1000)
        .await
        .unwrap()
        .picks
        .is_empty());
    // A high batch waits for the next free permit, then takes every one until it is out.
    let high = common::batch(&s, "high", 2).await;
    s.schedule_batch("high", Priority::High).await.unwrap();
    assert!(s
        .claim_tasks(&config(1), 1000)
        .await
        .unwrap()
        .picks
        .is_empty());
    settle_task(&s, &low, 0).await;
    assert_eq!(
        ids(&s.claim_tasks(&config(1), 1000).await.unwrap().picks),
        ["high0"]
    );
    settle_task(&s, &low, 1).await;
    settle_task(&s, &low, 2).await;
    assert_eq!(
        ids(&s.claim_tasks(&config(1), 1000).await.unwrap().picks),
        ["high1", "low3"]
    );
    // The cursor is the batch's published count, as for seed jobs; a node leaving takes its
    // permits with it.
    assert_eq!(s.job_schedule("low").await.unwrap().published, 4);
    assert_eq!(
        s.job_schedule("high").await.unwrap().priority,
        Some(Priority::High)
    );
    settle_task(&s, &high, 0).await;
    s.clear_capacity("n1").await.unwrap();
    assert!(
        s.claim_tasks(&config(1), 1000)
            .await
            .unwrap()
            .picks
            .is_empty(),
        "3 out, room for min_queued 1"
    );
    s.purge_namespace().await.unwrap();
}
