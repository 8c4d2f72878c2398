//! The Lua scripts that make result writes atomic and exactly-once.
//!
//! APPLY and RECORD_FAILURE take the job's keys in the order of `keys::all_job_keys`:
//! 1 spec, 2 totals, 3 done, 4 survivors (flagged seeds), 5 summaries, 6 failures,
//! 7 failure_log, 8 dead, 9 script results, 10 cancelled, 11 survivor pieces, 12 survivor index,
//! 13 chunk facts, 14 checks (APPLY adds 15 the throughput hash, 16 bad slots, 17 the slot's
//! log, 18 the scheduler's claims; RESOLVE_CHECK adds 15 bad slots, 16 claims, 17 the checked
//! slot's log, 18 the verifier's log).
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
local JOB_KEYS = 14
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

-- What a slot's check log keeps at most (the oldest entries go first).
local SLOT_LOG_CAP = 100000

-- The scheduler claim under which a check message of `member` is published (see
-- `seedq_store::Claim`): taken again by a heartbeat if its publisher dies before the confirm.
local function check_claim(job, member)
  local index = string.sub(member, 2)
  return job .. '\t' .. index .. '\t' .. string.format('%d', tonumber(index) + 1) .. '\tcheck'
end

local function notify(member)
  redis.call('PUBLISH', KEYS[2] .. ':events', member)
end

local function settle(now)
  local total = tonumber(redis.call('HGET', KEYS[2], 'chunks_total') or '-1')
  if total < 0 then return end
  local settled = redis.call('SCARD', KEYS[3]) + redis.call('HLEN', KEYS[8])
  if settled < total and redis.call('EXISTS', KEYS[10]) == 1 then
    -- Cancelled: what was never published (past the scheduler's cursor) will not run either,
    -- so it is settled too.
    local published = tonumber(redis.call('HGET', KEYS[2], 'published_upto') or '0')
    if published < total then settled = settled + total - published end
  end
  if settled < total then return end
  -- A chunk drawn for verification, or re-run after its slot was found wrong, may still change
  -- the results: the job is finished once those checks are settled (or it is cancelled).
  if redis.call('HLEN', KEYS[14]) > 0 and redis.call('EXISTS', KEYS[10]) == 0 then return end
  redis.call('HSETNX', KEYS[2], 'finished_at_ms', now)
  local ttl = tonumber(redis.call('HGET', KEYS[2], 'ttl_secs') or '0')
  if ttl and ttl > 0 then
    for i = 1, JOB_KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
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
/// (sieve), 14 the job epoch of the message, 15 the slot (`<node>/<slot>`) or '' (scripts),
/// 16 the chunk's facts (`<digest> <survivors> <node/slot> <flagged seeds or ->`) or '',
/// 17 a uniform draw in [0, 1), 18 the verify order JSON, 19 the job id, 20 n, 21 the batch's
/// cap on stored script results in bytes (0 none), then n pairs (flagged seed, record json).
/// Returns 1 applied, 2 applied and drawn for verification (the caller publishes the check,
/// whose claim is recorded), 0 already done, -1 unknown job, -2 another epoch or outside the
/// plan, -4 the slot is flagged bad (nothing applied: it must quarantine itself), -6 the script
/// result would pass the batch's cap (nothing applied).
/// When it does not apply, it drops the pieces this attempt wrote (unless they are the ones the
/// survivor index already names: a retried call of the attempt that won).
///
/// With verification on (the job's `verify_fraction` > 0) the facts are kept and the member is
/// logged for the slot, so a slot found wrong later has it run again.
///
/// The script's work is O(1) in a chunk's survivors (their pieces were written before it) and
/// O(n) in flagged seeds, which are rare by construction (alpha).
pub const APPLY: &str = concat!(
    finish_fn!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then drop_pieces(ARGV[1], ARGV[12]) return -1 end
if not current(ARGV[14], ARGV[1]) then drop_pieces(ARGV[1], ARGV[12]) return -2 end
if ARGV[15] ~= '' and redis.call('HEXISTS', KEYS[16], ARGV[15]) == 1 then
  drop_pieces(ARGV[1], ARGV[12])
  return -4
end
local out_delta = 0
if ARGV[10] ~= '' then
  -- A script result replaces the task's attempt record: the batch's stored bytes move by the
  -- difference, and may not pass the cap (an already-done task is answered below).
  out_delta = string.len(ARGV[11]) - redis.call('HSTRLEN', KEYS[9], ARGV[10])
  local cap = tonumber(ARGV[21])
  if cap > 0 and out_delta > 0 and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0
     and tonumber(redis.call('HGET', KEYS[2], 'output_bytes') or '0') + out_delta > cap then
    return -6
  end
end
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
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[9], ARGV[10], ARGV[11])
  redis.call('HINCRBY', t, 'output_bytes', out_delta)
end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[12], ARGV[1], ARGV[12]) end
local added = tonumber(ARGV[13])
local n = tonumber(ARGV[20])
for i = 0, n - 1 do
  added = added + redis.call('HSETNX', KEYS[4], ARGV[22 + 2 * i], ARGV[23 + 2 * i])
end
if added > 0 then redis.call('HINCRBY', t, 'survivors', added) end
if ARGV[7] ~= '' then
  local sample = tonumber(ARGV[8])
  local alpha = tonumber(ARGV[9])
  local old = tonumber(redis.call('HGET', KEYS[15], ARGV[7]) or '')
  local new = sample
  if old then new = alpha * sample + (1 - alpha) * old end
  redis.call('HSET', KEYS[15], ARGV[7], string.format('%.17g', new))
end
local code = 1
if ARGV[16] ~= '' and tonumber(redis.call('HGET', t, 'verify_fraction') or '0') > 0 then
  redis.call('HSET', KEYS[13], ARGV[1], ARGV[16])
  redis.call('RPUSH', KEYS[17], ARGV[19] .. '\t' .. ARGV[1])
  redis.call('LTRIM', KEYS[17], -SLOT_LOG_CAP, -1)
  if tonumber(ARGV[17]) < tonumber(redis.call('HGET', t, 'verify_fraction'))
     and redis.call('EXISTS', KEYS[10]) == 0 then
    redis.call('HSET', KEYS[14], ARGV[1], ARGV[18])
    redis.call('ZADD', KEYS[18], ARGV[4], check_claim(ARGV[19], ARGV[1]))
    code = 2
  end
end
settle(ARGV[4])
notify(ARGV[1])
return code
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
for i = 1, JOB_KEYS do redis.call('PERSIST', KEYS[i]) end
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

/// KEYS: done, script results, totals. ARGV: member, task id, result json, the same without
/// its output, the batch's cap on stored script results in bytes (0 none).
/// Returns 0 the task is done (nothing kept), 1 kept, 2 kept without its output (the cap).
pub const SAVE_ATTEMPT: &str = r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local old = redis.call('HSTRLEN', KEYS[2], ARGV[2])
local json, code = ARGV[3], 1
local cap = tonumber(ARGV[5])
local used = tonumber(redis.call('HGET', KEYS[3], 'output_bytes') or '0')
if cap > 0 and string.len(json) > old and used + string.len(json) - old > cap then
  json, code = ARGV[4], 2
end
redis.call('HSET', KEYS[2], ARGV[2], json)
redis.call('HINCRBY', KEYS[3], 'output_bytes', string.len(json) - old)
return code
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

/// Settles a check (verification by redundancy, `seedq_protocol::check`) with a second run's
/// result, the CPU reference's decision, or a give-up.
///
/// KEYS: the job's 14, then 15 bad slots, 16 the scheduler's claims, 17 the log of the slot
/// whose result is checked, 18 the verifier's log (`referee`; any key otherwise).
/// ARGV: 1 member, 2 mode (`run`, `verify`: a run without its survivors, `referee`, `giveup`),
/// 3 this result's digest, 4 its facts
/// (`<digest> <survivors> <node/slot> <flagged seeds or ->`), 5 its survivor index entry or '',
/// 6 its survivors (sieve), 7 now_ms, 8 the message's job epoch, 9 its summary json or '',
/// 10 busy_us, 11 job id, 12 namespace, 13 the verifier's digest (`referee`), 14 the verifier's
/// slot (`referee`), 15 why a slot is flagged bad, 16 the redo order JSON for the checked slot's
/// chunks, 17 the one for the verifier's (`referee`), 18 n, then n pairs (flagged seed, record
/// json).
///
/// Returns `{code, first wrong, verifier wrong, then redo picks job, member, ...}`: code 1
/// settled, 3 the verification differs (decide it with the reference and call again in
/// `referee` mode), 0 no such check pending (settled already), -1 unknown job, -2 another epoch,
/// -4 the run's slot is flagged bad (nothing settled: it must quarantine itself), -5 a `verify`
/// met a redo (nothing settled: call again in `run` mode).
///
/// `referee` replaces the applied result when it differs from the reference's (the correction
/// path: survivors, pieces, flagged seeds, summary and facts swapped, the job's totals moved by
/// the difference), flags whichever slot was wrong, and turns every entry of a wrong slot's log
/// into a redo check (each with its scheduler claim), reopening a finished job.
/// A `run` of a redo replaces the applied result when it differs.
pub const RESOLVE_CHECK: &str = concat!(
    finish_fn!(),
    r#"
local function parse_facts(f)
  if not f then return nil, 0, nil, nil end
  local d, sv, slot, fl = string.match(f, '^(%S+) (%d+) (%S+) (%S+)$')
  return d, tonumber(sv or '0'), slot, fl
end

local function replace(member)
  local _, old_surv, _, old_flagged = parse_facts(redis.call('HGET', KEYS[13], member))
  local delta = tonumber(ARGV[6]) - old_surv
  local old_entry = redis.call('HGET', KEYS[12], member)
  if old_entry then
    local token, pieces = string.match(old_entry, '^(%S+) (%d+)')
    for i = 0, tonumber(pieces) - 1 do
      redis.call('HDEL', KEYS[11], member .. '.' .. token .. '.' .. i)
    end
  end
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[12], member, ARGV[5])
  else
    redis.call('HDEL', KEYS[12], member)
  end
  if old_flagged and old_flagged ~= '-' then
    for seed in string.gmatch(old_flagged, '[^,]+') do
      delta = delta - redis.call('HDEL', KEYS[4], seed)
    end
  end
  local n = tonumber(ARGV[18])
  for i = 0, n - 1 do
    delta = delta + redis.call('HSETNX', KEYS[4], ARGV[19 + 2 * i], ARGV[20 + 2 * i])
  end
  if delta ~= 0 then redis.call('HINCRBY', KEYS[2], 'survivors', delta) end
  if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[5], member, ARGV[9])
  else
    redis.call('HDEL', KEYS[5], member)
  end
  redis.call('HSET', KEYS[13], member, ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'corrected', 1)
end

local function jk(job, part) return ARGV[12] .. ':job:' .. job .. ':' .. part end

-- Every chunk the wrong slot completed since its last passed self-test (its log, `log`) runs
-- again elsewhere, under the redo order `order`.
local function fan_out(bad_slot, log, order, now)
  local parts = {}
  for i = 1, JOB_KEYS do parts[i] = string.match(KEYS[i], ':([^:]+)$') end
  local picks = {}
  for _, e in ipairs(redis.call('LRANGE', log, 0, -1)) do
    local job, m = string.match(e, '^(.-)\t(c%d+)$')
    if job and not (job == ARGV[11] and m == ARGV[1])
       and redis.call('EXISTS', jk(job, 'spec')) == 1
       and redis.call('SISMEMBER', jk(job, 'done'), m) == 1
       and redis.call('HEXISTS', jk(job, 'checks'), m) == 0 then
      local _, _, slot = parse_facts(redis.call('HGET', jk(job, 'facts'), m))
      if slot == bad_slot then
        redis.call('HSET', jk(job, 'checks'), m, order)
        redis.call('ZADD', KEYS[16], now, check_claim(job, m))
        if redis.call('HDEL', jk(job, 'totals'), 'finished_at_ms') == 1 then
          for i = 1, JOB_KEYS do redis.call('PERSIST', jk(job, parts[i])) end
        end
        picks[#picks + 1] = job
        picks[#picks + 1] = m
      end
    end
  end
  redis.call('DEL', log)
  return picks
end

if redis.call('EXISTS', KEYS[1]) == 0 then drop_pieces(ARGV[1], ARGV[5]) return {-1} end
if not current(ARGV[8], ARGV[1]) then drop_pieces(ARGV[1], ARGV[5]) return {-2} end
local order = redis.call('HGET', KEYS[14], ARGV[1])
if not order then drop_pieces(ARGV[1], ARGV[5]) return {0} end
local kind = cjson.decode(order)['kind']
-- A verification run's survivors are not sent (compared by digest only); a redo needs them.
if ARGV[2] == 'verify' and kind ~= 'verify' then return {-5} end
if ARGV[2] == 'run' or ARGV[2] == 'verify' then
  local _, _, runner = parse_facts(ARGV[4])
  if runner and redis.call('HEXISTS', KEYS[15], runner) == 1 then
    drop_pieces(ARGV[1], ARGV[5])
    return {-4}
  end
end
local now = ARGV[7]
local t = KEYS[2]
local old_digest, _, old_slot = parse_facts(redis.call('HGET', KEYS[13], ARGV[1]))
local first_wrong, verifier_wrong, picks = 0, 0, {}
if ARGV[2] == 'giveup' then
  redis.call('HINCRBY', t, 'unverified', 1)
elseif (ARGV[2] == 'run' or ARGV[2] == 'verify') and kind == 'verify' then
  drop_pieces(ARGV[1], ARGV[5])
  if ARGV[3] ~= old_digest then return {3} end
  -- One matching chunk vouches for itself only: a slot that drops a survivor now and then
  -- gets most chunks right, so its log is cleared by a passed self-test alone (SLOT_CHECKED).
  redis.call('HINCRBY', t, 'verified', 1)
  redis.call('HINCRBY', t, 'busy_us', ARGV[10])
elseif ARGV[2] == 'run' then
  redis.call('HINCRBY', t, 'redone', 1)
  redis.call('HINCRBY', t, 'busy_us', ARGV[10])
  if ARGV[3] ~= old_digest then replace(ARGV[1]) else drop_pieces(ARGV[1], ARGV[5]) end
else
  redis.call('HINCRBY', t, 'mismatches', 1)
  redis.call('HINCRBY', t, 'busy_us', ARGV[10])
  if ARGV[3] ~= old_digest then
    first_wrong = 1
    replace(ARGV[1])
    if old_slot then
      redis.call('HSET', KEYS[15], old_slot, ARGV[15])
      picks = fan_out(old_slot, KEYS[17], ARGV[16], now)
    end
  else
    drop_pieces(ARGV[1], ARGV[5])
  end
  if ARGV[3] ~= ARGV[13] then
    verifier_wrong = 1
    redis.call('HSET', KEYS[15], ARGV[14], ARGV[15])
    for _, p in ipairs(fan_out(ARGV[14], KEYS[18], ARGV[17], now)) do picks[#picks + 1] = p end
  end
end
redis.call('HDEL', KEYS[14], ARGV[1])
redis.call('HSET', t, 'updated_at_ms', now)
settle(now)
notify(ARGV[1])
local out = {1, first_wrong, verifier_wrong}
for _, p in ipairs(picks) do out[#out + 1] = p end
return out
"#
);

/// A slot passed its known-answer self-test, the check that vouches for what it completed so
/// far: its log starts over. A slot still flagged bad keeps its flag and log unless `ARGV[2]` is '1' (the
/// self-test that ends its quarantine).
/// KEYS: 1 bad slots, 2 the slot's log. ARGV: 1 `<node>/<slot>`, 2 '1' to clear the flag.
/// Returns 1 when the log was cleared.
pub const SLOT_CHECKED: &str = r#"
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2])
return 1
"#;
