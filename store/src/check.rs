//! Verification by redundancy in Redis (`seedq_protocol::check`, `docs/verification.md`).
//!
//! - **The draw.** When a seed chunk's result is applied (`lua::APPLY`) and its job verifies
//!   (`verify_fraction` in its totals, set when it is scheduled), the result's *facts* are kept
//!   (`keys::chunk_facts`: digest, survivors, the slot, flagged seeds) and the chunk is logged
//!   for its slot (`keys::slot_log`). A uniform draw made by the store at that moment, after the
//!   result exists, decides whether the chunk is verified: if so a check order is stored
//!   (`keys::checks`) and claimed in the scheduler's claims, in the same script, so the check
//!   message is published even if the applier dies (a heartbeat republishes stale claims).
//! - **The settle** ([`Store::resolve_check`], `lua::RESOLVE_CHECK`): a verification that
//!   matches counts `verified` (and vouches for that chunk only: a slot that drops a survivor
//!   now and then gets most chunks right); one that differs is decided by the CPU reference, whose result replaces the applied one if that was
//!   wrong (the correction path moves the job's totals by the difference, so every chunk still
//!   counts once), flags the wrong slot(s) in `keys::bad_slots`, and turns every chunk a
//!   wrong slot completed since its last passed self-test (its log, which
//!   [`Store::slot_checked`] clears) into a redo check. A redo's result
//!   replaces the applied one when it differs.
//! - **The flag** makes the next apply of the slot fail (`ApplyOutcome::SlotFlagged`), so it
//!   quarantines itself; its self-test passing again clears it ([`Store::slot_checked`]).
//! - A job is not finished while a check is pending.

use std::collections::BTreeMap;

use redis::Script;
use seedq_protocol::{keys, result_digest, CheckKind, CheckOrder, ChunkResult, SlotRef};

use crate::{Result, Store, StoreError};

static RESOLVE_CHECK: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(crate::lua::RESOLVE_CHECK));
static SLOT_CHECKED: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(crate::lua::SLOT_CHECKED));

/// The slot that produced a result.
pub(crate) fn slot_of(r: &ChunkResult) -> SlotRef {
    SlotRef {
        node: r.node.clone(),
        slot: r.slot.clone(),
        backend: r.backend.clone(),
    }
}

/// A result's facts: `<digest> <survivors> <node/slot> <flagged seeds, comma-separated, or ->`.
pub(crate) fn facts(r: &ChunkResult) -> String {
    let flagged = if r.flagged.is_empty() {
        "-".to_string()
    } else {
        r.flagged
            .iter()
            .map(|f| f.seed.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{} {} {} {flagged}",
        result_digest(r),
        r.survivor_count,
        slot_of(r).key()
    )
}

/// The order of a verification of `r`: run it anywhere but on `r`'s slot.
pub(crate) fn verify_order(r: &ChunkResult) -> String {
    order_json(&CheckOrder {
        kind: CheckKind::Verify,
        avoid: slot_of(r),
        hops: 0,
    })
}

fn order_json(order: &CheckOrder) -> String {
    serde_json::to_string(order).expect("check order serializes")
}

/// A uniform draw in [0, 1) from the OS's randomness (as `uuid` v4 takes it): made when the
/// result is applied, so no slot can know beforehand which of its chunks are verified.
pub(crate) fn draw() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// How a check is settled.
#[derive(Debug, Clone)]
pub enum Resolve<'a> {
    /// A second run's result, written in full (a redo takes it where it differs; a
    /// verification compares it).
    Run(&'a ChunkResult),
    /// A verification run's result, compared by digest alone: its survivors are not written,
    /// since a matching run is dropped and a differing one goes to the referee. Answered
    /// [`CheckResolution::NeedsResult`] if the chunk's pending check has become a redo.
    Verify(&'a ChunkResult),
    /// The CPU reference's result for a verification whose two runs differed, with the
    /// verifying run.
    Referee {
        /// The CPU reference's result: the decision.
        reference: &'a ChunkResult,
        /// The verifying run's result, which differed from the applied one.
        verifier: &'a ChunkResult,
    },
    /// Nobody else could run it, or its message failed for good: counted as unverified.
    GiveUp {
        /// The job.
        job_id: &'a str,
        /// The chunk index.
        chunk: u64,
        /// The job life the check message belongs to.
        epoch: u64,
    },
}

/// What [`Store::resolve_check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResolution {
    /// Settled. After a referee decision: which runs were wrong, and the redo checks created
    /// for the wrong first slot (their claims are recorded; publish them, then release).
    Settled {
        /// The applied result was wrong (and has been replaced by the reference's).
        first_wrong: bool,
        /// The verifying run was wrong.
        verifier_wrong: bool,
        /// Redo checks created, `(job, chunk)`.
        redo: Vec<(String, u64)>,
    },
    /// The verification's two runs differ: decide with the reference ([`Resolve::Referee`]).
    Mismatch,
    /// No such check is pending (settled before: a duplicate delivery).
    NotPending,
    /// No such job in Redis.
    UnknownJob,
    /// Another life of the job id.
    Stale,
    /// The running slot has been found wrong: nothing settled, it must quarantine itself.
    SlotFlagged,
    /// A [`Resolve::Verify`] met a redo (the chunk's slot was found wrong meanwhile): nothing
    /// settled; settle it again with [`Resolve::Run`], which writes the result in full.
    NeedsResult,
}

impl Store {
    /// The pending check of a job's chunk, if any.
    pub async fn check_order(&self, job: &str, chunk: u64) -> Result<Option<CheckOrder>> {
        let key = keys::checks(&self.ns, job);
        let member = seedq_protocol::chunk_member(chunk);
        let json: Option<String> = self
            .run(|mut c| {
                let (k, m) = (key.clone(), member.clone());
                async move { Ok(redis::cmd("HGET").arg(k).arg(m).query_async(&mut c).await?) }
            })
            .await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                message: format!("check order of {member}: {e}"),
            })
        })
        .transpose()
    }

    /// Settles a check (see the module doc). `checked` is the slot whose applied result is
    /// being checked (the order's `avoid`); `reason` is what a slot found wrong is flagged with.
    pub async fn resolve_check(
        &self,
        how: Resolve<'_>,
        checked: &SlotRef,
        reason: &str,
    ) -> Result<CheckResolution> {
        let (result, mode, verifier) = match how {
            Resolve::Run(r) => (Some(r), "run", None),
            Resolve::Verify(r) => (Some(r), "verify", None),
            Resolve::Referee {
                reference,
                verifier,
            } => (Some(reference), "referee", Some(verifier)),
            Resolve::GiveUp { .. } => (None, "giveup", None),
        };
        let (job_id, chunk, epoch) = match (&how, result) {
            (
                Resolve::GiveUp {
                    job_id,
                    chunk,
                    epoch,
                },
                _,
            ) => (job_id.to_string(), *chunk, *epoch),
            (_, Some(r)) => (r.job_id.clone(), r.chunk, r.epoch),
            (_, None) => unreachable!("every mode but a give-up has a result"),
        };
        let full = !matches!(how, Resolve::Verify(_));
        let entry = match result.filter(|_| full) {
            Some(r) => self.write_pieces(r).await?,
            None => String::new(),
        };
        let member = seedq_protocol::chunk_member(chunk);
        let redo = |avoid: &SlotRef| {
            order_json(&CheckOrder {
                kind: CheckKind::Redo,
                avoid: avoid.clone(),
                hops: 0,
            })
        };
        let verifier_slot = verifier.map(slot_of);
        let mut script = RESOLVE_CHECK.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, &job_id) {
            script.key(k);
        }
        script
            .key(keys::bad_slots(&self.ns))
            .key(keys::sched_claims(&self.ns))
            .key(keys::slot_log(&self.ns, &checked.key()))
            .key(keys::slot_log(
                &self.ns,
                &verifier_slot.as_ref().unwrap_or(checked).key(),
            ));
        let records = result
            .filter(|_| full)
            .map(ChunkResult::seed_records)
            .unwrap_or_default();
        script
            .arg(&member)
            .arg(mode)
            .arg(result.map(result_digest).unwrap_or_default())
            .arg(result.map(facts).unwrap_or_default())
            .arg(&entry)
            .arg(result.map_or(0, |r| r.survivor_count))
            .arg(seedq_protocol::now_ms())
            .arg(epoch)
            .arg(result.map(crate::summary_json).unwrap_or_default())
            .arg(result.map_or(0, |r| (r.duration_secs.max(0.0) * 1e6).round() as u64))
            .arg(&job_id)
            .arg(&self.ns)
            .arg(verifier.map(result_digest).unwrap_or_default())
            .arg(verifier_slot.as_ref().map(SlotRef::key).unwrap_or_default())
            .arg(reason)
            .arg(redo(checked))
            .arg(verifier_slot.as_ref().map(redo).unwrap_or_default())
            .arg(records.len());
        for (seed, json) in &records {
            script.arg(*seed).arg(json);
        }
        let reply: Vec<redis::Value> = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        let corrupt = |message: &str| StoreError::Corrupt {
            key: keys::checks(&self.ns, &job_id),
            message: message.to_string(),
        };
        let int = |v: &redis::Value| -> Result<i64> {
            redis::FromRedisValue::from_redis_value(v.clone())
                .map_err(|_| corrupt("a non-numeric reply from the check script"))
        };
        let code = reply.first().map(int).transpose()?.unwrap_or(-1);
        Ok(match code {
            1 => {
                let flag = |i: usize| reply.get(i).map(int).transpose().map(|v| v == Some(1));
                let mut redo = Vec::new();
                for pair in reply.get(3..).unwrap_or_default().chunks(2) {
                    let [job, member] = pair else {
                        return Err(corrupt("odd redo list from the check script"));
                    };
                    let job: String = redis::FromRedisValue::from_redis_value(job.clone())
                        .map_err(|_| corrupt("a job id that is not text"))?;
                    let member: String = redis::FromRedisValue::from_redis_value(member.clone())
                        .map_err(|_| corrupt("a member that is not text"))?;
                    let chunk = member
                        .strip_prefix('c')
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| corrupt("a redo member that is not a chunk"))?;
                    redo.push((job, chunk));
                }
                CheckResolution::Settled {
                    first_wrong: flag(1)?,
                    verifier_wrong: flag(2)?,
                    redo,
                }
            }
            3 => CheckResolution::Mismatch,
            0 => CheckResolution::NotPending,
            -2 => CheckResolution::Stale,
            -4 => CheckResolution::SlotFlagged,
            -5 => CheckResolution::NeedsResult,
            _ => CheckResolution::UnknownJob,
        })
    }

    /// A slot passed its known-answer self-test: its log of chunks since the last one starts
    /// over.
    /// `ends_quarantine` also clears its flag (the self-test that lets a quarantined slot back);
    /// otherwise a flagged slot keeps flag and log. Returns whether the log was cleared.
    pub async fn slot_checked(&self, slot: &SlotRef, ends_quarantine: bool) -> Result<bool> {
        let mut script = SLOT_CHECKED.prepare_invoke();
        script
            .key(keys::bad_slots(&self.ns))
            .key(keys::slot_log(&self.ns, &slot.key()))
            .arg(slot.key())
            .arg(if ends_quarantine { "1" } else { "0" });
        let cleared: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(cleared == 1)
    }

    /// Slots flagged wrong by a verification (`<node>/<slot>` -> why), not yet back.
    pub async fn bad_slots(&self) -> Result<BTreeMap<String, String>> {
        let key = keys::bad_slots(&self.ns);
        self.run(|mut c| {
            let k = key.clone();
            async move { Ok(redis::cmd("HGETALL").arg(k).query_async(&mut c).await?) }
        })
        .await
    }

    /// The chunks a slot completed since its last passed self-test (`(job, member)`, oldest first).
    pub async fn slot_log(&self, slot: &SlotRef) -> Result<Vec<(String, String)>> {
        let key = keys::slot_log(&self.ns, &slot.key());
        let entries: Vec<String> = self
            .run(|mut c| {
                let k = key.clone();
                async move {
                    Ok(redis::cmd("LRANGE")
                        .arg(k)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut c)
                        .await?)
                }
            })
            .await?;
        Ok(entries
            .iter()
            .filter_map(|e| e.split_once('\t'))
            .map(|(j, m)| (j.to_string(), m.to_string()))
            .collect())
    }
}
