//! The scheduler's state in Redis: which job's chunk is published next, and how many may wait.
//!
//! A seed job's chunks are published in small windows ([`seedq_protocol::schedule`]). The state
//! is namespace-wide (`keys::sched_*`) plus two fields of each job's totals hash: `priority` and
//! `published_upto`, the job's cursor (chunks below it were claimed for publishing).
//!
//! - **Capacity** is what the live nodes' seed slots hold at once (`set_capacities`, written with
//!   every heartbeat, expiring with it), plus the chunks kept waiting:
//!   `max(min_queued, ceil(slots * queued_per_slot))`.
//! - **In flight** is, summed over the jobs that may have chunks out, `published_upto - done -
//!   dead`: every published chunk ends done or dead-lettered (a cancelled job's chunks are
//!   dead-lettered as `cancelled` when a slot meets them), and a reopened dead chunk
//!   (`resume`, `dlq replay`) counts as in flight again. So the count is derived from the
//!   exactly-once records themselves and cannot drift.
//! - **A claim** ([`Store::claim_chunks`]) picks up to `capacity - in flight` chunks, one at a
//!   time: the job with the lowest `rank * 2^40 + turn` in `sched_queue` (most urgent priority,
//!   then the one served longest ago), whose cursor advances by one and whose turn becomes the
//!   next tick of `sched_turn`. The picks of one call are recorded per job as one window
//!   `<job>\t<from>\t<to>` in `sched_claims`, with the time.
//! - **The publisher** (the producer at enqueue, a consumer after every settle and on every
//!   heartbeat) publishes the picks with confirms, then releases the windows
//!   ([`Store::release_claims`]). If it dies in between, the window stays in `sched_claims` and
//!   is taken again, once stale, by [`Store::take_stale_claims`], so a claimed chunk is never
//!   lost. The price is a possible second copy of a window whose publisher was only slow; results
//!   are applied once per chunk (the done set), so a copy costs a redundant run, never a count.
//!
//! Script batches are scheduled the same way in a lane of their own ([`Lane::Scripts`]): the
//! same scripts over their own queue, live set and capacity (the script permits of the live
//! nodes), a batch's tasks claimed in the batch's order. The turn counter and the claims are
//! shared; a claim's job says which lane it came from.
//!
//! The scripts build a job's key names from the namespace (`<ns>:job:<id>:<part>`, as
//! `seedq_protocol::keys` does), which a single Redis server allows; seedq does not run on
//! Redis Cluster.

use std::collections::BTreeMap;

use redis::Script;
use seedq_protocol::{keys, Priority, SchedulerConfig};

use crate::{Result, Store, StoreError};

/// Scores in `sched_queue` are `rank * TURN_SPAN + turn`.
const TURN_SPAN: &str = "1099511627776";

/// KEYS: 1 queue, 2 live, 3 the job's totals. ARGV: 1 job id, 2 rank, 3 span, 4 the fraction
/// of its chunks to verify.
/// Returns 1 queued with chunks to publish, 0 nothing left to publish, -1 unknown job.
const REGISTER: &str = r#"
local span = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local rank = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], 'priority', rank, 'verify_fraction', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
local v = redis.call('HMGET', KEYS[3], 'published_upto', 'chunks_total')
if tonumber(v[1] or '0') >= tonumber(v[2] or '0') then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local turn = 0
if old then turn = tonumber(old) % span end
redis.call('ZADD', KEYS[1], rank * span + turn, ARGV[1])
return 1
"#;

/// KEYS: 1 queue, 2 live, 3 turn, 4 claims, 5 capacity.
/// ARGV: 1 now_ms, 2 namespace, 3 min_queued, 4 queued_per_slot, 5 most picks, 6 span.
/// Returns the picks in order, flat: job, chunk, job, chunk...
const CLAIM: &str = r#"
local now = tonumber(ARGV[1])
local span = tonumber(ARGV[6])
local function jk(job, part) return ARGV[2] .. ':job:' .. job .. ':' .. part end
local function cursor_total(job)
  local v = redis.call('HMGET', jk(job, 'totals'), 'published_upto', 'chunks_total')
  if not v[2] then return nil, nil end
  return tonumber(v[1] or '0'), tonumber(v[2])
end
local slots = 0
local entries = redis.call('HGETALL', KEYS[5])
for i = 1, #entries, 2 do
  local n, expires = string.match(entries[i + 1], '^(%d+) (%d+)$')
  if n and tonumber(expires) > now then
    slots = slots + tonumber(n)
  else
    redis.call('HDEL', KEYS[5], entries[i])
  end
end
local capacity = slots + math.max(tonumber(ARGV[3]), math.ceil(slots * tonumber(ARGV[4])))
local inflight = 0
for _, job in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local cursor, total = cursor_total(job)
  if not cursor then
    redis.call('SREM', KEYS[2], job)
  else
    local n = cursor - redis.call('SCARD', jk(job, 'done')) - redis.call('HLEN', jk(job, 'dead'))
    if n > 0 then
      inflight = inflight + n
    elseif cursor >= total then
      redis.call('SREM', KEYS[2], job)
    end
  end
end
local budget = math.min(capacity - inflight, tonumber(ARGV[5]))
local picks = {}
local first, last, order = {}, {}, {}
while budget > 0 do
  local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #top == 0 then break end
  local job, score = top[1], tonumber(top[2])
  local cursor, total = cursor_total(job)
  if (not cursor) or cursor >= total or redis.call('EXISTS', jk(job, 'cancelled')) == 1 then
    redis.call('ZREM', KEYS[1], job)
  else
    redis.call('HSET', jk(job, 'totals'), 'published_upto', cursor + 1)
    redis.call('SADD', KEYS[2], job)
    if cursor + 1 >= total then
      redis.call('ZREM', KEYS[1], job)
    else
      local rank = math.floor(score / span)
      redis.call('ZADD', KEYS[1], rank * span + redis.call('INCR', KEYS[3]), job)
    end
    picks[#picks + 1] = job
    picks[#picks + 1] = cursor
    if first[job] == nil then
      first[job] = cursor
      order[#order + 1] = job
    end
    last[job] = cursor + 1
    budget = budget - 1
  end
end
for _, job in ipairs(order) do
  redis.call('ZADD', KEYS[4], now, job .. '\t' .. string.format('%d', first[job]) .. '\t' .. string.format('%d', last[job]))
end
return picks
"#;

/// KEYS: 1 claims. ARGV: 1 now_ms, 2 claimed at or before (ms), 3 most windows.
/// Takes stale windows: their time becomes now, so two takers never both get one.
const TAKE_STALE: &str = r#"
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(stale) do redis.call('ZADD', KEYS[1], ARGV[1], m) end
return stale
"#;

static REGISTER_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(REGISTER));
static CLAIM_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(CLAIM));
static TAKE_STALE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(TAKE_STALE));

/// Which work a scheduler call is about: seed jobs' chunks on `<ns>.seeds`, or script
/// batches' tasks on the scripts queues. Each lane has its own queue of jobs, live set and
/// capacity, so script permits never count as room for seed chunks or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Seed jobs (sieve, correlation, analysis).
    Seeds,
    /// Script batches.
    Scripts,
}

impl Lane {
    fn queue(self, ns: &str) -> String {
        match self {
            Lane::Seeds => keys::sched_queue(ns),
            Lane::Scripts => keys::sched_script_queue(ns),
        }
    }

    fn live(self, ns: &str) -> String {
        match self {
            Lane::Seeds => keys::sched_live(ns),
            Lane::Scripts => keys::sched_script_live(ns),
        }
    }

    fn capacity(self, ns: &str) -> String {
        match self {
            Lane::Seeds => keys::sched_capacity(ns),
            Lane::Scripts => keys::sched_script_capacity(ns),
        }
    }
}

/// One chunk the scheduler chose to publish now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The job.
    pub job_id: String,
    /// The chunk index.
    pub chunk: u64,
}

/// A window of one job's chunks `[from, to)` claimed for publishing and not yet released.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// The job.
    pub job_id: String,
    /// First chunk index.
    pub from: u64,
    /// One past the last chunk index.
    pub to: u64,
    /// A check message of chunk `from` (its order is the job's pending check,
    /// `Store::check_order`), not the chunks' first publish.
    pub check: bool,
}

impl Claim {
    /// The claim of chunk `chunk`'s check message.
    pub fn of_check(job_id: &str, chunk: u64) -> Claim {
        Claim {
            job_id: job_id.to_string(),
            from: chunk,
            to: chunk + 1,
            check: true,
        }
    }

    /// The member of `sched_claims` for this window (`<job>\t<from>\t<to>`, then `\tcheck`
    /// for a check, as the Lua scripts write it).
    pub fn member(&self) -> String {
        let mut m = format!("{}\t{}\t{}", self.job_id, self.from, self.to);
        if self.check {
            m.push_str("\tcheck");
        }
        m
    }

    /// Reads a `sched_claims` member back.
    pub fn parse(member: &str) -> Option<Claim> {
        let mut parts = member.split('\t');
        let job_id = parts.next()?.to_string();
        let from = parts.next()?.parse().ok()?;
        let to = parts.next()?.parse().ok()?;
        let check = match parts.next() {
            None => false,
            Some("check") => true,
            Some(_) => return None,
        };
        (parts.next().is_none() && from < to).then_some(Claim {
            job_id,
            from,
            to,
            check,
        })
    }

    /// The chunk indexes of the window.
    pub fn chunks(&self) -> std::ops::Range<u64> {
        self.from..self.to
    }
}

/// What one [`Store::claim_chunks`] returned: the picks in publishing order, and the windows
/// they were recorded under (one per job).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The chunks to publish, in the order chosen (interleaved across jobs of one priority).
    pub picks: Vec<Pick>,
    /// The windows to release once the picks are confirmed.
    pub claims: Vec<Claim>,
}

impl Claimed {
    fn from_picks(picks: Vec<Pick>) -> Claimed {
        let mut windows: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for p in &picks {
            let w = windows.entry(&p.job_id).or_insert((p.chunk, p.chunk + 1));
            w.0 = w.0.min(p.chunk);
            w.1 = w.1.max(p.chunk + 1);
        }
        let claims = windows
            .into_iter()
            .map(|(job, (from, to))| Claim {
                job_id: job.to_string(),
                from,
                to,
                check: false,
            })
            .collect();
        Claimed { picks, claims }
    }
}

/// What [`Store::schedule_job`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// Queued: the job has chunks the scheduler will publish.
    Queued,
    /// Every chunk was already claimed for publishing (only in-flight work is left).
    AllPublished,
    /// No such job in Redis.
    UnknownJob,
}

impl Store {
    /// Registers a seed job with the scheduler at `priority`, verifying `verify_fraction` of
    /// the chunks applied from now on (`seedq_protocol::check`), or changes both for a job
    /// already registered (its turn is kept). Call it after the job is created and whenever it
    /// may publish again (`resume`).
    pub async fn schedule_job(
        &self,
        id: &str,
        priority: Priority,
        verify_fraction: f64,
    ) -> Result<Scheduled> {
        self.register(Lane::Seeds, id, priority, verify_fraction.clamp(0.0, 1.0))
            .await
    }

    /// Registers a script batch with the scheduler's scripts lane at `priority` (or changes the
    /// priority of one registered), like [`Store::schedule_job`]. Its tasks are claimed in the
    /// batch's order by [`Store::claim_tasks`].
    pub async fn schedule_batch(&self, id: &str, priority: Priority) -> Result<Scheduled> {
        self.register(Lane::Scripts, id, priority, 0.0).await
    }

    async fn register(
        &self,
        lane: Lane,
        id: &str,
        priority: Priority,
        verify_fraction: f64,
    ) -> Result<Scheduled> {
        let mut script = REGISTER_SCRIPT.prepare_invoke();
        script
            .key(lane.queue(&self.ns))
            .key(lane.live(&self.ns))
            .key(keys::totals(&self.ns, id))
            .arg(id)
            .arg(priority.rank())
            .arg(TURN_SPAN)
            .arg(verify_fraction);
        let code: i64 = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(match code {
            1 => Scheduled::Queued,
            0 => Scheduled::AllPublished,
            _ => Scheduled::UnknownJob,
        })
    }

    /// Claims the chunks to publish now: as many as the queue has room for (at most `most`),
    /// most urgent job first, round robin within a priority (see the module doc). The caller
    /// publishes them, then [`Store::release_claims`] the windows.
    ///
    /// Not idempotent: if the reply is lost and the call retried, the first call's windows are
    /// only published once stale ([`Store::take_stale_claims`]). Nothing is lost either way.
    pub async fn claim_chunks(&self, config: &SchedulerConfig, most: u64) -> Result<Claimed> {
        self.claim(Lane::Seeds, config, most).await
    }

    /// [`Store::claim_chunks`] for script batches: the tasks to publish now, as many as the
    /// live nodes' script permits leave room for (plus the few kept queued), most urgent batch
    /// first. A pick's `chunk` is the task's index in its batch.
    pub async fn claim_tasks(&self, config: &SchedulerConfig, most: u64) -> Result<Claimed> {
        self.claim(Lane::Scripts, config, most).await
    }

    /// [`Store::claim_chunks`] or [`Store::claim_tasks`] by lane.
    pub async fn claim(&self, lane: Lane, config: &SchedulerConfig, most: u64) -> Result<Claimed> {
        let mut script = CLAIM_SCRIPT.prepare_invoke();
        script
            .key(lane.queue(&self.ns))
            .key(lane.live(&self.ns))
            .key(keys::sched_turn(&self.ns))
            .key(keys::sched_claims(&self.ns))
            .key(lane.capacity(&self.ns))
            .arg(seedq_protocol::now_ms())
            .arg(&self.ns)
            .arg(config.min_queued)
            .arg(config.queued_per_slot)
            .arg(most)
            .arg(TURN_SPAN);
        let flat: Vec<redis::Value> = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        let corrupt = |message: &str| StoreError::Corrupt {
            key: lane.queue(&self.ns),
            message: message.to_string(),
        };
        let mut picks = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [job, chunk] = pair else {
                return Err(corrupt("odd reply from the claim script"));
            };
            let job_id: String = redis::FromRedisValue::from_redis_value(job.clone())
                .map_err(|_| corrupt("a job id that is not text"))?;
            let chunk: u64 = redis::FromRedisValue::from_redis_value(chunk.clone())
                .map_err(|_| corrupt("a chunk index that is not a number"))?;
            picks.push(Pick { job_id, chunk });
        }
        Ok(Claimed::from_picks(picks))
    }

    /// Windows claimed more than `config.claim_stale_secs` ago and never released: their
    /// publisher died (or stalled). They are re-stamped as taken now, so the caller alone
    /// publishes them again and releases them.
    pub async fn take_stale_claims(
        &self,
        config: &SchedulerConfig,
        most: u64,
    ) -> Result<Vec<Claim>> {
        let now = seedq_protocol::now_ms();
        let before = now.saturating_sub(config.claim_stale_secs.saturating_mul(1000));
        let mut script = TAKE_STALE_SCRIPT.prepare_invoke();
        script
            .key(keys::sched_claims(&self.ns))
            .arg(now)
            .arg(before)
            .arg(most);
        let members: Vec<String> = self
            .run(|mut c| {
                let s = &script;
                async move { Ok(s.invoke_async(&mut c).await?) }
            })
            .await?;
        Ok(members.iter().filter_map(|m| Claim::parse(m)).collect())
    }

    /// Forgets windows whose chunks the broker has confirmed.
    pub async fn release_claims(&self, claims: &[Claim]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let key = keys::sched_claims(&self.ns);
        let members: Vec<String> = claims.iter().map(Claim::member).collect();
        self.run(|mut c| {
            let (k, m) = (key.clone(), members.clone());
            async move {
                redis::cmd("ZREM")
                    .arg(k)
                    .arg(m)
                    .query_async::<i64>(&mut c)
                    .await?;
                Ok(())
            }
        })
        .await
    }

    /// Windows claimed and not yet released (operator view, tests).
    pub async fn pending_claims(&self) -> Result<Vec<Claim>> {
        let key = keys::sched_claims(&self.ns);
        let members: Vec<String> = self
            .run(|mut c| {
                let k = key.clone();
                async move {
                    Ok(redis::cmd("ZRANGE")
                        .arg(k)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut c)
                        .await?)
                }
            })
            .await?;
        Ok(members.iter().filter_map(|m| Claim::parse(m)).collect())
    }

    /// Says that `node`'s seed slots hold `chunks` at once and that it runs `tasks` scripts at
    /// once (its script permits; 0 without a script consumer), for `ttl_secs`: renewed with
    /// each heartbeat, which reports both in this one round trip; a node that stops renewing
    /// stops counting.
    pub async fn set_capacities(
        &self,
        node: &str,
        chunks: u64,
        tasks: u64,
        ttl_secs: u64,
    ) -> Result<()> {
        let places = [(Lane::Seeds, chunks), (Lane::Scripts, tasks)];
        self.set_lane_capacities(node, &places, ttl_secs).await
    }

    async fn set_lane_capacities(
        &self,
        node: &str,
        places: &[(Lane, u64)],
        ttl_secs: u64,
    ) -> Result<()> {
        let expires = seedq_protocol::now_ms() + ttl_secs.max(1) * 1000;
        let mut pipe = redis::pipe();
        for (lane, n) in places {
            pipe.hset(lane.capacity(&self.ns), node, format!("{n} {expires}"))
                .ignore();
        }
        self.run(|mut c| {
            let pipe = pipe.clone();
            async move {
                pipe.query_async::<()>(&mut c).await?;
                Ok(())
            }
        })
        .await
    }

    /// Withdraws `node`'s capacity in both lanes (clean shutdown).
    pub async fn clear_capacity(&self, node: &str) -> Result<()> {
        let keys = [
            Lane::Seeds.capacity(&self.ns),
            Lane::Scripts.capacity(&self.ns),
        ];
        let node = node.to_string();
        self.run(|mut c| {
            let (keys, n) = (keys.clone(), node.clone());
            async move {
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.cmd("HDEL").arg(k).arg(&n).ignore();
                }
                pipe.query_async::<()>(&mut c).await?;
                Ok(())
            }
        })
        .await
    }

    /// A job's scheduling state: its priority (`None` before it is registered), cursor and
    /// verification fraction.
    pub async fn job_schedule(&self, id: &str) -> Result<JobSchedule> {
        let key = keys::totals(&self.ns, id);
        let (rank, cursor, verify): (Option<u8>, Option<u64>, Option<f64>) = self
            .run(|mut c| {
                let k = key.clone();
                async move {
                    Ok(redis::cmd("HMGET")
                        .arg(k)
                        .arg("priority")
                        .arg("published_upto")
                        .arg("verify_fraction")
                        .query_async(&mut c)
                        .await?)
                }
            })
            .await?;
        Ok(JobSchedule {
            priority: rank.and_then(Priority::from_rank),
            published: cursor.unwrap_or(0),
            verify_fraction: verify,
        })
    }
}

/// What [`Store::job_schedule`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobSchedule {
    /// `None` before the job is registered.
    pub priority: Option<Priority>,
    /// The scheduler's cursor: chunks below it were claimed for publishing.
    pub published: u64,
    /// The fraction of its chunks verified (`None` before the job is registered).
    pub verify_fraction: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_members_round_trip() {
        let c = Claim {
            job_id: "sieve-mt-1".into(),
            from: 3,
            to: 9,
            check: false,
        };
        assert_eq!(Claim::parse(&c.member()), Some(c.clone()));
        let check = Claim::of_check("sieve-mt-1", 7);
        assert_eq!(check.member(), "sieve-mt-1\t7\t8\tcheck");
        assert_eq!(Claim::parse(&check.member()), Some(check));
        assert_eq!(Claim::parse("a\t1\t2\tother"), None);
        assert_eq!(Claim::parse("a\t5\t5"), None, "empty window");
        assert_eq!(Claim::parse("a\t5"), None);
        assert_eq!(Claim::parse("a\t1\t2\t3"), None);
    }

    #[test]
    fn picks_group_into_one_window_per_job() {
        let p = |j: &str, c| Pick {
            job_id: j.into(),
            chunk: c,
        };
        let claimed = Claimed::from_picks(vec![p("a", 4), p("b", 0), p("a", 5), p("b", 1)]);
        assert_eq!(claimed.picks.len(), 4, "order kept");
        assert_eq!(
            claimed.claims,
            vec![
                Claim {
                    job_id: "a".into(),
                    from: 4,
                    to: 6,
                    check: false,
                },
                Claim {
                    job_id: "b".into(),
                    from: 0,
                    to: 2,
                    check: false,
                }
            ]
        );
    }
}
