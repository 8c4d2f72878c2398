//! Verification by redundancy in the real Redis: the draw at apply time, a matching check, a
//! mismatch decided by the reference (the wrong result replaced exactly, the wrong slot flagged
//! and its chunks since its last passed check turned into redo checks), a wrong verifier, a
//! give-up, and the flag's end. Each test uses its own namespace and purges it.

mod common;

use common::spec;
use seedq_core::{PassResult, Survivor};
use seedq_protocol::survivors::RecordShape;
use seedq_protocol::{
    CheckKind, ChunkResult, Job, JobSeeds, JobSpec, Priority, SlotRef, PROTOCOL_VERSION,
};
use seedq_store::{ApplyOutcome, CheckResolution, Claim, Resolve, Store};

/// A job of `chunks` chunks of 100 seeds, verifying `fraction` of them.
async fn job(s: &Store, id: &str, chunks: u64, fraction: f64) -> Job {
    let job = Job::new_seed_job(
        id,
        JobSpec::Sieve(spec()),
        JobSeeds::Range {
            start: 0,
            end: u128::from(chunks) * 100,
        },
        100,
    )
    .unwrap();
    s.create_job(&job).await.unwrap();
    s.schedule_job(id, Priority::Normal, fraction)
        .await
        .unwrap();
    job
}

fn slot(node: &str, name: &str) -> SlotRef {
    SlotRef {
        node: node.into(),
        slot: name.into(),
        backend: "cpu".into(),
    }
}

/// Chunk `chunk`'s result with `seeds` surviving, from `by`.
fn result(job: &Job, chunk: u64, seeds: &[u64], by: &SlotRef) -> ChunkResult {
    let survivors: Vec<Survivor> = seeds
        .iter()
        .map(|&seed| Survivor {
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
        })
        .collect();
    ChunkResult {
        v: PROTOCOL_VERSION,
        job_id: job.job_id.clone(),
        chunk,
        attempt: 1,
        epoch: job.epoch,
        seeds_tested: 100,
        survivor_pieces: seedq_protocol::survivors::encode(&RecordShape::of(&spec()), &survivors)
            .unwrap(),
        survivor_count: survivors.len() as u64,
        counts: None,
        flagged: vec![],
        summary: None,
        duration_secs: 0.1,
        units_per_sec: None,
        node: by.node.clone(),
        slot: by.slot.clone(),
        backend: by.backend.clone(),
        gpu_model: "cpu".into(),
        finished_at_ms: seedq_protocol::now_ms(),
    }
}

async fn seeds_of(s: &Store, id: &str) -> Vec<u64> {
    let mut seeds: Vec<u64> = s
        .sieve_survivors(id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.seed)
        .collect();
    seeds.sort_unstable();
    seeds
}

#[tokio::test]
async fn the_draw_follows_the_fraction_and_a_pending_check_holds_the_job_open() {
    let s = common::store("verify", "draw").await;
    let a = slot("n1", "cpu0");
    let none = job(&s, "none", 4, 0.0).await;
    for c in 0..4 {
        let r = result(&none, c, &[c * 100 + 7], &a);
        assert_eq!(
            s.apply_chunk_result(&r, None).await.unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(s.check_order("none", c).await.unwrap(), None);
    }
    assert!(s.progress("none").await.unwrap().unwrap().finished());
    assert!(
        s.slot_log(&a).await.unwrap().is_empty(),
        "nothing is logged for a job that verifies nothing"
    );

    let all = job(&s, "all", 3, 1.0).await;
    for c in 0..3 {
        let r = result(&all, c, &[c * 100 + 7], &a);
        assert_eq!(
            s.apply_chunk_result(&r, None).await.unwrap(),
            ApplyOutcome::AppliedToVerify
        );
        let order = s
            .check_order("all", c)
            .await
            .unwrap()
            .expect("a check order");
        assert_eq!(order.kind, CheckKind::Verify);
        assert_eq!(order.avoid, a);
    }
    let claims = s.pending_claims().await.unwrap();
    for c in 0..3 {
        assert!(
            claims.contains(&Claim::of_check("all", c)),
            "the check of chunk {c} is claimed where it is drawn: {claims:?}"
        );
    }
    let p = s.progress("all").await.unwrap().unwrap();
    assert_eq!((p.chunks_done, p.checks_pending), (3, 3));
    assert!(!p.finished(), "a job with checks pending is not finished");
    assert_eq!(s.slot_log(&a).await.unwrap().len(), 3);

    // Matching second runs settle the checks, vouch for the slot's log, and finish the job.
    let b = slot("n2", "cpu0");
    for c in 0..3 {
        let again = result(&all, c, &[c * 100 + 7], &b);
        assert_eq!(
            s.resolve_check(Resolve::Verify(&again), &a, "wrong")
                .await
                .unwrap(),
            CheckResolution::Settled {
                first_wrong: false,
                verifier_wrong: false,
                redo: vec![]
            }
        );
    }
    assert_eq!(
        s.resolve_check(Resolve::Run(&result(&all, 0, &[7], &b)), &a, "wrong")
            .await
            .unwrap(),
        CheckResolution::NotPending,
        "a settled check is settled once"
    );
    let p = s.progress("all").await.unwrap().unwrap();
    assert_eq!((p.verified, p.mismatches, p.checks_pending), (3, 0, 0));
    assert_eq!(p.survivors, 3);
    assert!(p.finished());
    assert_eq!(
        s.slot_log(&a).await.unwrap().len(),
        3,
        "a matching verification vouches for its own chunk only"
    );
    assert!(s.slot_checked(&a, false).await.unwrap());
    assert!(
        s.slot_log(&a).await.unwrap().is_empty(),
        "a passed self-test vouches for the slot's log"
    );
    assert_eq!(seeds_of(&s, "all").await, vec![7, 107, 207]);
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn a_mismatch_replaces_the_wrong_result_flags_its_slot_and_redoes_its_chunks() {
    let s = common::store("verify", "mismatch").await;
    let bad = slot("rig1", "gpu3");
    let good = slot("zeus", "gpu0");
    // A fraction that logs every chunk but (in practice) draws none, until the test says so.
    const NEVER: f64 = 1e-15;
    let k = job(&s, "k", 4, NEVER).await;
    let j = job(&s, "j", 1, NEVER).await;
    // The bad slot drops seed 107 of k's chunk 1 and seed 307 of its chunk 3.
    for (jb, c, seeds, by) in [
        (&k, 0u64, vec![7u64], &bad),
        (&k, 1, vec![], &bad),
        (&k, 2, vec![207], &good),
        (&j, 0, vec![], &bad),
    ] {
        assert_eq!(
            s.apply_chunk_result(&result(jb, c, &seeds, by), None)
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
    }
    assert!(s.progress("j").await.unwrap().unwrap().finished());
    s.schedule_job("k", Priority::Normal, 1.0).await.unwrap();
    assert_eq!(
        s.apply_chunk_result(&result(&k, 3, &[], &bad), None)
            .await
            .unwrap(),
        ApplyOutcome::AppliedToVerify
    );
    assert_eq!(s.progress("k").await.unwrap().unwrap().survivors, 2);
    assert_eq!(
        s.slot_log(&bad).await.unwrap(),
        [("k", "c0"), ("k", "c1"), ("j", "c0"), ("k", "c3")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // The verification of chunk 3 finds seed 307: a mismatch, decided by the reference.
    let verifier = result(&k, 3, &[307], &good);
    assert_eq!(
        s.resolve_check(Resolve::Verify(&verifier), &bad, "dropped a survivor")
            .await
            .unwrap(),
        CheckResolution::Mismatch
    );
    assert_eq!(
        s.check_order("k", 3).await.unwrap().map(|o| o.kind),
        Some(CheckKind::Verify),
        "a mismatch settles nothing until the reference decides"
    );
    let reference = result(&k, 3, &[307], &slot("zeus", "referee"));
    let settled = s
        .resolve_check(
            Resolve::Referee {
                reference: &reference,
                verifier: &verifier,
            },
            &bad,
            "dropped a survivor",
        )
        .await
        .unwrap();
    let CheckResolution::Settled {
        first_wrong,
        verifier_wrong,
        mut redo,
    } = settled
    else {
        panic!("{settled:?}")
    };
    assert!(first_wrong && !verifier_wrong);
    redo.sort();
    assert_eq!(
        redo,
        [("j", 0), ("k", 0), ("k", 1)].map(|(a, b)| (a.to_string(), b)),
        "every other chunk the bad slot completed since its last passed check"
    );
    assert_eq!(
        s.check_order("k", 1)
            .await
            .unwrap()
            .map(|o| (o.kind, o.avoid)),
        Some((CheckKind::Redo, bad.clone()))
    );
    let p = s.progress("k").await.unwrap().unwrap();
    assert_eq!(
        (p.mismatches, p.corrected, p.survivors, p.checks_pending),
        (1, 1, 3, 2)
    );
    assert!(!p.finished(), "the redo checks are pending");
    assert!(
        !s.progress("j").await.unwrap().unwrap().finished(),
        "a finished job with a redo is reopened"
    );
    assert_eq!(seeds_of(&s, "k").await, vec![7, 207, 307]);
    assert_eq!(
        s.bad_slots()
            .await
            .unwrap()
            .get(&bad.key())
            .map(String::as_str),
        Some("dropped a survivor")
    );
    assert!(s.slot_log(&bad).await.unwrap().is_empty());
    let claims = s.pending_claims().await.unwrap();
    for (job, c) in &redo {
        assert!(claims.contains(&Claim::of_check(job, *c)), "{claims:?}");
    }

    // The flagged slot's next result is refused, and so is a check it runs: it must
    // quarantine itself.
    assert_eq!(
        s.apply_chunk_result(&result(&j, 0, &[], &bad), None)
            .await
            .unwrap(),
        ApplyOutcome::SlotFlagged
    );
    assert_eq!(
        s.resolve_check(Resolve::Run(&result(&k, 1, &[107], &bad)), &bad, "x")
            .await
            .unwrap(),
        CheckResolution::SlotFlagged
    );

    // A verification's digest alone cannot settle a redo: its survivors are asked for.
    assert_eq!(
        s.resolve_check(Resolve::Verify(&result(&k, 1, &[107], &good)), &bad, "x")
            .await
            .unwrap(),
        CheckResolution::NeedsResult
    );
    // The redos on a good slot: chunk 1 finds seed 107 and replaces the applied result; the
    // others agree and change nothing but the count.
    for (jb, c, seeds) in [(&k, 1u64, vec![107u64]), (&k, 0, vec![7]), (&j, 0, vec![])] {
        assert_eq!(
            s.resolve_check(Resolve::Run(&result(jb, c, &seeds, &good)), &bad, "x")
                .await
                .unwrap(),
            CheckResolution::Settled {
                first_wrong: false,
                verifier_wrong: false,
                redo: vec![]
            }
        );
    }
    let p = s.progress("k").await.unwrap().unwrap();
    assert_eq!(
        (
            p.redone,
            p.corrected,
            p.survivors,
            p.chunks_done,
            p.checks_pending
        ),
        (2, 2, 4, 4, 0)
    );
    assert!(p.finished());
    assert_eq!(seeds_of(&s, "k").await, vec![7, 107, 207, 307]);
    let p = s.progress("j").await.unwrap().unwrap();
    assert_eq!((p.redone, p.corrected, p.survivors), (1, 0, 0));
    assert!(p.finished());

    // Only the self-test that ends the quarantine clears the flag.
    assert!(!s.slot_checked(&bad, false).await.unwrap());
    assert!(s.bad_slots().await.unwrap().contains_key(&bad.key()));
    assert!(s.slot_checked(&bad, true).await.unwrap());
    assert!(s.bad_slots().await.unwrap().is_empty());
    assert_eq!(
        s.apply_chunk_result(&result(&j, 0, &[], &bad), None)
            .await
            .unwrap(),
        ApplyOutcome::AlreadyDone
    );
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn a_wrong_verifier_is_flagged_and_the_applied_result_stands() {
    let s = common::store("verify", "verifier").await;
    let first = slot("zeus", "gpu0");
    let wrong = slot("rig2", "gpu5");
    let j = job(&s, "j", 1, 1.0).await;
    s.apply_chunk_result(&result(&j, 0, &[7, 8], &first), None)
        .await
        .unwrap();
    let verifier = result(&j, 0, &[7], &wrong);
    assert_eq!(
        s.resolve_check(Resolve::Run(&verifier), &first, "r")
            .await
            .unwrap(),
        CheckResolution::Mismatch
    );
    let reference = result(&j, 0, &[7, 8], &slot("zeus", "referee"));
    assert_eq!(
        s.resolve_check(
            Resolve::Referee {
                reference: &reference,
                verifier: &verifier
            },
            &first,
            "r"
        )
        .await
        .unwrap(),
        CheckResolution::Settled {
            first_wrong: false,
            verifier_wrong: true,
            redo: vec![]
        }
    );
    let p = s.progress("j").await.unwrap().unwrap();
    assert_eq!((p.mismatches, p.corrected, p.survivors), (1, 0, 2));
    assert!(p.finished());
    assert_eq!(seeds_of(&s, "j").await, vec![7, 8]);
    let bad = s.bad_slots().await.unwrap();
    assert!(bad.contains_key(&wrong.key()) && !bad.contains_key(&first.key()));
    s.purge_namespace().await.unwrap();
}

#[tokio::test]
async fn a_check_nobody_can_run_is_given_up_as_unverified() {
    let s = common::store("verify", "giveup").await;
    let a = slot("n1", "cpu0");
    let j = job(&s, "j", 1, 1.0).await;
    s.apply_chunk_result(&result(&j, 0, &[7], &a), None)
        .await
        .unwrap();
    let how = Resolve::GiveUp {
        job_id: "j",
        chunk: 0,
        epoch: j.epoch,
    };
    assert!(matches!(
        s.resolve_check(how.clone(), &a, "").await.unwrap(),
        CheckResolution::Settled { .. }
    ));
    assert_eq!(
        s.resolve_check(how, &a, "").await.unwrap(),
        CheckResolution::NotPending
    );
    let p = s.progress("j").await.unwrap().unwrap();
    assert_eq!((p.unverified, p.verified, p.survivors), (1, 0, 1));
    assert!(p.finished());
    s.purge_namespace().await.unwrap();
}
