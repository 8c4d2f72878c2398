//! Script results against the real Redis: a batch keeps at most its cap of results
//! (`[jobs] max_batch_output_bytes`), a result past it is refused and counts nothing, a failed
//! attempt past it is kept without its output, and a duplicate of a done task is still
//! answered as done.

mod common;

use seedq_protocol::{JobSpec, ScriptOutput, ScriptResult};
use seedq_store::ApplyOutcome;

/// Task `index`'s result, successful (with `output` bytes of output) or failed.
fn result(job: &seedq_protocol::Job, index: usize, output: usize, success: bool) -> ScriptResult {
    let JobSpec::Scripts(batch) = &job.spec else {
        unreachable!()
    };
    let task = job.task_message(&batch.tasks[index].task_id).unwrap();
    let mut r = ScriptResult::new(&task, "n1");
    r.success = success;
    r.output = Some(ScriptOutput::new("out.json", &vec![b'x'; output]));
    r
}

#[tokio::test]
async fn a_batch_keeps_at_most_its_cap_of_results_and_nothing_is_counted_past_it() {
    let s = common::store("scripts", "cap").await;
    let job = common::batch(&s, "b", 5).await;
    let full = serde_json::to_string(&result(&job, 0, 2000, true))
        .unwrap()
        .len() as u64;
    // Room for two outputs and a little more: not a third, but small records still fit.
    let s = s.with_batch_output_cap(2 * full + 2000);
    for task in 0..2 {
        assert_eq!(
            s.apply_script_result(&result(&job, task, 2000, true))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
    }
    assert_eq!(
        s.apply_script_result(&result(&job, 2, 2000, true))
            .await
            .unwrap(),
        ApplyOutcome::BatchOutputLimit,
        "a third output would pass the cap"
    );
    let p = s.progress("b").await.unwrap().unwrap();
    assert_eq!(p.chunks_done, 2, "the refused task counts nothing");
    assert!(s.script_result("b", "b-2").await.unwrap().is_none());
    // A redelivered done task is answered as done, not refused.
    assert_eq!(
        s.apply_script_result(&result(&job, 0, 2000, true))
            .await
            .unwrap(),
        ApplyOutcome::AlreadyDone
    );
    // A failed attempt past the cap is kept without its output; a small one in full.
    assert!(!s
        .save_script_attempt(&result(&job, 3, 2000, false))
        .await
        .unwrap());
    let kept = s.script_result("b", "b-3").await.unwrap().unwrap();
    assert!(kept.output.is_none() && !kept.success, "{kept:?}");
    assert!(s
        .save_script_attempt(&result(&job, 4, 1, false))
        .await
        .unwrap());
    assert!(s
        .script_result("b", "b-4")
        .await
        .unwrap()
        .unwrap()
        .output
        .is_some());
    // Without a cap the same result is taken.
    let unlimited = s.with_batch_output_cap(0);
    assert_eq!(
        unlimited
            .apply_script_result(&result(&job, 2, 2000, true))
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    unlimited.purge_namespace().await.unwrap();
}
