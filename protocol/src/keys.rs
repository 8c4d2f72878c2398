//! The Redis key schema. Every key starts with `<ns>:`. Job keys are `<ns>:job:<id>:<part>`.
//!
//! | key | type | content |
//! |---|---|---|
//! | `jobs(ns)` | zset | job id -> created_at_ms (index; stale ids pruned on read) |
//! | `job_spec(ns, id)` | string | [`crate::Job`] JSON (immutable) |
//! | `totals(ns, id)` | hash | `chunks_total`, `seeds_total`, `created_at_ms`, `ttl_secs`, `chunks_done`, `seeds_done`, `busy_us`, `survivors` (survivors or flagged seeds recorded), `started_at_ms`, `updated_at_ms`, `finished_at_ms`, `node:<name>` -> chunks, `priority` (rank, 0 = high), `published_upto` (seed jobs: the scheduler's cursor, chunks below it were claimed for publishing and `sched_claims` holds the ones not yet confirmed; script batches: the same cursor over the batch's tasks) |
//! | `done(ns, id)` | set | done members (`c<index>`, `t:<task>`): the exactly-once guard |
//! | `survivors(ns, id)` | hash | flagged seed (decimal) -> record JSON, correlation/analysis (first write wins: dedup by seed) |
//! | `survivor_pieces(ns, id)` | hash | `c<chunk>.<token>.<i>` -> compact survivor piece (sieve jobs) |
//! | `survivor_index(ns, id)` | hash | `c<chunk>` -> `<token> <pieces> <survivors>` (set by the apply, inside the guard) |
//! | `summaries(ns, id)` | hash | member -> chunk summary JSON (analysis/correlation) |
//! | `failures(ns, id)` | hash | reason -> count |
//! | `failure_log(ns, id)` | list | [`crate::FailureEvent`] JSON, newest first, capped |
//! | `dead(ns, id)` | hash | member -> reason, for dead-lettered chunks (removed if a replay succeeds) |
//! | `script_results(ns, id)` | hash | task id -> [`crate::ScriptResult`] JSON |
//! | `cancelled(ns, id)` | string | `1` when cancelled |
//! | `job_events(ns, id)` | pub/sub channel | a message per settled member, for `wait` (not a key) |
//! | `heartbeat(ns, node)` | string | [`crate::NodeHeartbeat`] JSON with a TTL |
//! | `nodes(ns)` | zset | node -> last heartbeat ms |
//! | `throughput_hash(ns)` | hash | `throughput_field(model, family)` -> EMA units/s |
//! | `sched_queue(ns)` | zset | job id with chunks not yet published -> `rank * 2^40 + turn` (lowest first: most urgent, then least recently served) |
//! | `sched_live(ns)` | set | job ids that may have chunks in flight (published, not settled) |
//! | `sched_turn(ns)` | string | counter of picks, the round robin's clock |
//! | `sched_claims(ns)` | zset | `<job>\t<from>\t<to>` claimed chunk windows not yet confirmed by the broker -> claimed_at_ms |
//! | `sched_capacity(ns)` | hash | node -> `<chunks it can hold> <expires_at_ms>` |
//! | `sched_script_queue(ns)`, `sched_script_live(ns)`, `sched_script_capacity(ns)` | zset, set, hash | the same for script batches (their tasks in the batch's order; capacity = script permits) |
//!
//! When a job finishes (every chunk done or dead-lettered) all its keys get the job TTL.

/// Index of jobs (zset by creation time).
pub fn jobs(ns: &str) -> String {
    format!("{ns}:jobs")
}

fn job_key(ns: &str, job: &str, part: &str) -> String {
    format!("{ns}:job:{job}:{part}")
}

/// The job's [`crate::Job`] JSON, written once at creation (`SET NX`).
pub fn job_spec(ns: &str, job: &str) -> String {
    job_key(ns, job, "spec")
}

/// The job's counters and timestamps hash (fields in the table above).
pub fn totals(ns: &str, job: &str) -> String {
    job_key(ns, job, "totals")
}

/// The job's done set: a member is added by the first write of its result, the exactly-once guard.
pub fn done(ns: &str, job: &str) -> String {
    job_key(ns, job, "done")
}

/// Seed (decimal) -> survivor or flagged-record JSON, first write wins.
pub fn survivors(ns: &str, job: &str) -> String {
    job_key(ns, job, "survivors")
}

/// Member -> chunk summary JSON of a correlation / analysis job.
pub fn summaries(ns: &str, job: &str) -> String {
    job_key(ns, job, "summaries")
}

/// Reason -> count of failed attempts.
pub fn failures(ns: &str, job: &str) -> String {
    job_key(ns, job, "failures")
}

/// The newest failure events as JSON, newest first, capped by the store.
pub fn failure_log(ns: &str, job: &str) -> String {
    job_key(ns, job, "failure_log")
}

/// The pub/sub channel the store's scripts publish progress events on. The Lua scripts build it
/// as `KEYS[2] .. ':events'`, i.e. the totals key plus `:events`; keep the two in step.
pub fn job_events(ns: &str, job: &str) -> String {
    format!("{}:events", totals(ns, job))
}

/// Member -> reason for dead-lettered chunks and tasks (they count as settled).
pub fn dead(ns: &str, job: &str) -> String {
    job_key(ns, job, "dead")
}

/// Task id -> [`crate::ScriptResult`] JSON of a script batch.
pub fn script_results(ns: &str, job: &str) -> String {
    job_key(ns, job, "scripts")
}

/// Set to `1` while the job is cancelled.
pub fn cancelled(ns: &str, job: &str) -> String {
    job_key(ns, job, "cancelled")
}

/// Sieve survivor pieces ([`crate::survivors`]): field `c<chunk>.<token>.<i>` -> piece bytes.
/// Written before the chunk's apply (idempotently, under a token of the attempt); only the
/// pieces the apply names in [`survivor_index`] are the chunk's.
pub fn survivor_pieces(ns: &str, job: &str) -> String {
    job_key(ns, job, "pieces")
}

/// Which pieces are each applied chunk's: field `c<chunk>` -> `<token> <pieces> <survivors>`,
/// written by the apply script inside the exactly-once guard.
pub fn survivor_index(ns: &str, job: &str) -> String {
    job_key(ns, job, "piece_index")
}

/// Verification facts of each applied chunk (jobs that verify): field `c<chunk>` ->
/// `<digest> <survivors> <node/slot> <flagged seeds, comma-separated or ->`: what a second run
/// is compared with, and what a correction takes back.
pub fn chunk_facts(ns: &str, job: &str) -> String {
    job_key(ns, job, "facts")
}

/// Pending checks (`crate::check`): field `c<chunk>` -> [`crate::CheckOrder`] JSON. The job is
/// not finished while one is pending.
pub fn checks(ns: &str, job: &str) -> String {
    job_key(ns, job, "checks")
}

/// Slots found wrong by a verification: field `<node>/<slot>` -> why. A flagged slot's results
/// are refused until its self-test passes again, which clears the flag.
pub fn bad_slots(ns: &str) -> String {
    format!("{ns}:bad_slots")
}

/// What a slot completed since its last passed check (self-test or verification), oldest
/// first: `<job>\t<member>` entries, so a slot found wrong has them run again.
pub fn slot_log(ns: &str, slot: &str) -> String {
    format!("{ns}:slot_log:{slot}")
}

/// The field of piece `i` of a chunk's attempt `token` in [`survivor_pieces`].
pub fn piece_field(chunk: u64, token: &str, i: usize) -> String {
    format!("c{chunk}.{token}.{i}")
}

/// Every key of a job (what expiry and purge touch), in the order the Lua scripts take them.
pub fn all_job_keys(ns: &str, job: &str) -> Vec<String> {
    vec![
        job_spec(ns, job),
        totals(ns, job),
        done(ns, job),
        survivors(ns, job),
        summaries(ns, job),
        failures(ns, job),
        failure_log(ns, job),
        dead(ns, job),
        script_results(ns, job),
        cancelled(ns, job),
        survivor_pieces(ns, job),
        survivor_index(ns, job),
        chunk_facts(ns, job),
        checks(ns, job),
    ]
}

/// The node's latest [`crate::NodeHeartbeat`] JSON; expires when the node stops writing it.
pub fn heartbeat(ns: &str, node: &str) -> String {
    format!("{ns}:node:{node}:heartbeat")
}

/// Index of nodes ever seen (zset by last heartbeat).
pub fn nodes(ns: &str) -> String {
    format!("{ns}:nodes")
}

/// Learned throughput, one hash per namespace.
pub fn throughput_hash(ns: &str) -> String {
    format!("{ns}:throughput")
}

/// Field of [`throughput_hash`] for a GPU model (or `cpu`) and a family: `<model>|<family>`.
pub fn throughput_field(gpu_model: &str, family: &str) -> String {
    format!("{gpu_model}|{family}")
}

/// `(key, field)` of the learned throughput of `(gpu_model, family)`.
pub fn throughput(ns: &str, gpu_model: &str, family: &str) -> (String, String) {
    (throughput_hash(ns), throughput_field(gpu_model, family))
}

/// Jobs with chunks still to publish, ordered by priority then turn (see [`crate::schedule`]).
pub fn sched_queue(ns: &str) -> String {
    format!("{ns}:sched:queue")
}

/// Jobs that may have chunks in flight (the scheduler sums them to know how full the queue is).
pub fn sched_live(ns: &str) -> String {
    format!("{ns}:sched:live")
}

/// The scheduler's pick counter (round robin among jobs of one priority).
pub fn sched_turn(ns: &str) -> String {
    format!("{ns}:sched:turn")
}

/// Claimed windows not yet confirmed by the broker: republished when they go stale.
pub fn sched_claims(ns: &str) -> String {
    format!("{ns}:sched:claims")
}

/// Live nodes' seed capacity (chunks their slots hold at once), each with an expiry.
pub fn sched_capacity(ns: &str) -> String {
    format!("{ns}:sched:capacity")
}

/// Script batches with tasks still to publish (the scripts lane's [`sched_queue`]).
pub fn sched_script_queue(ns: &str) -> String {
    format!("{ns}:sched:scripts:queue")
}

/// Script batches that may have tasks in flight (the scripts lane's [`sched_live`]).
pub fn sched_script_live(ns: &str) -> String {
    format!("{ns}:sched:scripts:live")
}

/// Live nodes' script capacity (tasks they run at once), each with an expiry.
pub fn sched_script_capacity(ns: &str) -> String {
    format!("{ns}:sched:scripts:capacity")
}

/// Pattern matching every key of a namespace (teardown, test cleanup), and no other's: a
/// namespace holds neither `:` nor a glob character ([`crate::validate_identifier`]), so the
/// pattern of `a` cannot match the keys of `a.b` (`a.b:...`) or of `a:b`.
pub fn namespace_pattern(ns: &str) -> String {
    format!("{ns}:*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_pattern_is_exact() {
        // What the pattern relies on: no separator or glob character gets into a namespace.
        for bad in ["a:b", "a*", "a?", "a[b]", "a\\b"] {
            assert!(
                crate::validate_identifier("namespace", bad).is_err(),
                "{bad}"
            );
        }
        let pattern = namespace_pattern("a");
        assert!(jobs("a.b")
            .strip_prefix(&pattern[..pattern.len() - 1])
            .is_none());
        assert!(jobs("a")
            .strip_prefix(&pattern[..pattern.len() - 1])
            .is_some());
    }
}
