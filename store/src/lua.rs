//! The Lua scripts that make result writes atomic and exactly-once.
//!
//! APPLY and RECORD_FAILURE take the job's keys in the order of `keys::all_job_keys`:
//! 1 spec, 2 totals, 3 done, 4 survivors (flagged seeds), 5 summaries, 6 failures,
//! 7 failure_log, 8 dead, 9 script results, 10 cancelled, 11 survivor pieces, 12 survivor index
//! (APPLY adds 13: the throughput hash).
//!
//! Every script that changes a job's progress ends by publishing the member it touched on the
//! job's events channel (`KEYS[2] .. ':events'`, see `seedq_protocol::keys::job_events`), so
//! `wait` wakes at once instead of polling. Pub/sub is fire-and-forget: waiters still re-read
//! the totals on a slow timer, and a lost message only delays a redraw.

/// Shared tail: when every chunk is done or dead-lettered, stamp `finished_at_ms` (once) and
/// give every job key the job's TTL. Keys created after the stamp (a late failure log entry) get
/// it on the next settle, so nothing of a finished job lives forever.
macro_rules! finish_fn {
    () => {
        r#"
-- Whether a message of job life `epoch` about `member` belongs to the stored job: the same
-- epoch (a job stored before epochs has none and takes any), and a chunk index inside the plan.
local function current(epoch, member)
  local stored = redis.call('HGET', KEYS[2], 'epoch')
  if stored and stored ~= epoch then return false end
  local index = string.match(member, '^c(%d+)$')
  if index then
    local total = tonumber(redis.call('HGET', KEYS[2], 'chunks_total') or '-1')
    if tonumber(index) >= total then return false end
  end
  return true
end

-- Drops the survivor pieces an attempt wrote (index entry `<token> <pieces> <count>`) when it is
-- not the attempt the survivor index names: a duplicate, or a message of another life. The
-- attempt that won may come back here too (a retried call whose first reply was lost), and its
-- pieces must stay.
local function drop_pieces(member, entry)
  if entry == '' or redis.call('HGET', KEYS[12], member) == entry then return end
  local token, pieces = string.match(entry, '^(%S+) (%d+)')
  for i = 0, tonumber(pieces) - 1 do
    redis.call('HDEL', KEYS[11], member .. '.' .. token .. '.' .. i)
  end
end

local function notify(member)
  redis.call('PUBLISH', KEYS[2] .. ':events', member)
end

local function settle(now)
  local total = tonumber(redis.call('HGET', KEYS[2], 'chunks_total') or '-1')
  if total < 0 then return end
  local settled = redis.call('SCARD', KEYS[3]) + redis.call('HLEN', KEYS[8])
  if settled < total and redis.call('EXISTS', KEYS[10]) == 1 then
    -- Cancelled: what was never published (the scheduler's cursor, or a batch's confirmed
    -- watermark) will not run either, so it is settled too.
    local published = tonumber(redis.call('HGET', KEYS[2], 'published_upto') or '0')
    if published < total then settled = settled + total - published end
  end
  if settled < total then return end
  redis.call('HSETNX', KEYS[2], 'finished_at_ms', now)
  local ttl = tonumber(redis.call('HGET', KEYS[2], 'ttl_secs') or '0')
  if ttl and ttl > 0 then
    for i = 1, 12 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
"#
    };
}

/// KEYS: spec, totals, jobs index.
/// ARGV: job json, chunks_total, seeds_total, created_at_ms, ttl_secs, job id, kind, epoch.
/// Returns nil when created, else the stored job JSON.
pub const CREATE_JOB: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('HSET', KEYS[2], 'chunks_total', ARGV[2], 'seeds_total', ARGV[3],
             'created_at_ms', ARGV[4], 'ttl_secs', ARGV[5], 'kind', ARGV[7])
  if ARGV[8] ~= '0' then redis.call('HSET', KEYS[2], 'epoch', ARGV[8]) end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
  return false
end
return redis.call('GET', KEYS[1])
"#;

/// ARGV: 1 member, 2 seeds, 3 busy_us, 4 now_ms, 5 node, 6 summary json or '',
/// 7 throughput field or '', 8 sample, 9 alpha, 10 script task id or '', 11 script result json,
/// 12 survivor index entry (`<token> <pieces> <survivors>`) or '', 13 survivors to count
/// (sieve), 14 the job epoch of the message, 15 n, then n pairs (flagged seed, record json).
/// Returns 1 applied, 0 already done, -1 unknown job, -2 another epoch or outside the plan.
/// When it does not apply, it drops the pieces this attempt wrote (unless they are the ones the
/// survivor index already names: a retried call of the attempt that won).
///
/// The script's work is O(1) in a chunk's survivors (their pieces were written before it) and
/// O(n) in flagged seeds, which are rare by construction (alpha).
pub const APPLY: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then drop_pieces(ARGV[1], ARGV[12]) return -1 end
if not current(ARGV[14], ARGV[1]) then drop_pieces(ARGV[1], ARGV[12]) return -2 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then drop_pieces(ARGV[1], ARGV[12]) return 0 end
local t = KEYS[2]
redis.call('HINCRBY', t, 'chunks_done', 1)
redis.call('HINCRBY', t, 'seeds_done', ARGV[2])
redis.call('HINCRBY', t, 'busy_us', ARGV[3])
redis.call('HINCRBY', t, 'node:' .. ARGV[5], 1)
redis.call('HSETNX', t, 'started_at_ms', ARGV[4])
redis.call('HSET', t, 'updated_at_ms', ARGV[4])
redis.call('HDEL', KEYS[8], ARGV[1])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], ARGV[1], ARGV[6]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[9], ARGV[10], ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[12], ARGV[1], ARGV[12]) end
local added = tonumber(ARGV[13])
local n = tonumber(ARGV[15])
for i = 0, n - 1 do
  added = added + redis.call('HSETNX', KEYS[4], ARGV[16 + 2 * i], ARGV[17 + 2 * i])
end
if added > 0 then redis.call('HINCRBY', t, 'survivors', added) end
if ARGV[7] ~= '' then
  local sample = tonumber(ARGV[8])
  local alpha = tonumber(ARGV[9])
  local old = tonumber(redis.call('HGET', KEYS[13], ARGV[7]) or '')
  local new = sample
  if old then new = alpha * sample + (1 - alpha) * old end
  redis.call('HSET', KEYS[13], ARGV[7], string.format('%.17g', new))
end
settle(ARGV[4])
notify(ARGV[1])
return 1
"#
);

/// ARGV: 1 member, 2 reason, 3 dead ('1'/'0'), 4 now_ms, 5 event json, 6 log cap, 7 the job
/// epoch of the message, 8 '1' when this is a `cancelled` skip (valid only while the cancel
/// holds: a `resume` in between has planned the member again).
/// Returns 1 recorded, -1 unknown job, -2 another epoch or outside the plan, -3 not cancelled.
pub const RECORD_FAILURE: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if not current(ARGV[7], ARGV[1]) then return -2 end
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[10]) == 0 then return -3 end
redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
redis.call('LPUSH', KEYS[7], ARGV[5])
redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[6]) - 1)
redis.call('HSET', KEYS[2], 'updated_at_ms', ARGV[4])
if ARGV[3] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[8], ARGV[1], ARGV[2])
end
settle(ARGV[4])
notify(ARGV[1])
return 1
"#
);

/// Cancels a job: consumers skip its published chunks (each recorded dead as `cancelled`), the
/// scheduler publishes no more, and the job is finished once nothing published is unsettled.
/// ARGV: 1 now_ms. Returns 1, or -1 for an unknown job.
pub const CANCEL: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SET', KEYS[10], '1')
settle(ARGV[1])
notify('cancelled')
return 1
"#
);

/// Re-opens a job before dead-lettered members are published again (`dlq replay`, `resume`):
/// the members leave the dead hash, `finished_at_ms` goes and the job's keys lose their TTL, so
/// `status` says running until the republished work settles (and the TTL comes back then). If
/// the members turn out to be done already, the settle at the end stamps the job finished again
/// at once: nothing else would, since applying a done member changes nothing.
/// ARGV: 1 now_ms, then the members. Returns the number of dead entries removed, -1 unknown job.
pub const REOPEN: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('HDEL', KEYS[8], ARGV[i])
end
redis.call('HDEL', KEYS[2], 'finished_at_ms')
for i = 1, 12 do redis.call('PERSIST', KEYS[i]) end
settle(ARGV[1])
notify('reopened')
return removed
"#
);

/// Marks members dead again when their republish failed after a [`REOPEN`] (`resume`): a member
/// that is done meanwhile stays done. Without it they would be neither dead nor queued, and the
/// next `resume` would take them for queued work.
/// ARGV: 1 now_ms, then pairs (member, reason). Returns the number marked, -1 unknown job.
pub const MARK_DEAD: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local marked = 0
for i = 2, #ARGV - 1, 2 do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then
    marked = marked + redis.call('HSET', KEYS[8], ARGV[i], ARGV[i + 1])
  end
end
settle(ARGV[1])
notify('dead')
return marked
"#
);

/// KEYS: done, script results. ARGV: member, task id, result json.
pub const SAVE_ATTEMPT: &str = r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"#;

/// KEYS: throughput hash. ARGV: field, sample, alpha. Returns the new EMA as text.
pub const EMA: &str = r#"
local sample = tonumber(ARGV[2])
local alpha = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
local new = sample
if old then new = alpha * sample + (1 - alpha) * old end
local text = string.format('%.17g', new)
redis.call('HSET', KEYS[1], ARGV[1], text)
return text
"#;
