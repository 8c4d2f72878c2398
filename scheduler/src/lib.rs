#![warn(missing_docs)]
//! seedq-scheduler: publishes seed chunks in windows, most urgent job first, round robin among
//! the jobs of one priority.
//!
//! Nobody publishes a whole job any more: a job is registered with the scheduler
//! (`Store::schedule_job`) and its chunks go out a few at a time, so `<ns>.seeds` holds about
//! what the slots can take next (the capacity, see `seedq_store`'s `schedule` module). Which job
//! a chunk comes from is decided when it is published, which is what makes priorities and fair
//! share work on one FIFO quorum queue (`docs/scheduling.md`).
//!
//! A [`Feeder`] is the one publisher. It runs
//! - in the producer when a job is enqueued or resumed (the first window goes out at once);
//! - in every consumer's feeder task, woken after each settled chunk (fills are coalesced, off
//!   the slots' path) and on every heartbeat, which also republishes stale claims: so the next window of a job is published whether or not the producer that
//!   started it is still running.
//!
//! Each fill claims in Redis first (atomic: two feeders never pick the same chunk), publishes
//! with confirms, then releases the claim. A feeder that dies in between leaves the claim, which
//! the next heartbeat's feeder publishes again once it is stale ([`Feeder::republish_stale`]).
//! A feeder signs what it publishes with its broker's job key, so it publishes only the work of
//! jobs that key sealed; a node's feeder records the others dead, a producer's leaves them to
//! the nodes ([`Unvouched`]).
//! Script batches go the same way in their own lane ([`Feeder::fill_scripts`]): their tasks,
//! in the batch's order, against the live nodes' script permits.
//! Check messages (verification by redundancy, `docs/verification.md`) go the same way: the
//! store claims them where it draws them, [`Feeder::publish_checks`] publishes and releases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use seedq_broker::{Broker, BrokerError};
use seedq_protocol::{
    ChunkMessage, FailureEvent, Job, JobSpec, SchedulerConfig, ScriptJob, SigningError,
};
use seedq_store::{Claim, Lane, Pick, Store, StoreError};

/// Why a fill did not complete. Claims it made stay in Redis and are published again later.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Redis refused or was unreachable.
    #[error("scheduler state in Redis: {0}")]
    Store(#[from] StoreError),
    /// The broker did not confirm the publish.
    #[error("publishing scheduled chunks: {0}")]
    Broker(#[from] BrokerError),
}

/// What one fill published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fed {
    /// Chunks published per job.
    pub per_job: BTreeMap<String, u64>,
    /// Jobs whose picks were left claimed, for a node to publish ([`Unvouched::Leave`]).
    pub left: BTreeSet<String>,
}

impl Fed {
    /// Chunks published for `job`.
    pub fn for_job(&self, job: &str) -> u64 {
        self.per_job.get(job).copied().unwrap_or(0)
    }

    /// Chunks published in all.
    pub fn total(&self) -> u64 {
        self.per_job.values().sum()
    }
}

/// Most chunks one fill claims (the capacity bounds it first; this bounds one publish batch).
const MOST_PER_FILL: u64 = 4096;

/// Most stale windows one call takes.
const MOST_STALE: u64 = 64;

/// Jobs kept parsed between fills; past this the cache starts over.
const JOB_CACHE: usize = 256;

/// What a feeder does with the picks of a job its broker's job key cannot vouch for: one the key
/// did not seal, or, without a key, one that is sealed (`seedq_protocol::signing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unvouched {
    /// A node's feeder: its key is the one its slots check, so it decides. With a key, such a
    /// job's picks are recorded dead (`bad_signature`) in the job's record, as its slots would
    /// refuse them: the job settles and frees its places. Without a key it publishes
    /// everything, unsigned, as its slots run anything.
    Refuse,
    /// A producer's feeder: its key may be missing or wrong for the cluster, so it publishes
    /// only what it can vouch for and leaves the other claims to go stale, for a node's
    /// heartbeat to publish or refuse.
    Leave,
}

/// Claims chunks and publishes them (see the crate doc). Cheap to share behind an `Arc`.
pub struct Feeder {
    store: Store,
    config: SchedulerConfig,
    unvouched: Unvouched,
    /// Parsed jobs by id, checked against the stored epoch before each use (a job id may be
    /// reused by a new job after the old one expired).
    jobs: Mutex<HashMap<String, Arc<Known>>>,
}

/// A parsed job and, once asked, whether the broker's job key sealed it (the key never changes,
/// and a long seed list is costly to seal on every fill).
struct Known {
    job: Arc<Job>,
    /// Why the broker's key does not vouch for it (`None`: it does).
    seal: OnceLock<Option<SigningError>>,
}

/// What [`Feeder::publish`] does with a job's picks.
enum Verdict {
    Publish,
    /// Record them dead with this reason.
    Refuse(SigningError),
    /// Leave their claims for a node (why, for the log).
    Leave(String),
}

impl Feeder {
    /// A feeder over `store`'s namespace with the cluster's `[scheduler]` settings, deciding on
    /// unvouched jobs as a node does ([`Unvouched::Refuse`]).
    pub fn new(store: Store, config: SchedulerConfig) -> Feeder {
        Feeder {
            store,
            config,
            unvouched: Unvouched::Refuse,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// The feeder of a producer ([`Unvouched::Leave`]).
    pub fn leaving_unvouched(mut self) -> Feeder {
        self.unvouched = Unvouched::Leave;
        self
    }

    /// Publishes what the queue has room for now. Safe to call at any time and from any number
    /// of places at once: the claim is atomic and bounded by the capacity.
    pub async fn fill(&self, broker: &Broker) -> Result<Fed, FeedError> {
        self.fill_lane(broker, Lane::Seeds).await
    }

    /// [`Feeder::fill`] for script batches: publishes the tasks the live nodes' script permits
    /// have room for, most urgent batch first, each to its queue (shared or the node it is
    /// pinned to).
    pub async fn fill_scripts(&self, broker: &Broker) -> Result<Fed, FeedError> {
        self.fill_lane(broker, Lane::Scripts).await
    }

    async fn fill_lane(&self, broker: &Broker, lane: Lane) -> Result<Fed, FeedError> {
        let claimed = self.store.claim(lane, &self.config, MOST_PER_FILL).await?;
        if claimed.picks.is_empty() {
            return Ok(Fed::default());
        }
        let fed = self.publish(broker, &claimed.picks).await?;
        let released: Vec<Claim> = claimed
            .claims
            .into_iter()
            .filter(|claim| !fed.left.contains(&claim.job_id))
            .collect();
        self.store.release_claims(&released).await?;
        Ok(fed)
    }

    /// Publishes again the windows whose publisher never released them (see
    /// `Store::take_stale_claims`). Returns how many chunks went out.
    pub async fn republish_stale(&self, broker: &Broker) -> Result<u64, FeedError> {
        let stale = self
            .store
            .take_stale_claims(&self.config, MOST_STALE)
            .await?;
        let mut published = 0;
        for claim in &stale {
            tracing::warn!(job = %claim.job_id, from = claim.from, to = claim.to, check = claim.check, "publishing a stale claimed window (its publisher stopped before the broker confirmed it, or left it to a node)");
            if claim.check {
                published += self
                    .publish_checks(broker, &[(claim.job_id.clone(), claim.from)])
                    .await?;
                continue;
            }
            let picks: Vec<Pick> = claim
                .chunks()
                .map(|chunk| Pick {
                    job_id: claim.job_id.clone(),
                    chunk,
                })
                .collect();
            let fed = self.publish(broker, &picks).await?;
            published += fed.total();
            if !fed.left.contains(&claim.job_id) {
                self.store
                    .release_claims(std::slice::from_ref(claim))
                    .await?;
            }
        }
        Ok(published)
    }

    /// Publishes the check messages of `(job, chunk)` pairs whose checks the store recorded
    /// (`seedq_protocol::check`: a chunk drawn for verification or a redo), confirmed, then
    /// releases their claims. A check settled meanwhile, or of a job gone, is not published.
    /// Returns how many went out.
    pub async fn publish_checks(
        &self,
        broker: &Broker,
        checks: &[(String, u64)],
    ) -> Result<u64, FeedError> {
        let mut messages: Vec<(Arc<Job>, ChunkMessage)> = Vec::with_capacity(checks.len());
        for (job_id, chunk) in checks {
            let Some(order) = self.store.check_order(job_id, *chunk).await? else {
                continue;
            };
            let Some(job) = self.job(job_id).await?.map(|known| known.job.clone()) else {
                continue;
            };
            if let Some(mut msg) = job.chunk_message(*chunk) {
                msg.check = Some(order);
                messages.push((job, msg));
            }
        }
        let batch: Vec<(&Job, &ChunkMessage)> = messages.iter().map(|(j, m)| (&**j, m)).collect();
        broker.publish_chunk_batch(&batch).await?;
        let claims: Vec<Claim> = checks
            .iter()
            .map(|(job, chunk)| Claim::of_check(job, *chunk))
            .collect();
        self.store.release_claims(&claims).await?;
        Ok(messages.len() as u64)
    }

    /// Publishes `picks` in order, confirmed. Picks of a job that no longer exists are dropped
    /// (nothing is left to run them for); picks of a job no build of this version can read (a
    /// corrupt or newer-version record) are dead-lettered in the job's record with the store's
    /// reason, as a consumer would, so the job still settles and frees its places; so are, with
    /// `bad_signature`, those of a job whose record the broker's job key did not seal.
    async fn publish(&self, broker: &Broker, picks: &[Pick]) -> Result<Fed, FeedError> {
        let mut jobs: HashMap<&str, Option<Arc<Job>>> = HashMap::new();
        let mut left = BTreeSet::new();
        for pick in picks {
            if !jobs.contains_key(pick.job_id.as_str()) {
                let job = match self.job(&pick.job_id).await {
                    Ok(job) => job,
                    Err(FeedError::Store(e)) if !e.is_unavailable() => {
                        tracing::error!(job = %pick.job_id, error = %e, "cannot read the job to publish its chunks; dead-lettering them in its record");
                        self.dead_letter(&pick.job_id, picks, e.reason(), &e.to_string())
                            .await?;
                        None
                    }
                    Err(e) => return Err(e),
                };
                // What a feeder publishes carries its key's signature: never the work of a
                // record that key did not seal (see `Unvouched`).
                let verdict = job.as_ref().map(|known| self.verdict(broker, known));
                let job = match verdict {
                    None | Some(Verdict::Publish) => job.map(|known| known.job.clone()),
                    Some(Verdict::Refuse(e)) => {
                        tracing::warn!(job = %pick.job_id, error = %e, "refusing to publish the chunks of a job the key did not seal; dead-lettering them in its record");
                        let reason = seedq_protocol::FailureReason::BadSignature;
                        self.dead_letter(&pick.job_id, picks, reason, &e.to_string())
                            .await?;
                        None
                    }
                    Some(Verdict::Leave(e)) => {
                        tracing::warn!(job = %pick.job_id, error = %e, "not publishing the chunks of a job this producer's key cannot vouch for; a node publishes them once the claim is stale");
                        left.insert(pick.job_id.clone());
                        None
                    }
                };
                jobs.insert(&pick.job_id, job);
            }
        }
        let mut messages: Vec<(Arc<Job>, ChunkMessage)> = Vec::with_capacity(picks.len());
        let mut tasks: Vec<ScriptJob> = Vec::new();
        let mut fed = Fed {
            left,
            ..Fed::default()
        };
        for pick in picks {
            let Some(job) = jobs.get(pick.job_id.as_str()).cloned().flatten() else {
                continue;
            };
            let published = match &job.spec {
                // A batch's tasks are its chunks, in the batch's order; the message carries
                // the batch's epoch.
                JobSpec::Scripts(batch) => usize::try_from(pick.chunk)
                    .ok()
                    .and_then(|i| batch.tasks.get(i))
                    .and_then(|task| job.task_message(&task.task_id))
                    .map(|task| tasks.push(task))
                    .is_some(),
                _ => job
                    .chunk_message(pick.chunk)
                    .map(|msg| messages.push((job.clone(), msg)))
                    .is_some(),
            };
            if published {
                *fed.per_job.entry(pick.job_id.clone()).or_default() += 1;
            }
        }
        let batch: Vec<(&Job, &ChunkMessage)> = messages.iter().map(|(j, m)| (&**j, m)).collect();
        broker.publish_chunk_batch(&batch).await?;
        // Each confirmed before the next: batches are a few long tasks, and a pinned task's
        // queue was declared by whoever enqueued the batch (and by its node).
        for task in &tasks {
            broker.publish_script(task).await?;
        }
        Ok(fed)
    }

    /// Whether this feeder may publish `known`'s work, signed with its broker's key (see
    /// [`Unvouched`]).
    fn verdict(&self, broker: &Broker, known: &Known) -> Verdict {
        match (broker.job_key(), self.unvouched) {
            (None, Unvouched::Leave) if known.job.seal.is_some() => {
                Verdict::Leave("the job is sealed with a job key and this producer has none".into())
            }
            (None, _) => Verdict::Publish,
            (Some(key), mode) => {
                match known.seal.get_or_init(|| key.verify_job(&known.job).err()) {
                    None => Verdict::Publish,
                    Some(e) if mode == Unvouched::Refuse => Verdict::Refuse(e.clone()),
                    Some(e) => Verdict::Leave(e.to_string()),
                }
            }
        }
    }

    /// Records `job`'s picks dead with `reason` (see [`Feeder::publish`]).
    async fn dead_letter(
        &self,
        job: &str,
        picks: &[Pick],
        reason: seedq_protocol::FailureReason,
        detail: &str,
    ) -> Result<(), FeedError> {
        let epoch = self.store.job_epoch(job).await?.unwrap_or(0);
        for pick in picks.iter().filter(|p| p.job_id == job) {
            let event = FailureEvent {
                member: seedq_protocol::chunk_member(pick.chunk),
                reason,
                detail: detail.to_string(),
                dead_lettered: true,
                node: "scheduler".into(),
                attempt: 0,
                at_ms: seedq_protocol::now_ms(),
            };
            self.store.record_failure(job, epoch, &event).await?;
        }
        Ok(())
    }

    /// The job, from the cache when its epoch still matches the stored one.
    async fn job(&self, id: &str) -> Result<Option<Arc<Known>>, FeedError> {
        let cached = self.cache().get(id).cloned();
        if let Some(known) = cached {
            if self.store.job_epoch(id).await? == Some(known.job.epoch) {
                return Ok(Some(known));
            }
        }
        let Some(job) = self.store.load_job(id).await? else {
            self.cache().remove(id);
            return Ok(None);
        };
        let known = Arc::new(Known {
            job: Arc::new(job),
            seal: OnceLock::new(),
        });
        let mut cache = self.cache();
        if cache.len() >= JOB_CACHE {
            cache.clear();
        }
        cache.insert(id.to_string(), known.clone());
        Ok(Some(known))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Known>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
