//! Turning a delivery into runnable work: parsing and classifying bad messages, and the per-job
//! cache (jobs are immutable once created, so each is loaded from Redis once per node; the
//! cancelled flag is re-read at most once a second per job).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seedq_kernels::analysis::{AnalysisKind, AnalysisSpec};
use seedq_kernels::{Family, SeedSet, SieveError, SieveSpec};
use seedq_protocol::{ChunkMessage, FailureReason, Job, JobKey, JobSpec, ProtocolError};
use seedq_store::{Store, StoreError};

/// Why a message cannot be run, ever (goes to the dead-letter queue at once).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Why, for `x-seedq-error` and failure counts.
    pub reason: FailureReason,
    /// Human explanation for `x-seedq-error-detail`.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// A job spec ready to run.
#[derive(Debug, Clone)]
pub enum Prepared {
    Sieve(Arc<SieveSpec>),
    Analysis(AnalysisKind, Arc<AnalysisSpec>),
}

impl Prepared {
    fn seed_space_end(&self) -> u128 {
        match self {
            Prepared::Sieve(s) => s.family.family().seed_space_end(),
            Prepared::Analysis(_, s) => s.family.family().seed_space_end(),
        }
    }

    /// Work units per seed (learned throughput units).
    pub fn work_per_seed(&self) -> f64 {
        match self {
            Prepared::Sieve(s) => seedq_protocol::sieve_work_per_seed(s),
            Prepared::Analysis(_, s) => s.units_per_seed() as f64,
        }
    }

    /// Checks a chunk's seeds against the family's seed space.
    pub fn check_seeds(&self, seeds: &SeedSet) -> Result<(), Rejection> {
        if let Prepared::Sieve(spec) = self {
            return spec.validate_seeds(seeds).map_err(|e| match e {
                SieveError::EmptySeedRange { .. } => {
                    Rejection::new(FailureReason::EmptySeedRange, e.to_string())
                }
                _ => Rejection::new(FailureReason::SeedsOutOfRange, e.to_string()),
            });
        }
        let space = self.seed_space_end();
        let (lo, hi) = match seeds {
            SeedSet::Range { start, end } if start >= end => {
                return Err(Rejection::new(
                    FailureReason::EmptySeedRange,
                    format!("seed range is empty: start {start} >= end {end}"),
                ))
            }
            SeedSet::Range { start, end } => (*start as u128, *end as u128),
            SeedSet::List(l) => match (l.iter().min(), l.iter().max()) {
                (Some(a), Some(b)) => (*a as u128, *b as u128 + 1),
                _ => return Ok(()),
            },
        };
        if hi > space {
            return Err(Rejection::new(
                FailureReason::SeedsOutOfRange,
                format!("seed range [{lo}, {hi}) is outside the seed space [0, {space})"),
            ));
        }
        Ok(())
    }
}

/// Validates a job spec for seed work.
pub fn prepare(spec: &JobSpec) -> Result<Prepared, Rejection> {
    match spec {
        JobSpec::Sieve(s) => {
            s.validate()
                .map_err(|e| Rejection::new(sieve_error_reason(&e), e.to_string()))?;
            Ok(Prepared::Sieve(Arc::new(s.clone())))
        }
        JobSpec::Correlation(v) | JobSpec::Analysis(v) => {
            let kind = if matches!(spec, JobSpec::Correlation(_)) {
                AnalysisKind::Correlation
            } else {
                AnalysisKind::Analysis
            };
            let parsed: AnalysisSpec = serde_json::from_value(v.clone()).map_err(|e| {
                if let Some(r) = unknown_family_in(v) {
                    return r;
                }
                Rejection::new(FailureReason::InvalidSpec, format!("{kind:?} spec: {e}"))
            })?;
            parsed
                .validate(kind)
                .map_err(|e| Rejection::new(FailureReason::InvalidSpec, e.to_string()))?;
            Ok(Prepared::Analysis(kind, Arc::new(parsed)))
        }
        JobSpec::Scripts(_) => Err(Rejection::new(
            FailureReason::WrongQueue,
            "a script batch cannot run as seed work (published to the seed queue?)",
        )),
    }
}

fn sieve_error_reason(e: &SieveError) -> FailureReason {
    match e {
        SieveError::UnknownFamily(_) => FailureReason::UnknownFamily,
        SieveError::EmptyWindow => FailureReason::EmptyWindow,
        SieveError::InvalidThreshold(_) => FailureReason::InvalidThreshold,
        SieveError::SeedOutOfRange { .. } => FailureReason::SeedsOutOfRange,
        SieveError::EmptySeedRange { .. } => FailureReason::EmptySeedRange,
        _ => FailureReason::InvalidSpec,
    }
}

/// `{"family": "nope"}` or `{"family": {"family": "nope"}}` in a spec object.
fn unknown_family_in(spec: &serde_json::Value) -> Option<Rejection> {
    let name = match spec.get("family")? {
        serde_json::Value::String(s) => s.as_str(),
        obj => obj.get("family")?.as_str()?,
    };
    Family::parse(name)
        .err()
        .map(|e| Rejection::new(FailureReason::UnknownFamily, e.to_string()))
}

/// With a job key configured, the delivery must carry a valid signature of its body before
/// anything of it is parsed or run (see `seedq_protocol::signing`); without one, every delivery
/// passes (the node warned at start that jobs are unauthenticated).
pub fn check_signature(
    key: Option<&JobKey>,
    body: &[u8],
    headers: &seedq_broker::Headers,
) -> Result<(), Rejection> {
    let Some(key) = key else {
        return Ok(());
    };
    key.verify(
        body,
        headers
            .get(seedq_protocol::signing::SIGNATURE_HEADER)
            .map(String::as_str),
    )
    .map_err(|e| Rejection::new(FailureReason::BadSignature, e.to_string()))
}

/// With a job key configured, the job's record must carry a valid seal: a message signed by a
/// node's scheduler names a job, and the record says what runs, so a record written or edited
/// without the key runs nothing (see `seedq_protocol::signing`).
pub fn check_seal(key: Option<&JobKey>, job: &Job) -> Result<(), Rejection> {
    seedq_protocol::signing::verify_job_with(key, job)
        .map_err(|e| Rejection::new(FailureReason::BadSignature, e.to_string()))
}

/// Parses a seed-queue body; every failure is a [`Rejection`] naming what is wrong.
pub fn parse_chunk(body: &[u8]) -> Result<ChunkMessage, Rejection> {
    match ChunkMessage::from_json(body) {
        Ok(msg) => Ok(msg),
        Err(ProtocolError::UnsupportedVersion { .. }) => Err(Rejection::new(
            FailureReason::UnsupportedVersion,
            ChunkMessage::from_json(body).unwrap_err().to_string(),
        )),
        Err(ProtocolError::InvalidIdentifier { what, value }) => Err(Rejection::new(
            FailureReason::InvalidJobId,
            format!("invalid {what} '{value}'"),
        )),
        Err(e) => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Err(Rejection::new(
                    FailureReason::MalformedJson,
                    format!("the body is not valid JSON: {e}"),
                ));
            };
            // The message is JSON; if the embedded spec is what broke it, say how.
            if let Some(spec) = value.get("spec").filter(|s| !s.is_null()) {
                if let Err(spec_err) = serde_json::from_value::<JobSpec>(spec.clone()) {
                    let inner = spec.as_object().and_then(|o| o.values().next());
                    if let Some(r) = inner.and_then(unknown_family_in) {
                        return Err(r);
                    }
                    let text = spec_err.to_string();
                    let reason = if text.contains("threshold") {
                        FailureReason::InvalidThreshold
                    } else {
                        FailureReason::InvalidSpec
                    };
                    return Err(Rejection::new(reason, format!("embedded spec: {text}")));
                }
            }
            Err(Rejection::new(
                FailureReason::MalformedMessage,
                format!("not a seedq chunk message: {e}"),
            ))
        }
    }
}

/// A job as a node uses it.
pub struct CachedJob {
    pub job: Arc<Job>,
    /// With a job key: whether the record's seal holds (`check_seal`), checked once per load.
    pub sealed: Result<(), Rejection>,
    pub prepared: Result<Prepared, Rejection>,
    /// Learned-throughput family key.
    pub family_key: Option<String>,
}

/// Per-node cache of jobs and their cancelled flags.
pub struct JobCache {
    store: Store,
    key: Option<JobKey>,
    jobs: Mutex<HashMap<String, Arc<CachedJob>>>,
    cancelled: Mutex<HashMap<String, (bool, Instant)>>,
}

/// How stale a cached "not cancelled" may be.
const CANCEL_REFRESH: Duration = Duration::from_secs(1);
/// Jobs kept before the cache is cleared (jobs are small; this bounds a long-lived node).
const MAX_CACHED_JOBS: usize = 1024;

impl JobCache {
    pub fn new(store: Store, key: Option<JobKey>) -> JobCache {
        JobCache {
            store,
            key,
            jobs: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(HashMap::new()),
        }
    }

    /// The job, loading it from Redis on first use. `Ok(None)`: no such job in Redis. A cached
    /// job of another epoch than the message's is read again: the id may have been re-created
    /// since (the caller still compares the epochs, since the message may be the stale one).
    pub async fn get(&self, id: &str, epoch: u64) -> Result<Option<Arc<CachedJob>>, StoreError> {
        if let Some(hit) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            if hit.job.epoch == epoch {
                return Ok(Some(hit.clone()));
            }
        }
        let Some(job) = self.store.load_job(id).await? else {
            return Ok(None);
        };
        // Preparing a spec (and sealing a long seed list) costs time in its sizes: off the
        // runtime's threads.
        let key = self.key.clone();
        let cached = tokio::task::spawn_blocking(move || CachedJob {
            sealed: check_seal(key.as_ref(), &job),
            prepared: prepare(&job.spec),
            family_key: seedq_protocol::throughput_family_key(&job.spec),
            job: Arc::new(job),
        })
        .await
        .map(Arc::new)
        .map_err(|e| StoreError::Corrupt {
            key: id.to_string(),
            message: format!("preparing the stored job failed: {e}"),
        })?;
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.len() >= MAX_CACHED_JOBS {
            jobs.clear();
        }
        jobs.insert(id.to_string(), cached.clone());
        Ok(Some(cached))
    }

    /// Drops a cached "cancelled" (the store said the cancel was lifted by a `resume`).
    pub fn forget_cancelled(&self, id: &str) {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether the job is cancelled (`true` is cached until the store says otherwise: see
    /// [`JobCache::forget_cancelled`]).
    pub async fn is_cancelled(&self, id: &str) -> Result<bool, StoreError> {
        if let Some((flag, at)) = self
            .cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            if *flag || at.elapsed() < CANCEL_REFRESH {
                return Ok(*flag);
            }
        }
        let flag = self.store.is_cancelled(id).await?;
        let mut map = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED_JOBS {
            map.clear();
        }
        map.insert(id.to_string(), (flag, Instant::now()));
        Ok(flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk_with_spec(spec: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"v": 1, "job_id": "j", "kind": "sieve", "chunk": 0,
            "seeds": {"range": {"start": 0, "end": 10}}, "spec": spec}))
        .unwrap()
    }

    fn sieve(family: &str, draws: serde_json::Value, threshold: &str) -> serde_json::Value {
        json!({"sieve": {"family": {"family": family}, "draws": draws, "modulus": 1000, "offset": 0,
            "skip_min": 0, "skip_max": 3, "threshold": threshold}})
    }

    #[test]
    fn bad_bodies_are_classified() {
        assert_eq!(
            parse_chunk(b"\x00 nope").unwrap_err().reason,
            FailureReason::MalformedJson
        );
        assert_eq!(
            parse_chunk(br#"{"v":1}"#).unwrap_err().reason,
            FailureReason::MalformedMessage
        );
        assert_eq!(
            parse_chunk(&chunk_with_spec(sieve("nope", json!([1]), "0.5")))
                .unwrap_err()
                .reason,
            FailureReason::UnknownFamily
        );
        assert_eq!(
            parse_chunk(&chunk_with_spec(sieve("mt19937", json!([1]), "1.5")))
                .unwrap_err()
                .reason,
            FailureReason::InvalidThreshold
        );
        assert_eq!(
            parse_chunk(&chunk_with_spec(sieve("mt19937", json!([1]), "0")))
                .unwrap_err()
                .reason,
            FailureReason::InvalidThreshold
        );
        assert_eq!(
            parse_chunk(br#"{"v":7,"job_id":"j","kind":"sieve","chunk":0,"seeds":{"list":[]}}"#)
                .unwrap_err()
                .reason,
            FailureReason::UnsupportedVersion
        );
    }

    #[test]
    fn invalid_specs_are_rejected_before_running() {
        let msg = parse_chunk(&chunk_with_spec(sieve("mt19937", json!([]), "0.5"))).unwrap();
        assert_eq!(
            prepare(msg.spec.as_ref().unwrap()).unwrap_err().reason,
            FailureReason::EmptyWindow
        );
        let ok = parse_chunk(&chunk_with_spec(sieve("mt19937", json!([1, 2]), "0.5"))).unwrap();
        let prepared = prepare(ok.spec.as_ref().unwrap()).unwrap();
        let outside = SeedSet::Range {
            start: 4294967290,
            end: 4294967400,
        };
        assert_eq!(
            prepared.check_seeds(&outside).unwrap_err().reason,
            FailureReason::SeedsOutOfRange
        );
        assert!(prepared
            .check_seeds(&SeedSet::Range { start: 0, end: 10 })
            .is_ok());
    }
}
