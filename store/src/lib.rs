#![warn(missing_docs)]
//! seedq-store: everything seedq keeps in Redis, exact under at-least-once delivery.
//!
//! # API
//!
//! ```text
//! Store::connect(url, ns) -> Store                      (Clone; one ConnectionManager inside)
//!   .with_job_ttl(secs)                                  TTL given to a job's keys once finished
//! jobs      create_job(&Job) -> CreateOutcome{Created | Existing(Job)}   (conflicting spec: Err(JobConflict))
//!           load_job(id) -> Option<Job>,  list_jobs() -> Vec<String> (oldest first)
//!           cancel(id), uncancel(id), is_cancelled(id), expire_job(id, secs), delete_job(id)
//!           reopen(id, members): dead-lettered members republished; the job runs again
//! events    job_events(id) -> JobEvents; .next(timeout): woken per settled member (pub/sub)
//! results   apply_chunk_result(&ChunkResult, throughput: Option<ThroughputSample>) -> ApplyOutcome
//!           apply_script_result(&ScriptResult) -> ApplyOutcome      (success: marks the task done)
//!           save_script_attempt(&ScriptResult)                      (failed attempt's logs; not done)
//!           record_failure(job, &FailureEvent) -> bool               (false: unknown job)
//! reads     progress(id) -> Option<JobProgress>, survivors(id) -> Vec<SeedRecord> sorted by seed,
//!           sieve_survivors(id) -> Vec<Survivor>, chunk_summaries(id), done_members(id), is_done(id, member),
//!           failure_log(id, n), script_result(batch, task), script_results(batch)
//! nodes     write_heartbeat(&NodeHeartbeat, ttl_secs), list_nodes() -> Vec<NodeHeartbeat>,
//!           nodes_requiring_signed_jobs(except: Option<&str>) -> Vec<String>
//! learning  record_throughput(model, family, units_per_sec, alpha) -> new EMA,
//!           seed_throughput(model, family, units_per_sec) -> bool (only where nothing is learned),
//!           throughput(model, family) -> Option<f64>, all_throughput() -> Vec<(model, family, f64)>
//! schedule  schedule_job(id, Priority, verify_fraction) -> Scheduled, claim_chunks(&SchedulerConfig, most) -> Claimed,
//!           schedule_batch(id, Priority), claim_tasks(..) (script batches' lane), claim(Lane, ..),
//!           take_stale_claims(&SchedulerConfig, most), release_claims(&[Claim]), pending_claims(),
//!           set_capacities(node, chunks, tasks, ttl_secs),
//!           clear_capacity(node), job_schedule(id) -> JobSchedule
//! checks    check_order(job, chunk), resolve_check(Resolve, &SlotRef, reason) -> CheckResolution,
//!           slot_checked(&SlotRef, ends_quarantine), bad_slots(), slot_log(&SlotRef)
//!           (verification by redundancy: `check` module)
//! tests     purge_namespace() -> keys deleted
//! ```
//!
//! # Exactly once
//!
//! A result is applied by ONE Lua script whose first write is `SADD done <member>`: if the member
//! was already there the script returns without touching anything, so counters, survivors,
//! summaries and progress are exact under redelivery, retries, duplicate publishes and two
//! consumers racing on the same chunk. The same script folds the learned-throughput EMA update in,
//! so a chunk costs one round trip (EVALSHA). Survivors are a hash keyed by seed written with
//! `HSETNX`, so a seed is recorded once even if two chunks of a list job contain it.
//!
//! A job is finished when every chunk is done or dead-lettered (or skipped because the job was
//! cancelled, reason `cancelled`); the script that settles the last chunk stamps
//! `finished_at_ms` and gives every key of the job the TTL stored with the job at creation.
//!
//! # Transient errors
//!
//! The `ConnectionManager` reconnects by itself; calls that fail with an I/O, timeout or
//! connection-dropped error are retried with exponential backoff and jitter (about 10 s in
//! total) before the error is returned. Every write here is idempotent, so a retry after an
//! unknown outcome is safe.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use seedq_core::Survivor;
use seedq_protocol::survivors::{decode, RecordShape};
use seedq_protocol::{
    keys, CaCert, ChunkResult, FailureEvent, Job, JobProgress, NodeHeartbeat, ProtocolError,
    ScriptResult, SeedRecord,
};

mod check;
mod lua;
mod schedule;
mod tls;

pub use check::{CheckResolution, Resolve};
pub use schedule::{Claim, Claimed, JobSchedule, Lane, Pick, Scheduled};
pub use tls::{client, CONNECT_GIVE_UP};

static APPLY: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(lua::APPLY));
static RECORD_FAILURE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(lua::RECORD_FAILURE));
static CREATE_JOB: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(lua::CREATE_JOB));
static SAVE_ATTEMPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(lua::SAVE_ATTEMPT));
static EMA: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(lua::EMA));
static REOPEN: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(lua::REOPEN));
static CANCEL: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(lua::CANCEL));
static MARK_DEAD: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(lua::MARK_DEAD));

/// Errors from the store. Messages say what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A Redis command or connection failed (after the store's retries for transient errors).
    #[error("redis error: {0} (is Redis running and reachable at the --redis-url?)")]
    Redis(#[from] redis::RedisError),
    /// [`Store::connect`] could not get an answer from Redis; `hint` says what to change.
    #[error("cannot connect to Redis at {address}: {detail}: {hint}")]
    Connect {
        /// The URL, password redacted.
        address: String,
        /// What failed, scrubbed of the password.
        detail: String,
        /// The likely fix (a TLS mismatch, an untrusted certificate, or Redis down).
        hint: &'static str,
        /// Waiting will not fix it (a TLS mismatch or an untrusted certificate).
        permanent: bool,
    },
    /// `--tls-ca-file` given with a URL that is not `rediss://` is fine (it is for the broker
    /// too), but a CA Redis cannot parse is refused before any connection.
    #[error("--tls-ca-file {path}: {detail}")]
    CaFile {
        /// The file.
        path: String,
        /// The client's reason.
        detail: String,
    },
    /// An invalid namespace or job, refused before anything is written.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// [`Store::create_job`] found the id taken by a job with a different identity.
    #[error("job '{job_id}' already exists with a different spec or seed range; use another --job-id, or cancel and let it expire first")]
    JobConflict {
        /// The contested job id.
        job_id: String,
    },
    /// A stored value does not parse as what seedq writes there.
    #[error("corrupt data in redis at {key}: {message}")]
    Corrupt {
        /// The Redis key holding the value.
        key: String,
        /// What was wrong with it.
        message: String,
    },
}

/// `Result` with [`StoreError`] as the default error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What kind of trouble a [`StoreError`] is, for whoever decides what to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Redis could not be reached (refused, dropped, timed out).
    Unreachable,
    /// Redis answered but is not taking this command now, for a reason that passes by itself or
    /// by an operator's hand without anything changing in the message: out of memory under
    /// `maxmemory` (`OOM`), a long script (`BUSY`), loading its dataset (`LOADING`), a replica
    /// (`READONLY`), a failover (`TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`), a failed snapshot
    /// (`MISCONF`), missing replicas (`NOREPLICAS`).
    Busy,
    /// Will not pass by waiting: corrupt or newer-version data, a conflict, a refused command.
    Permanent,
}

/// Redis error codes of [`ErrorClass::Busy`] server states.
const BUSY_CODES: &[&str] = &[
    "OOM",
    "BUSY",
    "LOADING",
    "READONLY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "MISCONF",
    "NOREPLICAS",
];

/// Whether the server refused with a code that passes by waiting. A pipeline's refusal (the
/// survivor pieces go in one) carries its commands' errors inside, where `code()` does not look.
fn busy_reply(e: &redis::RedisError) -> bool {
    e.code().is_some_and(|c| BUSY_CODES.contains(&c))
        || e.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, server)| BUSY_CODES.contains(&server.code()))
        })
}

impl StoreError {
    /// What kind of trouble this is (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Redis(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                ErrorClass::Unreachable
            }
            StoreError::Connect { permanent, .. } => {
                if *permanent {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Unreachable
                }
            }
            StoreError::Redis(e) if busy_reply(e) => ErrorClass::Busy,
            StoreError::Redis(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::BusyLoading
                            | redis::ServerErrorKind::TryAgain
                            | redis::ServerErrorKind::MasterDown
                            | redis::ServerErrorKind::ReadOnly
                            | redis::ServerErrorKind::ClusterDown
                    )
                ) =>
            {
                ErrorClass::Busy
            }
            _ => ErrorClass::Permanent,
        }
    }

    /// Redis could not be reached or is not taking writes now (after the store's own retries):
    /// the call may succeed later without anything changing, unlike a conflict or corrupt data.
    pub fn is_unavailable(&self) -> bool {
        self.class() != ErrorClass::Permanent
    }

    /// The failure reason a message settled by this error carries: `redis_unavailable` while it
    /// may pass, else `corrupt_job` for stored data that does not parse and `store_error` for
    /// anything else Redis refused.
    pub fn reason(&self) -> seedq_protocol::FailureReason {
        use seedq_protocol::FailureReason as R;
        match (self.class(), self) {
            (ErrorClass::Unreachable | ErrorClass::Busy, _) => R::RedisUnavailable,
            (ErrorClass::Permanent, StoreError::Corrupt { .. }) => R::CorruptJob,
            (ErrorClass::Permanent, _) => R::StoreError,
        }
    }
}

/// What [`Store::create_job`] did.
// `Existing` holds a whole `Job` (a sieve spec inline) while `Created` is empty. Boxing it would
// change the public variant the producer matches on; the value is made once per enqueue and
// consumed at once, so its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The job is new and stored.
    Created,
    /// A job with the same id and identity already exists: publish with ITS chunk plan.
    Existing(Job),
}

/// What applying a result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// First time: counted.
    Applied,
    /// First time, counted, and drawn for verification: the check's claim is recorded; the
    /// caller publishes the check message ([`Store::check_order`] has its order) and releases
    /// the claim.
    AppliedToVerify,
    /// The member was already done: nothing changed (redelivery or duplicate).
    AlreadyDone,
    /// The slot that ran it has been found wrong by a verification: nothing written. The slot
    /// must quarantine itself; the chunk goes back to the queue.
    SlotFlagged,
    /// A script result that would take its batch's stored results past the cap
    /// ([`Store::with_batch_output_cap`]): nothing written.
    BatchOutputLimit,
    /// No such job in Redis (never created, expired or purged): nothing written.
    UnknownJob,
    /// The job exists but the result belongs to another life of its id (another epoch) or to a
    /// chunk outside its plan: nothing written.
    Stale,
}

/// What [`Store::record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Counted, logged, and (when dead-lettered) the member settled.
    Recorded,
    /// No such job in Redis: nothing written.
    UnknownJob,
    /// Another epoch of the job, or a chunk outside its plan: nothing written.
    Stale,
    /// A `cancelled` skip after the cancel was lifted (`resume`): nothing written, the member
    /// must run.
    NotCancelled,
}

/// A learned-throughput sample folded into the result write.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputSample {
    /// The slot's GPU model (`cpu` for CPU slots): the first half of the throughput field.
    pub gpu_model: String,
    /// The job's throughput family key (`seedq_protocol::throughput_family_key`).
    pub family: String,
    /// The chunk's measured rate, work units per second; ignored unless finite and positive.
    pub units_per_sec: f64,
    /// EMA weight of the new sample (`chunking.ema_alpha`, 0.3 by default).
    pub alpha: f64,
}

/// Handle on one namespace of one Redis. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    ns: String,
    job_ttl_secs: u64,
    /// `[jobs] max_batch_output_bytes`: most bytes of script results one batch keeps.
    batch_output_cap: u64,
}

/// A subscription to one job's events (see [`Store::job_events`]).
pub struct JobEvents {
    pubsub: redis::aio::PubSub,
}

impl JobEvents {
    /// Waits up to `timeout` for the next event. `Ok(true)`: something happened; `Ok(false)`:
    /// the timeout passed. A dropped subscription is an error: the caller falls back to polling.
    ///
    /// Events that are already buffered are consumed with the first one: a watcher re-reads the
    /// job once per wake-up, and a fast job settles thousands of chunks a second, so one wake-up
    /// stands for everything that happened since the last.
    pub async fn next(&mut self, timeout: Duration) -> Result<bool> {
        use futures_util::{FutureExt, StreamExt};
        let mut stream = self.pubsub.on_message();
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(_)) => {
                while let Some(Some(_)) = stream.next().now_or_never() {}
                Ok(true)
            }
            Ok(None) => Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "job events subscription closed",
            )))),
            Err(_) => Ok(false),
        }
    }
}

/// Failure log entries kept per job.
const FAILURE_LOG_CAP: usize = 1000;

fn is_transient(e: &StoreError) -> bool {
    match e {
        // A certificate the client does not trust comes as an I/O error: no retry changes it.
        StoreError::Redis(e) if tls::is_certificate_error(e) => false,
        StoreError::Redis(e) => {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || matches!(
                    e.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                )
                || matches!(
                    e.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                )
        }
        _ => false,
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_max_times(7)
        .with_jitter()
}

impl Store {
    /// Connects (with retries) and checks the server answers, within [`CONNECT_GIVE_UP`]. A
    /// `rediss://` URL trusts the system's roots; see [`Store::connect_with_ca`].
    pub async fn connect(url: &str, ns: &str) -> Result<Store> {
        Store::connect_with_ca(url, ns, None).await
    }

    /// [`Store::connect`], a `rediss://` URL trusting the certificates of `ca` (`--tls-ca-file`)
    /// instead of the system's roots. A failure is a [`StoreError::Connect`] naming the address
    /// (password redacted) and the likely fix: a TLS mismatch between the scheme and the port,
    /// an untrusted certificate, or a Redis that does not answer.
    pub async fn connect_with_ca(url: &str, ns: &str, ca: Option<&CaCert>) -> Result<Store> {
        seedq_protocol::validate_identifier("namespace", ns)?;
        let client = client(url, ca)?;
        // One bound for the connection, its retries and the PING: a Redis that takes the TCP
        // connection but never answers (a TLS port spoken to in plain text, a hung server, a
        // firewall that drops) would otherwise hold a command for minutes without a word.
        let last = std::sync::Mutex::new(None::<redis::RedisError>);
        match tokio::time::timeout(CONNECT_GIVE_UP, Store::connect_client(client, ns, &last)).await
        {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(StoreError::Redis(e))) => Err(tls::connect_error(url, e)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(tls::no_answer(
                url,
                last.lock().unwrap_or_else(|p| p.into_inner()).take(),
            )),
        }
    }

    /// The connection and its first PING; `last` keeps the latest retried error, for the
    /// message of a connection that runs out of time.
    async fn connect_client(
        client: redis::Client,
        ns: &str,
        last: &std::sync::Mutex<Option<redis::RedisError>>,
    ) -> Result<Store> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = (|| async {
            Ok::<_, StoreError>(
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?,
            )
        })
        .retry(backoff())
        .when(is_transient)
        .notify(|e, _| {
            if let StoreError::Redis(e) = e {
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            }
        })
        .await?;
        let store = Store {
            client,
            conn,
            ns: ns.to_string(),
            job_ttl_secs: seedq_protocol::JobsConfig::default().result_ttl_secs,
            batch_output_cap: seedq_protocol::JobsConfig::default().max_batch_output_bytes,
        };
        store.ping().await?;
        Ok(store)
    }

    /// TTL written into jobs this handle creates (from `jobs.result_ttl_secs`; 0 = never expire).
    pub fn with_job_ttl(mut self, secs: u64) -> Store {
        self.job_ttl_secs = secs;
        self
    }

    /// Most bytes of script results one batch keeps in Redis (`[jobs] max_batch_output_bytes`;
    /// 0 = no limit): see [`Store::apply_script_result`].
    pub fn with_batch_output_cap(mut self, bytes: u64) -> Store {
        self.batch_output_cap = bytes;
        self
    }

    /// The namespace every key of this handle starts with.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Sends `PING` (with the transient-error retries): checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move {
            Ok(redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())?)
        })
        .await
    }

    /// Runs `op` with a connection, retrying transient failures.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        (|| op(self.conn.clone()))
            .retry(backoff())
            .when(is_transient)
            .notify(|e, d| tracing::warn!("redis call failed ({e}); retrying in {d:?}"))
            .await
    }

    // ----- jobs -----------------------------------------------------------------------------

    /// Stores a job. Idempotent: the same id with the same identity returns
    /// [`CreateOutcome::Existing`] with the stored job (whose chunk plan must be used); a
    /// different spec or seed range under the same id is [`StoreError::JobConflict`].
    pub async fn create_job(&self, job: &Job) -> Result<CreateOutcome> {
        job.validate()?;
        let ns = self.ns.clone();
        let json = job.to_json();
        let seeds_total = job
            .seeds
            .as_ref()
            .map(|s| s.len())
            .unwrap_or(job.chunk_count as u128)
            .to_string();
        let existing: Option<String> = self
            .run(|mut c| {
                let (ns, json, seeds_total) = (ns.clone(), json.clone(), seeds_total.clone());
                async move {
                    Ok(CREATE_JOB
                        .key(keys::job_spec(&ns, &job.job_id))
                        .key(keys::totals(&ns, &job.job_id))
                        .key(keys::jobs(&ns))
                        .arg(json)
                        .arg(job.chunk_count)
                        .arg(seeds_total)
                        .arg(job.created_at_ms)
                        .arg(self.job_ttl_secs)
                        .arg(&job.job_id)
                        .arg(job.kind().as_str())
                        .arg(job.epoch)
                        .invoke_async(&mut c)
                        .await?)
                }
            })
            .await?;
        match existing {
            None => Ok(CreateOutcome::Created),
            Some(text) => {
                let stored = self.parse_job(&job.job_id, &text)?;
                if stored.identity_json() == job.identity_json() {
                    Ok(CreateOutcome::Existing(stored))
                } else {
                    Err(StoreError::JobConflict {
                        job_id: job.job_id.clone(),
                    })
                }
            }
        }
    }

    fn parse_job(&self, id: &str, text: &str) -> Result<Job> {
        Job::from_json(text).map_err(|e| StoreError::Corrupt {
            key: keys::job_spec(&self.ns, id),
            message: e.to_string(),
        })
    }

    /// The stored job, `None` if it does not exist (never created, expired or deleted).
    pub async fn load_job(&self, id: &str) -> Result<Option<Job>> {
        let key = keys::job_spec(&self.ns, id);
        let text: Option<String> = self
            .run(|mut c| {
                let key = key.clone();
                async move { Ok(c.get(key).await?) }
            })
            .await?;
        text.map(|t| self.parse_job(id, &t)).transpose()
    }

    /// The epoch of the job stored under `id` now: `None` when there is none (or it was stored
    /// before epochs). One field read, so a node can check that the life of a job it keeps in
    /// memory is still the stored one without loading the spec again.
    pub async fn job_epoch(&self, id: &str) -> Result<Option<u64>> {
        let key = keys::totals(&self.ns, id);
        self.run(|mut c| {
            let key = key.clone();
            async move { Ok(c.hget(key, "epoch").await?) }
        })
        .await
    }

    /// Job ids, oldest first. Ids whose keys have expired are pruned from the index.
    pub async fn list_jobs(&self) -> Result<Vec<String>> {
        let index = keys::jobs(&self.ns);
        let ids: Vec<String> = self
            .run(|mut c| {
                let k = index.clone();
                async move { Ok(c.zrange(k, 0, -1).await?) }
            })
            .await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.exists(keys::job_spec(&self.ns, id));
        }
        let present: Vec<bool> = self
            .run(|mut c| {
                let p = pipe.clone();
                async move { Ok(p.query_async(&mut c).await?) }
            })
            .await?;
        let (live, gone): (Vec<_>, Vec<_>) = ids.into_iter().zip(present).partition(|(_, p)| *p);
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().map(|(id, _)| id).collect();
            self.run(|mut c| {
                let (k, g) = (index.clone(), gone.clone());
                async move { Ok(c.zrem::<_, _, ()>(k, g).await?) }
            })
            .await?;
        }
        Ok(live.into_iter().map(|(id, _)| id).collect())
    }

    /// Marks the job cancelled: consumers skip its remaining chunks, the scheduler publishes no
    /// more of them, and the job counts as finished once what was published has settled (see
    /// `lua::CANCEL`). A cancel of an unknown job writes nothing.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        let mut script = CANCEL.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, id) {
            script.key(k);
        }
        script.arg(seedq_protocol::now_ms());
        let _: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(())
    }

    /// Lifts a cancel (`resume` of a cancelled job); chunks skipped meanwhile stay dead-lettered
    /// with reason `cancelled` until they are reopened.
    pub async fn uncancel(&self, id: &str) -> Result<()> {
        let key = keys::cancelled(&self.ns, id);
        self.run(|mut c| {
            let k = key.clone();
            async move { Ok(c.del::<_, ()>(k).await?) }
        })
        .await
    }

    /// Whether the job is cancelled (consumers check it before running a chunk).
    pub async fn is_cancelled(&self, id: &str) -> Result<bool> {
        let key = keys::cancelled(&self.ns, id);
        self.run(|mut c| {
            let k = key.clone();
            async move { Ok(c.exists(k).await?) }
        })
        .await
    }

    /// Re-opens a job whose dead-lettered `members` are about to be published again (see
    /// `lua::REOPEN`). Returns how many dead entries were removed; `None` for an unknown job.
    pub async fn reopen(&self, id: &str, members: &[String]) -> Result<Option<u64>> {
        let mut script = REOPEN.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, id) {
            script.key(k);
        }
        script.arg(seedq_protocol::now_ms());
        for m in members {
            script.arg(m);
        }
        let code: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(u64::try_from(code).ok())
    }

    /// Marks `members` (member, reason) dead again after their republish failed (see
    /// `lua::MARK_DEAD`); done members are left alone. Returns how many were marked; `None` for
    /// an unknown job.
    pub async fn mark_dead(&self, id: &str, members: &[(String, String)]) -> Result<Option<u64>> {
        let mut script = MARK_DEAD.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, id) {
            script.key(k);
        }
        script.arg(seedq_protocol::now_ms());
        for (member, reason) in members {
            script.arg(member).arg(reason);
        }
        let code: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(u64::try_from(code).ok())
    }

    /// Subscribes to the job's events channel: one message per settled member (done or failed)
    /// and one when the job is re-opened. Make the subscription BEFORE reading progress, so an
    /// event between the read and the subscription cannot be missed.
    pub async fn job_events(&self, id: &str) -> Result<JobEvents> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(keys::job_events(&self.ns, id)).await?;
        Ok(JobEvents { pubsub })
    }

    /// Gives every key of the job a TTL now (finished jobs get it automatically).
    pub async fn expire_job(&self, id: &str, secs: u64) -> Result<()> {
        let mut pipe = redis::pipe();
        for k in keys::all_job_keys(&self.ns, id) {
            pipe.expire(k, secs as i64).ignore();
        }
        self.run(|mut c| {
            let p = pipe.clone();
            async move { Ok(p.query_async::<()>(&mut c).await?) }
        })
        .await
    }

    /// Deletes every key of the job and its index entry.
    pub async fn delete_job(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        // UNLINK: a big job's survivors hash is freed in the background, not inside Redis's
        // one command thread where it would stall every consumer's writes.
        pipe.unlink(keys::all_job_keys(&self.ns, id)).ignore();
        pipe.zrem(keys::jobs(&self.ns), id).ignore();
        self.run(|mut c| {
            let p = pipe.clone();
            async move { Ok(p.query_async::<()>(&mut c).await?) }
        })
        .await
    }

    // ----- results --------------------------------------------------------------------------

    /// Applies a chunk's result exactly once. See the crate docs.
    ///
    /// A sieve chunk's survivor pieces are written first, pipelined, one bounded `HSET` each,
    /// under a fresh token; then the apply script (one EVALSHA, O(1) in survivors) records the
    /// token in the survivor index inside the exactly-once guard. If the chunk turns out to be
    /// done already (a duplicate delivery), this attempt's pieces are removed again.
    pub async fn apply_chunk_result(
        &self,
        result: &ChunkResult,
        throughput: Option<&ThroughputSample>,
    ) -> Result<ApplyOutcome> {
        let member = seedq_protocol::chunk_member(result.chunk);
        let records = result.seed_records();
        let summary = summary_json(result);
        let index_entry = self.write_pieces(result).await?;
        let busy_us = (result.duration_secs.max(0.0) * 1e6).round() as u64;
        let outcome = self
            .apply(ApplyArgs {
                job_id: &result.job_id,
                epoch: result.epoch,
                member: &member,
                seeds: result.seeds_tested,
                busy_us,
                now_ms: result.finished_at_ms,
                node: &result.node,
                summary: &summary,
                throughput,
                script: None,
                survivors: (&index_entry, result.survivor_count),
                records: &records,
                seed_chunk: Some(result),
            })
            .await;
        // A duplicate's pieces are dropped by the apply script itself, which alone can tell a
        // duplicate from a retried call of this very attempt whose first reply was lost (its
        // pieces are the ones the index names and must stay). After an error nothing is dropped:
        // the apply may have gone through; pieces of an attempt that did not win are garbage that
        // expires with the job's keys.
        outcome
    }

    /// Writes a seed chunk's survivor pieces under a fresh token, pipelined, one bounded `HSET`
    /// each; returns the survivor index entry naming them (`<token> <pieces> <survivors>`, or ''
    /// for none). Only a script that records the entry makes them the chunk's.
    async fn write_pieces(&self, result: &ChunkResult) -> Result<String> {
        let pieces_key = keys::survivor_pieces(&self.ns, &result.job_id);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let fields: Vec<String> = (0..result.survivor_pieces.len())
            .map(|i| keys::piece_field(result.chunk, &token, i))
            .collect();
        if !fields.is_empty() {
            let mut pipe = redis::pipe();
            for (field, piece) in fields.iter().zip(&result.survivor_pieces) {
                pipe.hset(&pieces_key, field, piece.as_slice()).ignore();
            }
            self.run(|mut c| {
                let p = pipe.clone();
                async move { Ok(p.query_async::<()>(&mut c).await?) }
            })
            .await?;
        }
        let index_entry = if fields.is_empty() {
            String::new()
        } else {
            format!("{token} {} {}", fields.len(), result.survivor_count)
        };
        Ok(index_entry)
    }

    /// Applies a script task's result exactly once; only call it for a result that ends the task
    /// (success). Failed attempts go through [`Store::save_script_attempt`] + [`Store::record_failure`].
    /// A result that would take the batch's stored results past the cap is refused
    /// ([`ApplyOutcome::BatchOutputLimit`]).
    pub async fn apply_script_result(&self, result: &ScriptResult) -> Result<ApplyOutcome> {
        let member = seedq_protocol::script_member(&result.task_id);
        let json = serde_json::to_string(result).expect("script result serializes");
        let busy_us = (result.duration_secs.max(0.0) * 1e6).round() as u64;
        self.apply(ApplyArgs {
            job_id: &result.batch_id,
            epoch: result.epoch,
            member: &member,
            seeds: 0,
            busy_us,
            now_ms: result.finished_at_ms,
            node: &result.node,
            summary: "",
            throughput: None,
            script: Some((&result.task_id, &json)),
            survivors: ("", 0),
            records: &[],
            seed_chunk: None,
        })
        .await
    }

    async fn apply(&self, a: ApplyArgs<'_>) -> Result<ApplyOutcome> {
        let mut script = APPLY.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, a.job_id) {
            script.key(k);
        }
        script.key(keys::throughput_hash(&self.ns));
        let slot = a
            .seed_chunk
            .map(|r| check::slot_of(r).key())
            .unwrap_or_default();
        script
            .key(keys::bad_slots(&self.ns))
            .key(keys::slot_log(&self.ns, &slot))
            .key(keys::sched_claims(&self.ns));
        let (facts, order) = match a.seed_chunk {
            Some(r) => (check::facts(r), check::verify_order(r)),
            None => (String::new(), String::new()),
        };
        let (tp_field, tp_value, tp_alpha) = match a.throughput {
            Some(t) if t.units_per_sec.is_finite() && t.units_per_sec > 0.0 => (
                keys::throughput_field(&t.gpu_model, &t.family),
                t.units_per_sec,
                t.alpha,
            ),
            _ => (String::new(), 0.0, 0.0),
        };
        let (task, script_json) = a.script.unwrap_or(("", ""));
        script
            .arg(a.member)
            .arg(a.seeds)
            .arg(a.busy_us)
            .arg(a.now_ms)
            .arg(a.node)
            .arg(a.summary)
            .arg(tp_field)
            .arg(tp_value)
            .arg(tp_alpha)
            .arg(task)
            .arg(script_json)
            .arg(a.survivors.0)
            .arg(a.survivors.1)
            .arg(a.epoch)
            .arg(&slot)
            .arg(facts)
            .arg(check::draw())
            .arg(order)
            .arg(a.job_id)
            .arg(a.records.len())
            .arg(self.batch_output_cap);
        for (seed, json) in a.records {
            script.arg(*seed).arg(json);
        }
        let code: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(match code {
            1 => ApplyOutcome::Applied,
            2 => ApplyOutcome::AppliedToVerify,
            0 => ApplyOutcome::AlreadyDone,
            -2 => ApplyOutcome::Stale,
            -4 => ApplyOutcome::SlotFlagged,
            -6 => ApplyOutcome::BatchOutputLimit,
            _ => ApplyOutcome::UnknownJob,
        })
    }

    /// Keeps a failed script attempt's result (exit status, log tails) for operators, unless the
    /// task is already done. Does not count the task as done. Returns `false` when it was kept
    /// without its output, which would have taken the batch past the cap.
    pub async fn save_script_attempt(&self, result: &ScriptResult) -> Result<bool> {
        let json = serde_json::to_string(result).expect("script result serializes");
        let stripped = serde_json::to_string(&ScriptResult {
            output: None,
            ..result.clone()
        })
        .expect("script result serializes");
        let (ns, batch) = (self.ns.clone(), result.batch_id.clone());
        let member = seedq_protocol::script_member(&result.task_id);
        let cap = self.batch_output_cap;
        let code: i64 = self
            .run(|mut c| {
                let (ns, batch, json, stripped, member) = (
                    ns.clone(),
                    batch.clone(),
                    json.clone(),
                    stripped.clone(),
                    member.clone(),
                );
                async move {
                    Ok(SAVE_ATTEMPT
                        .key(keys::done(&ns, &batch))
                        .key(keys::script_results(&ns, &batch))
                        .key(keys::totals(&ns, &batch))
                        .arg(member)
                        .arg(&result.task_id)
                        .arg(json)
                        .arg(stripped)
                        .arg(cap)
                        .invoke_async(&mut c)
                        .await?)
                }
            })
            .await?;
        Ok(code != 2)
    }

    /// Records a failed attempt of the job's life `epoch`: counts it by reason, appends it to the
    /// failure log, and when `event.dead_lettered` marks the member as settled-without-result
    /// (unless it is done). Writes nothing for an unknown job, another epoch, a chunk outside the
    /// plan, or a `cancelled` skip of a job that is no longer cancelled (all checked atomically).
    pub async fn record_failure(
        &self,
        job_id: &str,
        epoch: u64,
        event: &FailureEvent,
    ) -> Result<RecordOutcome> {
        let mut script = RECORD_FAILURE.prepare_invoke();
        for k in keys::all_job_keys(&self.ns, job_id) {
            script.key(k);
        }
        script
            .arg(&event.member)
            .arg(event.reason.as_str())
            .arg(if event.dead_lettered { "1" } else { "0" })
            .arg(event.at_ms)
            .arg(serde_json::to_string(event).expect("failure event serializes"))
            .arg(FAILURE_LOG_CAP)
            .arg(epoch)
            .arg(
                if event.reason == seedq_protocol::FailureReason::Cancelled {
                    "1"
                } else {
                    "0"
                },
            );
        let code: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(match code {
            1 => RecordOutcome::Recorded,
            -2 => RecordOutcome::Stale,
            -3 => RecordOutcome::NotCancelled,
            _ => RecordOutcome::UnknownJob,
        })
    }

    // ----- reads ----------------------------------------------------------------------------

    /// Progress of a job, `None` if the job does not exist.
    pub async fn progress(&self, id: &str) -> Result<Option<JobProgress>> {
        let ns = &self.ns;
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::totals(ns, id))
            .hgetall(keys::failures(ns, id))
            .hgetall(keys::dead(ns, id))
            .exists(keys::cancelled(ns, id))
            .exists(keys::job_spec(ns, id))
            .hlen(keys::checks(ns, id));
        type Reply = (
            BTreeMap<String, String>,
            BTreeMap<String, u64>,
            BTreeMap<String, String>,
            bool,
            bool,
            u64,
        );
        let (totals, failures, dead, cancelled, exists, checks_pending): Reply = self
            .run(|mut c| {
                let p = pipe.clone();
                async move { Ok(p.query_async(&mut c).await?) }
            })
            .await?;
        if !exists {
            return Ok(None);
        }
        let num = |f: &str| totals.get(f).and_then(|v| v.parse::<u64>().ok());
        let chunks_by_node = totals
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("node:")?.to_string(), v.parse().ok()?)))
            .collect();
        Ok(Some(JobProgress {
            job_id: id.to_string(),
            kind: totals.get("kind").cloned().unwrap_or_default(),
            chunks_total: num("chunks_total").unwrap_or(0),
            chunks_done: num("chunks_done").unwrap_or(0),
            seeds_total: totals
                .get("seeds_total")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            seeds_done: num("seeds_done").unwrap_or(0),
            survivors: num("survivors").unwrap_or(0),
            failures,
            dead_lettered: dead,
            chunks_by_node,
            busy_secs: num("busy_us").unwrap_or(0) as f64 / 1e6,
            created_at_ms: num("created_at_ms").unwrap_or(0),
            started_at_ms: num("started_at_ms"),
            updated_at_ms: num("updated_at_ms"),
            finished_at_ms: num("finished_at_ms"),
            cancelled,
            priority: num("priority")
                .and_then(|r| u8::try_from(r).ok())
                .and_then(seedq_protocol::Priority::from_rank),
            published: num("published_upto").unwrap_or(0),
            verified: num("verified").unwrap_or(0),
            mismatches: num("mismatches").unwrap_or(0),
            corrected: num("corrected").unwrap_or(0),
            redone: num("redone").unwrap_or(0),
            unverified: num("unverified").unwrap_or(0),
            checks_pending,
        }))
    }

    /// Every survivor (or flagged seed) record, sorted by seed.
    pub async fn survivors(&self, id: &str) -> Result<Vec<SeedRecord>> {
        let key = keys::survivors(&self.ns, id);
        let map: Vec<(String, String)> = self
            .run(|mut c| {
                let k = key.clone();
                async move { Ok(c.hgetall(k).await?) }
            })
            .await?;
        let mut out = map
            .into_iter()
            .map(|(seed, json)| {
                let seed = seed.parse::<u64>().map_err(|e| StoreError::Corrupt {
                    key: key.clone(),
                    message: format!("seed '{seed}': {e}"),
                })?;
                Ok(SeedRecord { seed, json })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|r| r.seed);
        Ok(out)
    }

    /// Sieve survivors, decoded, sorted by seed: every piece read into memory at once. For a
    /// job of any size, read [`Store::survivor_pieces`] piece by piece instead.
    pub async fn sieve_survivors(&self, id: &str) -> Result<Vec<Survivor>> {
        let Some(job) = self.load_job(id).await? else {
            return Ok(Vec::new());
        };
        let seedq_protocol::JobSpec::Sieve(spec) = &job.spec else {
            return Ok(Vec::new());
        };
        let shape = RecordShape::of(spec);
        let mut pieces = self.survivor_pieces(&job);
        let mut out = Vec::new();
        while let Some(piece) = pieces.next().await? {
            out.extend(decode(&shape, &piece).map_err(|e| StoreError::Corrupt {
                key: keys::survivor_pieces(&self.ns, id),
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// The survivor pieces of a sieve job, chunk by chunk in plan order (which is seed order:
    /// ranges and the producer's sorted candidate lists are chunked in order). Memory is one
    /// batch of index entries and a few pieces, whatever the job's size.
    pub fn survivor_pieces(&self, job: &Job) -> SurvivorPieces<'_> {
        SurvivorPieces {
            store: self,
            job_id: job.job_id.clone(),
            chunk_count: job.chunk_count,
            next_chunk: 0,
            fields: std::collections::VecDeque::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Per-chunk summaries (correlation / analysis), by member.
    pub async fn chunk_summaries(&self, id: &str) -> Result<BTreeMap<String, serde_json::Value>> {
        let key = keys::summaries(&self.ns, id);
        let map: BTreeMap<String, String> = self
            .run(|mut c| {
                let k = key.clone();
                async move { Ok(c.hgetall(k).await?) }
            })
            .await?;
        map.into_iter()
            .map(|(m, v)| {
                Ok((
                    m,
                    serde_json::from_str(&v).map_err(|e| StoreError::Corrupt {
                        key: key.clone(),
                        message: e.to_string(),
                    })?,
                ))
            })
            .collect()
    }

    /// Done members (`c<i>` / `t:<task>`) of a job (what `resume` skips).
    pub async fn done_members(&self, id: &str) -> Result<std::collections::HashSet<String>> {
        let key = keys::done(&self.ns, id);
        self.run(|mut c| {
            let k = key.clone();
            async move { Ok(c.smembers(k).await?) }
        })
        .await
    }

    /// Whether `member` (`c<i>` / `t:<task>`) of the job is done (a redelivered chunk whose result
    /// is already applied need not run again).
    pub async fn is_done(&self, id: &str, member: &str) -> Result<bool> {
        let key = keys::done(&self.ns, id);
        self.run(|mut c| {
            let (k, m) = (key.clone(), member.to_string());
            async move { Ok(c.sismember(k, m).await?) }
        })
        .await
    }

    /// The newest `n` failure events.
    pub async fn failure_log(&self, id: &str, n: usize) -> Result<Vec<FailureEvent>> {
        let key = keys::failure_log(&self.ns, id);
        let items: Vec<String> = self
            .run(|mut c| {
                let k = key.clone();
                async move { Ok(c.lrange(k, 0, n.saturating_sub(1) as isize).await?) }
            })
            .await?;
        Ok(items
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// The stored result of one task of a script batch: its success, or its last failed attempt.
    pub async fn script_result(&self, batch: &str, task: &str) -> Result<Option<ScriptResult>> {
        let key = keys::script_results(&self.ns, batch);
        let text: Option<String> = self
            .run(|mut c| {
                let (k, t) = (key.clone(), task.to_string());
                async move { Ok(c.hget(k, t).await?) }
            })
            .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Every stored script result of a batch (successes and last failed attempts), by task id.
    pub async fn script_results(&self, batch: &str) -> Result<BTreeMap<String, ScriptResult>> {
        let key = keys::script_results(&self.ns, batch);
        let map: BTreeMap<String, String> = self
            .run(|mut c| {
                let k = key.clone();
                async move { Ok(c.hgetall(k).await?) }
            })
            .await?;
        map.into_iter()
            .map(|(t, v)| {
                Ok((
                    t,
                    serde_json::from_str(&v).map_err(|e| StoreError::Corrupt {
                        key: key.clone(),
                        message: e.to_string(),
                    })?,
                ))
            })
            .collect()
    }

    // ----- nodes ----------------------------------------------------------------------------

    /// Writes the heartbeat with a TTL and indexes the node (one pipelined round trip).
    pub async fn write_heartbeat(&self, hb: &NodeHeartbeat, ttl_secs: u64) -> Result<()> {
        let json = serde_json::to_string(hb).expect("heartbeat serializes");
        let mut pipe = redis::pipe();
        pipe.set_ex(keys::heartbeat(&self.ns, &hb.node), json, ttl_secs.max(1))
            .ignore();
        pipe.zadd(keys::nodes(&self.ns), &hb.node, hb.at_ms)
            .ignore();
        self.run(|mut c| {
            let p = pipe.clone();
            async move { Ok(p.query_async::<()>(&mut c).await?) }
        })
        .await
    }

    /// Removes a node's heartbeat (clean shutdown).
    pub async fn clear_heartbeat(&self, node: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.del(keys::heartbeat(&self.ns, node)).ignore();
        pipe.zrem(keys::nodes(&self.ns), node).ignore();
        self.run(|mut c| {
            let p = pipe.clone();
            async move { Ok(p.query_async::<()>(&mut c).await?) }
        })
        .await
    }

    /// Live nodes (heartbeat not expired), by name.
    pub async fn list_nodes(&self) -> Result<Vec<NodeHeartbeat>> {
        let index = keys::nodes(&self.ns);
        let names: Vec<String> = self
            .run(|mut c| {
                let k = index.clone();
                async move { Ok(c.zrange(k, 0, -1).await?) }
            })
            .await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let hb_keys: Vec<String> = names.iter().map(|n| keys::heartbeat(&self.ns, n)).collect();
        let values: Vec<Option<String>> = self
            .run(|mut c| {
                let ks = hb_keys.clone();
                async move { Ok(redis::cmd("MGET").arg(ks).query_async(&mut c).await?) }
            })
            .await?;
        let mut out: Vec<NodeHeartbeat> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }

    /// Live nodes whose heartbeat says they require signed jobs (`signed_jobs`), by name,
    /// leaving out `except` (a node's own earlier heartbeat). A producer or node without the
    /// job key asks before it publishes anything: such nodes would refuse all of it.
    pub async fn nodes_requiring_signed_jobs(&self, except: Option<&str>) -> Result<Vec<String>> {
        Ok(self
            .list_nodes()
            .await?
            .into_iter()
            .filter(|hb| hb.signed_jobs && Some(hb.node.as_str()) != except)
            .map(|hb| hb.node)
            .collect())
    }

    // ----- learned throughput ---------------------------------------------------------------

    /// Sets the learned throughput of `(model, family)` only if there is none yet (a consumer's
    /// startup calibration): real chunk timings then take over through the EMA. Returns whether
    /// the value was set.
    pub async fn seed_throughput(
        &self,
        model: &str,
        family: &str,
        units_per_sec: f64,
    ) -> Result<bool> {
        if !(units_per_sec.is_finite() && units_per_sec > 0.0) {
            return Ok(false);
        }
        let (key, field) = keys::throughput(&self.ns, model, family);
        let value = units_per_sec.to_string();
        self.run(|mut c| {
            let (k, f, v) = (key.clone(), field.clone(), value.clone());
            async move { Ok(c.hset_nx(k, f, v).await?) }
        })
        .await
    }

    /// Folds a sample into the EMA atomically: `new = alpha*sample + (1-alpha)*old`, or the
    /// sample itself when there is no history. Returns the new value.
    pub async fn record_throughput(
        &self,
        gpu_model: &str,
        family: &str,
        units_per_sec: f64,
        alpha: f64,
    ) -> Result<f64> {
        let (key, field) = keys::throughput(&self.ns, gpu_model, family);
        let value: String = self
            .run(|mut c| {
                let (k, f) = (key.clone(), field.clone());
                async move {
                    Ok(EMA
                        .key(k)
                        .arg(f)
                        .arg(units_per_sec)
                        .arg(alpha)
                        .invoke_async(&mut c)
                        .await?)
                }
            })
            .await?;
        value.parse().map_err(|_| StoreError::Corrupt {
            key,
            message: format!("throughput '{value}'"),
        })
    }

    /// The learned throughput of `(gpu_model, family)`, work units per second, if any.
    pub async fn throughput(&self, gpu_model: &str, family: &str) -> Result<Option<f64>> {
        let (key, field) = keys::throughput(&self.ns, gpu_model, family);
        let v: Option<String> = self
            .run(|mut c| {
                let (k, f) = (key.clone(), field.clone());
                async move { Ok(c.hget(k, f).await?) }
            })
            .await?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    /// Every learned rate: `(gpu_model, family, units_per_sec)`.
    pub async fn all_throughput(&self) -> Result<Vec<(String, String, f64)>> {
        let key = keys::throughput_hash(&self.ns);
        let map: BTreeMap<String, String> = self
            .run(|mut c| {
                let k = key.clone();
                async move { Ok(c.hgetall(k).await?) }
            })
            .await?;
        Ok(map
            .into_iter()
            .filter_map(|(f, v)| {
                let (model, family) = f.rsplit_once('|')?;
                Some((model.to_string(), family.to_string(), v.parse().ok()?))
            })
            .collect())
    }

    // ----- tests ----------------------------------------------------------------------------

    /// Deletes every key of the namespace. For tests and demo cleanup.
    pub async fn purge_namespace(&self) -> Result<u64> {
        let pattern = keys::namespace_pattern(&self.ns);
        let mut c = self.conn.clone();
        let mut deleted = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            if !batch.is_empty() {
                deleted += c.unlink::<_, u64>(batch).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Reads a sieve job's survivor pieces in order ([`Store::survivor_pieces`]).
pub struct SurvivorPieces<'a> {
    store: &'a Store,
    job_id: String,
    chunk_count: u64,
    next_chunk: u64,
    /// Piece fields of the chunks read from the index, not fetched yet.
    fields: std::collections::VecDeque<String>,
    /// Pieces fetched, not handed out yet.
    ready: std::collections::VecDeque<Vec<u8>>,
}

impl SurvivorPieces<'_> {
    /// Chunks whose index entries one round trip reads.
    const INDEX_BATCH: u64 = 1024;
    /// Pieces (at most 64 KiB each) one round trip fetches.
    const PIECE_BATCH: usize = 8;

    /// The next piece, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let ns = self.store.ns.clone();
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            if !self.fields.is_empty() {
                let take = self.fields.len().min(Self::PIECE_BATCH);
                let batch: Vec<String> = self.fields.drain(..take).collect();
                let key = keys::survivor_pieces(&ns, &self.job_id);
                let got: Vec<Option<Vec<u8>>> = self
                    .store
                    .run(|mut c| {
                        let (k, f) = (key.clone(), batch.clone());
                        async move {
                            Ok(redis::cmd("HMGET")
                                .arg(k)
                                .arg(f)
                                .query_async(&mut c)
                                .await?)
                        }
                    })
                    .await?;
                for (field, piece) in batch.iter().zip(got) {
                    self.ready
                        .push_back(piece.ok_or_else(|| StoreError::Corrupt {
                            key: key.clone(),
                            message: format!(
                                "piece {field} named by the survivor index is missing"
                            ),
                        })?);
                }
                continue;
            }
            if self.next_chunk >= self.chunk_count {
                return Ok(None);
            }
            let end = (self.next_chunk + Self::INDEX_BATCH).min(self.chunk_count);
            let members: Vec<String> = (self.next_chunk..end)
                .map(seedq_protocol::chunk_member)
                .collect();
            let key = keys::survivor_index(&ns, &self.job_id);
            let entries: Vec<Option<String>> = self
                .store
                .run(|mut c| {
                    let (k, m) = (key.clone(), members.clone());
                    async move {
                        Ok(redis::cmd("HMGET")
                            .arg(k)
                            .arg(m)
                            .query_async(&mut c)
                            .await?)
                    }
                })
                .await?;
            for (chunk, entry) in (self.next_chunk..end).zip(entries) {
                let Some(entry) = entry else { continue };
                let mut parts = entry.split(' ');
                let (token, pieces) = match (parts.next(), parts.next().map(str::parse::<usize>)) {
                    (Some(t), Some(Ok(n))) => (t.to_string(), n),
                    _ => {
                        return Err(StoreError::Corrupt {
                            key: key.clone(),
                            message: format!("index entry of chunk {chunk}: '{entry}'"),
                        })
                    }
                };
                self.fields
                    .extend((0..pieces).map(|i| keys::piece_field(chunk, &token, i)));
            }
            self.next_chunk = end;
        }
    }
}

/// What the summaries hash keeps for a seed chunk: the correlation / analysis summary, or a
/// count-only sieve's counts ('' for neither).
fn summary_json(result: &ChunkResult) -> String {
    match (&result.summary, &result.counts) {
        (Some(s), _) => serde_json::to_string(s).expect("summary serializes"),
        (None, Some(c)) => serde_json::to_string(c).expect("counts serialize"),
        (None, None) => String::new(),
    }
}

struct ApplyArgs<'a> {
    job_id: &'a str,
    epoch: u64,
    member: &'a str,
    seeds: u64,
    busy_us: u64,
    now_ms: u64,
    node: &'a str,
    summary: &'a str,
    throughput: Option<&'a ThroughputSample>,
    script: Option<(&'a str, &'a str)>,
    /// Survivor index entry (or '') and the survivors it holds.
    survivors: (&'a str, u64),
    records: &'a [(u64, String)],
    /// A seed chunk's result: its slot, facts and verification draw go to the script too.
    seed_chunk: Option<&'a ChunkResult>,
}
