//! The job-level record stored once per job in Redis (`keys::job_spec`), and the chunk plan.
//!
//! A job is immutable once created: consumers cache it by id, and re-enqueueing the same id is
//! only allowed with the same identity ([`Job::identity_json`]). The chunk plan (`chunk_size`,
//! `chunk_count`) is stored with the job; a producer that finds the job already present must
//! publish with the STORED plan (chunk `i` always means the same seeds), which is what makes a
//! resumed or repeated enqueue unable to double count.

use serde::{Deserialize, Serialize};

use seedq_core::{SeedSet, SieveSpec};

use crate::script::ScriptJob;
use crate::{validate_identifier, ProtocolError, PROTOCOL_VERSION};

/// What kind of work a job is. Also the value of the `x-seedq-kind` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Find the seeds whose generator reproduces a draw window ([`JobSpec::Sieve`]).
    Sieve,
    /// Per-seed lag autocorrelation test ([`JobSpec::Correlation`]).
    Correlation,
    /// Per-seed chi-square, runs and autocorrelation tests ([`JobSpec::Analysis`]).
    Analysis,
    /// A batch of script tasks ([`JobSpec::Scripts`]); not seed work.
    Scripts,
}

impl JobKind {
    /// The snake_case name: the serde form, the `x-seedq-kind` header and the `kind` progress field.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Sieve => "sieve",
            JobKind::Correlation => "correlation",
            JobKind::Analysis => "analysis",
            JobKind::Scripts => "scripts",
        }
    }

    /// Seed work (sieve, correlation, analysis) goes to `<ns>.seeds`; scripts do not.
    pub fn is_seed_work(self) -> bool {
        !matches!(self, JobKind::Scripts)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The work-defining part of a job. Serialized externally tagged: `{"sieve": {...}}`.
///
/// `Correlation` and `Analysis` carry their spec as JSON whose schema is
/// `seedq_core::analysis::AnalysisSpec`; the protocol only transports it (the consumer parses and
/// validates it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSpec {
    /// A sieve: the validated [`SieveSpec`] every chunk runs.
    Sieve(SieveSpec),
    /// A `correlation` job's `AnalysisSpec` as JSON.
    Correlation(serde_json::Value),
    /// An `analysis` job's `AnalysisSpec` as JSON.
    Analysis(serde_json::Value),
    /// A batch of script tasks, one chunk each.
    Scripts(ScriptBatch),
}

impl JobSpec {
    /// The [`JobKind`] matching the variant.
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Sieve(_) => JobKind::Sieve,
            JobSpec::Correlation(_) => JobKind::Correlation,
            JobSpec::Analysis(_) => JobKind::Analysis,
            JobSpec::Scripts(_) => JobKind::Scripts,
        }
    }

    /// The family name for headers and throughput keys, where the job has one.
    pub fn family_name(&self) -> Option<String> {
        match self {
            JobSpec::Sieve(s) => Some(s.family.family().name().to_string()),
            JobSpec::Correlation(v) | JobSpec::Analysis(v) => family_of_value(v),
            JobSpec::Scripts(_) => None,
        }
    }
}

/// Reads `family` from a correlation/analysis spec: either `"family": "mt19937"` or
/// `"family": {"family": "mt19937", ...}` (a serialized `FamilyConfig`).
fn family_of_value(v: &serde_json::Value) -> Option<String> {
    match v.get("family")? {
        serde_json::Value::String(s) => Some(s.clone()),
        obj => obj.get("family")?.as_str().map(str::to_string),
    }
}

/// Work units of one seed of a sieve: draw comparisons, `k x skip span` for constant skip and
/// `k x sum of min(2*tolerance+1, span)` over the strategies for variable skip, times the
/// number of offsets of an offset range. Learned
/// throughput is kept in these units per second, so one measurement sizes chunks for any window
/// and skip range. (The producer's planner and the consumer's EMA samples both use this.)
pub fn sieve_work_per_seed(spec: &SieveSpec) -> f64 {
    // Every offset of a range multiplies the tests (the stream itself is generated once).
    let k = spec.k() as f64 * (spec.last_offset() - spec.offset + 1) as f64;
    let span = (spec.skip_max as u64 - spec.skip_min as u64 + 1) as f64;
    match &spec.skip_mode {
        seedq_core::SkipMode::Constant => k * span,
        seedq_core::SkipMode::Variable { strategies } => {
            let widths: f64 = strategies
                .iter()
                .map(|s| (2.0 * s.skip_tolerance as f64 + 1.0).min(span))
                .sum();
            k * widths.max(1.0)
        }
    }
}

/// The learned-throughput family key of a job: the family name for sieves,
/// `<kind>:<family>` for correlation / analysis (different work units).
pub fn throughput_family_key(spec: &JobSpec) -> Option<String> {
    let family = spec.family_name()?;
    Some(match spec.kind() {
        JobKind::Sieve => family,
        kind => format!("{kind}:{family}"),
    })
}

/// A batch of script tasks (the jobs file). The batch id is the job id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptBatch {
    /// One entry per task, in jobs-file order; task ids are unique within the batch.
    pub tasks: Vec<ScriptJob>,
    /// `--output-dir` given at enqueue time, for `collect` defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// `--preserve-paths` given at enqueue time: `collect` keeps each output's relative
    /// `expected_output` path under the output directory instead of naming it by task id.
    #[serde(default)]
    pub preserve_paths: bool,
}

/// The total seeds of a seed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSeeds {
    /// Half-open `[start, end)`. `end` is `u128` so the full 64-bit space (`2^64`) is expressible.
    Range {
        /// First seed.
        start: u64,
        /// One past the last seed (at most 2^64).
        end: u128,
    },
    /// Explicit candidate seeds, in the given order (chunks take consecutive slices).
    List(Vec<u64>),
}

impl JobSeeds {
    /// Number of seeds (a list's repeats count); `u128` because a range may hold 2^64.
    pub fn len(&self) -> u128 {
        match self {
            JobSeeds::Range { start, end } => end.saturating_sub(*start as u128),
            JobSeeds::List(l) => l.len() as u128,
        }
    }

    /// Whether there are no seeds (such a job is refused by [`Job::validate`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A seed that occurs twice in `list`, if any (sorted lists, the producer's, are checked in
/// one pass).
fn repeated_seed(list: &[u64]) -> Option<u64> {
    if list.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let mut sorted = list.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// The job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Protocol version that wrote it.
    pub v: u32,
    /// The job's id ([`validate_identifier`]): part of every Redis key and header of the job.
    pub job_id: String,
    /// What the job computes.
    pub spec: JobSpec,
    /// The seeds for seed work; `None` for script batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<JobSeeds>,
    /// Seeds per chunk (the last chunk may be shorter). For script batches: 1 (a task per chunk).
    pub chunk_size: u64,
    /// Number of chunks (or script tasks). Progress counts these.
    pub chunk_count: u64,
    /// Creation time, ms since the epoch. Not part of the identity.
    pub created_at_ms: u64,
    /// Free text shown by `status` (e.g. the producer's command line). Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Sieve jobs: keep only counts and match histograms ([`crate::survivors::SieveCounts`]),
    /// no per-seed records: O(chunks) Redis memory at any looseness. Part of the identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_only: bool,
    /// Which life of `job_id` this is: random at creation and carried by every chunk and task
    /// message of the job, so a message left over from an earlier job under the same id (expired,
    /// torn down, re-created) is recognised and touches nothing of this one. Not part of the
    /// identity: re-running the producer's command resumes the stored job with its epoch. 0 only
    /// in records written before epochs existed (their messages carry none either).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// The job key's seal over [`Job::sealed_json`] (`crate::signing`), set by a producer that
    /// holds the key. A node with a key runs nothing of a job whose seal is missing or wrong, so
    /// neither a record written by someone without the key nor a signed job's record edited in
    /// Redis can make it run anything. Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A fresh job epoch: 53 random bits (exact as a JSON number and a Lua double), never 0.
pub fn fresh_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::now_ms());
    h.write_u32(std::process::id());
    (h.finish() >> 11).max(1)
}

impl Job {
    /// Largest final chunk that may reach `2^64` (it travels as an explicit seed list).
    pub const MAX_LISTED_TAIL: u64 = 1 << 16;

    /// A seed job with `chunk_size` seeds per chunk (chunk count computed).
    pub fn new_seed_job(
        job_id: impl Into<String>,
        spec: JobSpec,
        seeds: JobSeeds,
        chunk_size: u64,
    ) -> Result<Job, ProtocolError> {
        if chunk_size == 0 {
            return Err(ProtocolError::InvalidJob(
                "chunk size must be at least 1".into(),
            ));
        }
        let chunks = seeds.len().div_ceil(chunk_size as u128);
        let chunk_count = u64::try_from(chunks).map_err(|_| {
            ProtocolError::InvalidJob(format!(
                "{chunks} chunks is too many: use a larger chunk size"
            ))
        })?;
        let v = match &spec {
            JobSpec::Sieve(s) if s.offset_max.is_some() => crate::OFFSET_RANGE_VERSION,
            _ => PROTOCOL_VERSION,
        };
        let job = Job {
            v,
            job_id: job_id.into(),
            spec,
            seeds: Some(seeds),
            chunk_size,
            chunk_count,
            created_at_ms: crate::now_ms(),
            label: None,
            count_only: false,
            epoch: fresh_epoch(),
            seal: None,
        };
        job.validate()?;
        Ok(job)
    }

    /// A script batch: one chunk per task.
    pub fn new_script_batch(
        job_id: impl Into<String>,
        batch: ScriptBatch,
    ) -> Result<Job, ProtocolError> {
        let job = Job {
            v: PROTOCOL_VERSION,
            job_id: job_id.into(),
            chunk_size: 1,
            chunk_count: batch.tasks.len() as u64,
            spec: JobSpec::Scripts(batch),
            seeds: None,
            created_at_ms: crate::now_ms(),
            label: None,
            count_only: false,
            epoch: fresh_epoch(),
            seal: None,
        };
        job.validate()?;
        Ok(job)
    }

    /// The message of chunk `index`, carrying this job's epoch; `None` outside the plan.
    pub fn chunk_message(&self, index: u64) -> Option<crate::ChunkMessage> {
        let seeds = self.chunk_seeds(index)?;
        let mut msg = crate::ChunkMessage::new(self.job_id.clone(), self.kind(), index, seeds);
        msg.epoch = self.epoch;
        // The job's version: a build that cannot run the job refuses its chunks too.
        msg.v = self.v;
        Some(msg)
    }

    /// The stored definition of script task `task_id`, as the message to publish (batch id and
    /// epoch filled in); `None` when the job is not a batch or has no such task.
    pub fn task_message(&self, task_id: &str) -> Option<crate::ScriptJob> {
        let JobSpec::Scripts(batch) = &self.spec else {
            return None;
        };
        let mut task = batch.tasks.iter().find(|t| t.task_id == task_id)?.clone();
        task.batch_id = self.job_id.clone();
        task.epoch = self.epoch;
        task.attempt = 1;
        task.finished = None;
        Some(task)
    }

    /// Whether a message carrying `epoch` belongs to this life of the job.
    pub fn is_current_epoch(&self, epoch: u64) -> bool {
        epoch == self.epoch
    }

    /// The job's kind (from its spec).
    pub fn kind(&self) -> JobKind {
        self.spec.kind()
    }

    /// Structural checks: id, plan consistency, sieve spec and seed space. (Correlation and
    /// analysis specs are validated by their kernels, which own their schema.)
    pub fn validate(&self) -> Result<(), ProtocolError> {
        validate_identifier("job id", &self.job_id)?;
        match (&self.spec, &self.seeds) {
            (JobSpec::Scripts(batch), _) => {
                if batch.tasks.is_empty() {
                    return Err(ProtocolError::InvalidJob(
                        "script batch has no tasks".into(),
                    ));
                }
                if self.chunk_count != batch.tasks.len() as u64 {
                    return Err(ProtocolError::InvalidJob(
                        "chunk_count must equal the number of tasks".into(),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for t in &batch.tasks {
                    validate_identifier("task id", &t.task_id)?;
                    if !seen.insert(t.task_id.as_str()) {
                        return Err(ProtocolError::InvalidJob(format!(
                            "duplicate task id '{}'",
                            t.task_id
                        )));
                    }
                }
            }
            (_, None) => return Err(ProtocolError::InvalidJob("a seed job needs seeds".into())),
            (spec, Some(seeds)) => {
                if seeds.is_empty() {
                    return Err(ProtocolError::InvalidJob("the job has no seeds".into()));
                }
                if self.chunk_size == 0 {
                    return Err(ProtocolError::InvalidJob(
                        "chunk size must be at least 1".into(),
                    ));
                }
                let expected = seeds.len().div_ceil(self.chunk_size as u128);
                if expected != self.chunk_count as u128 {
                    return Err(ProtocolError::InvalidJob(format!(
                        "chunk_count {} does not match {} seeds in chunks of {}",
                        self.chunk_count,
                        seeds.len(),
                        self.chunk_size
                    )));
                }
                if let JobSeeds::List(list) = seeds {
                    // Chunks must be disjoint seed sets: survivors are stored per chunk, so a
                    // seed in two chunks would be counted twice.
                    if let Some(seed) = repeated_seed(list) {
                        return Err(ProtocolError::InvalidJob(format!(
                            "the seed list repeats seed {seed}: give each seed once"
                        )));
                    }
                }
                if let JobSeeds::Range { start, end } = seeds {
                    let last_lo =
                        *start as u128 + (self.chunk_count as u128 - 1) * self.chunk_size as u128;
                    if *end > u64::MAX as u128 && *end - last_lo > Self::MAX_LISTED_TAIL as u128 {
                        return Err(ProtocolError::InvalidJob(format!(
                            "the last chunk reaches 2^64 and would hold more than {} seeds: end the range at \
                             2^64-1 ({}) or use a chunk size of at most {}",
                            Self::MAX_LISTED_TAIL,
                            u64::MAX,
                            Self::MAX_LISTED_TAIL
                        )));
                    }
                }
                if let JobSpec::Sieve(s) = spec {
                    s.validate()?;
                    let space_end = s.family.family().seed_space_end();
                    let (lo, hi) = match seeds {
                        JobSeeds::Range { start, end } => (*start as u128, *end),
                        JobSeeds::List(l) => (
                            l.iter().copied().min().unwrap_or(0) as u128,
                            l.iter().copied().max().map(|m| m as u128 + 1).unwrap_or(0),
                        ),
                    };
                    if hi > space_end {
                        return Err(seedq_core::SieveError::SeedOutOfRange {
                            family: s.family.family().name().to_string(),
                            start: lo,
                            end: hi,
                            space_end,
                        }
                        .into());
                    }
                }
            }
        }
        Ok(())
    }

    /// The seeds of chunk `index` under this job's plan, or `None` past the last chunk.
    ///
    /// Range jobs: `[start + i*size, min(start + (i+1)*size, end))`; list jobs: consecutive
    /// slices of the list. A chunk whose range reaches `2^64` cannot be a `SeedSet::Range` (its
    /// end is a u64), so it is returned as an explicit list; [`Job::validate`] keeps such a chunk
    /// at most [`Job::MAX_LISTED_TAIL`] seeds.
    pub fn chunk_seeds(&self, index: u64) -> Option<SeedSet> {
        if index >= self.chunk_count {
            return None;
        }
        match self.seeds.as_ref()? {
            JobSeeds::Range { start, end } => {
                let lo = *start as u128 + index as u128 * self.chunk_size as u128;
                let hi = (lo + self.chunk_size as u128).min(*end);
                if hi <= u64::MAX as u128 {
                    Some(SeedSet::Range {
                        start: lo as u64,
                        end: hi as u64,
                    })
                } else {
                    Some(SeedSet::List((lo..hi).map(|s| s as u64).collect()))
                }
            }
            JobSeeds::List(list) => {
                let lo = (index as usize).checked_mul(self.chunk_size as usize)?;
                let hi = lo.saturating_add(self.chunk_size as usize).min(list.len());
                Some(SeedSet::List(list.get(lo..hi)?.to_vec()))
            }
        }
    }

    /// The script task of a batch by id.
    pub fn script_task(&self, task_id: &str) -> Option<&ScriptJob> {
        match &self.spec {
            JobSpec::Scripts(b) => b.tasks.iter().find(|t| t.task_id == task_id),
            _ => None,
        }
    }

    /// What the job key seals: everything that decides what runs and where its results go (the
    /// identity, the chunk plan, the epoch and the version), and not the creation time, label
    /// or seal. Re-serialising a parsed record gives the same bytes (serde's output is a
    /// function of the value, and every field reads back exactly), so a node checks a stored
    /// record without its original text.
    pub fn sealed_json(&self) -> String {
        #[derive(Serialize)]
        struct Sealed<'a> {
            v: u32,
            job_id: &'a str,
            spec: &'a JobSpec,
            seeds: &'a Option<JobSeeds>,
            chunk_size: u64,
            chunk_count: u64,
            count_only: bool,
            epoch: u64,
        }
        serde_json::to_string(&Sealed {
            v: self.v,
            job_id: &self.job_id,
            spec: &self.spec,
            seeds: &self.seeds,
            chunk_size: self.chunk_size,
            chunk_count: self.chunk_count,
            count_only: self.count_only,
            epoch: self.epoch,
        })
        .expect("job serializes")
    }

    /// Canonical JSON of everything that defines the work (not the creation time or label, and
    /// not the chunk plan, which the stored job fixes). Two enqueues with the same job id are the
    /// same job exactly when these strings are equal.
    pub fn identity_json(&self) -> String {
        #[derive(Serialize)]
        struct Identity<'a> {
            job_id: &'a str,
            spec: &'a JobSpec,
            seeds: &'a Option<JobSeeds>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            count_only: bool,
        }
        serde_json::to_string(&Identity {
            job_id: &self.job_id,
            spec: &self.spec,
            seeds: &self.seeds,
            count_only: self.count_only,
        })
        .expect("job identity serializes")
    }

    /// The JSON stored at `keys::job_spec`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("job serializes")
    }

    /// Parses a stored job, refusing a newer protocol version ([`crate::check_version`]).
    pub fn from_json(text: &str) -> Result<Job, ProtocolError> {
        let job: Job = serde_json::from_str(text)?;
        crate::check_version(job.v)?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::{Family, FamilyConfig, Threshold};

    pub(crate) fn spec() -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws: vec![1, 2, 3, 4],
            modulus: 1000,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: 3,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        }
    }

    #[test]
    fn plan_covers_range_exactly() {
        let job = Job::new_seed_job(
            "j1",
            JobSpec::Sieve(spec()),
            JobSeeds::Range { start: 10, end: 35 },
            10,
        )
        .unwrap();
        assert_eq!(job.chunk_count, 3);
        assert_eq!(
            job.chunk_seeds(0),
            Some(SeedSet::Range { start: 10, end: 20 })
        );
        assert_eq!(
            job.chunk_seeds(2),
            Some(SeedSet::Range { start: 30, end: 35 })
        );
        assert_eq!(job.chunk_seeds(3), None);
    }

    #[test]
    fn plan_slices_lists() {
        let job = Job::new_seed_job(
            "j2",
            JobSpec::Sieve(spec()),
            JobSeeds::List(vec![5, 1, 9]),
            2,
        )
        .unwrap();
        assert_eq!(job.chunk_count, 2);
        assert_eq!(job.chunk_seeds(1), Some(SeedSet::List(vec![9])));
    }

    #[test]
    fn refuses_out_of_space_and_empty() {
        let e = Job::new_seed_job(
            "j3",
            JobSpec::Sieve(spec()),
            JobSeeds::Range {
                start: 0,
                end: (1 << 32) + 1,
            },
            10,
        );
        assert!(e.is_err());
        let e = Job::new_seed_job(
            "j3",
            JobSpec::Sieve(spec()),
            JobSeeds::Range { start: 5, end: 5 },
            10,
        );
        assert!(e.is_err());
        let e = Job::new_seed_job(
            "bad id",
            JobSpec::Sieve(spec()),
            JobSeeds::Range { start: 0, end: 5 },
            10,
        );
        assert!(e.is_err());
    }

    #[test]
    fn json_round_trip_and_identity() {
        let job = Job::new_seed_job(
            "j4",
            JobSpec::Sieve(spec()),
            JobSeeds::Range {
                start: 0,
                end: 1 << 32,
            },
            1000,
        )
        .unwrap();
        let back = Job::from_json(&job.to_json()).unwrap();
        assert_eq!(back, job);
        let mut later = job.clone();
        later.created_at_ms += 5;
        later.chunk_size = 7;
        assert_eq!(later.identity_json(), job.identity_json());
        let mut other = job.clone();
        other.seeds = Some(JobSeeds::Range {
            start: 1,
            end: 1 << 32,
        });
        assert_ne!(other.identity_json(), job.identity_json());
    }
}
