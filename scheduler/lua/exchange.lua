-- One round trip per daemon tick: settle the jobs that ended, then claim the next ones.
--
-- Settle writes each outcome the way RQ's worker does: job hash status and times, the results stream
-- (rq:results:<id>), the finished/failed/scheduled registry, the queue (retries, put back), and removal
-- from the started registry. Claim pops up to N ids, P0 queue first, and adds each to RQ's started
-- registry (rq:wip:<queue>) as "<job id>:<execution id>" in the same atomic step, so a kill -9 at any
-- instant leaves every job in its queue, settled, or claimed under an execution id that names its
-- daemon (recover.lua puts those back once the daemon's lease expires).
--
-- Keys (the `K` table below, written into this source when it is loaded, like `fields`, so a call
--   sends none): for each priority P0..P3: queue, started, finished, failed, scheduled, canceled
--   (24 keys); then the shed registry and the skipped registry (sorted sets of job ids by time), and the
--   foreign list (queue entries that named no RQ job).
-- ARGV[1..9]: now (unix s; 0: Redis's clock, for a claim parked behind a watch), now (RQ ISO text),
--   worker name, jobs to claim, execution-id prefix,
--   first execution counter, default timeout (s), lease slack (s), number of settlements S;
--   then S x 5 settlement values: the text fields joined by "\31" (outcome (finished|failed|retry|
--   put_back|preempted|stopped|skipped|shed|deferred), priority index, execution id, started_at (ISO), ended_at (ISO),
--   started (unix s), ended (unix s), ttl (s, -1 = forever)), then job id, payload, exc_info, extra;
--   one packed argument instead of eight cuts the client's encoding work per job. In order:
--   outcome, job id, priority index,
--   execution id, started_at (ISO), ended_at (ISO), started (unix s), ended (unix s), ttl (s, -1 =
--   forever), payload (base64 return value or base64 zlib exception text), exc_info (zlib text),
--   extra: for retry "<retries left>:<unix s to run at, 0 = now>:<1 at front|0>"; for preempted the
--   checkpoint to resume from ("" for none), the same for stopped (whose exc_info is the plain reason);
--   for skipped and shed the pressure level; for deferred
--   the unix time to run at;
--   then the queues the claim may take from, most urgent first, as one digit per queue index ("0123":
--   all; "0": P0 only, under memory pressure; "013": P2 paused by the operator), this daemon's lease
--   key and the token it holds there.
-- The job-hash fields returned for each claimed job are written into this source when it is loaded
-- (the `fields` table below; see adaptive_scheduler.payload.FIELDS), so they are not sent with every call.
-- Every outcome is fenced: it is written only if its execution's started-registry entry is still
-- there, and the ids of those that were not (stale: reclaimed by another daemon, or lost with Redis'
-- data) are returned, so a daemon that lost its claims never writes over the work of another.
-- Returns {ids of settled jobs whose dependents wait, flat claim list, emptied, stale ids, damaged ids
-- (job hash gone or not a hash: nothing written)}; the claim list holds,
--   per job: priority index, job id, execution id ("" when the job hash is gone: RQ drops such ids
--   too; "!" when the entry is not ours: not an RQ job id (RQ allows [A-Za-z0-9_-]), or its key holds
--   another type than a hash; such entries are dropped and their keys left untouched), the job's
--   timeout, then one value per requested field. `emptied` has one character per
--   queue, "1" where this claim left the queue empty (popped fewer ids than it asked for, or all it held), "2" where
--   the queue's key is not a list (another application's key, or a damaged one): it is not served.
__SERVER_TIME__
local now, iso, worker = tonumber(ARGV[1]), ARGV[2], ARGV[3]
-- a claim parked behind a watch leaves a mark per job it claims: if its reply never reaches the daemon
-- (a connection dead without a word), the daemon finds the mark and reconciles (arrivals.Arrivals)
local parked = now == 0
if parked then now, iso = server_time() end
local K = {__KEYS__}
local STRIDE = 5
local PACKED = '^' .. string.rep('([^\31]*)\31', 7) .. '([^\31]*)$'
local PER = 6
local FIRST = 10
local settled = tonumber(ARGV[9])

local zadds, zrems = {}, {}
local function push(bucket, key, a, b)
  local list = bucket[key]
  if not list then list = {}; bucket[key] = list end
  list[#list + 1] = a
  if b then list[#list + 1] = b end
end

-- one settlement as a table indexed like the documented order: [0] outcome, [1] id, ... [11] extra
local function settlement(i)
  local outcome, qi, execution, started_iso, ended_iso, started, ended, ttl = string.match(ARGV[i], PACKED)
  return {[0] = outcome, ARGV[i + 1], qi, execution, started_iso, ended_iso, started, ended, ttl,
    ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
end

local function result(id, kind, ttl, a, field)
  local stream = 'rq:results:' .. id
  if a[9] ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '10', '*', 'type', kind, 'worker_name', worker,
      'execution_id', a[3], 'execution_started_at', a[6],
      'execution_ended_at', a[7], field, a[9])
  else
    redis.call('XADD', stream, 'MAXLEN', '10', '*', 'type', kind, 'worker_name', worker,
      'execution_id', a[3], 'execution_started_at', a[6],
      'execution_ended_at', a[7])
  end
  if ttl > 0 then redis.call('EXPIRE', stream, ttl) end
end

-- registry scores as text, formatted once per call and per distinct ttl or timeout: Lua formats a number
-- with printf("%.14g") at every redis.call (printf and strtod: ~2-3 % of Redis samples in a perf profile)
local texts = {}
local function at(offset)
  local text = texts[offset]
  if not text then
    text = string.format('%.17g', now + offset)
    texts[offset] = text
  end
  return text
end

-- a claim's expiry in the started registry, in whole seconds rounded up, as RQ writes it: that registry
-- is small (the jobs in flight), so Redis keeps it as a listpack and reads every score before the place
-- of each new entry; an integer is read as it is, a fraction parsed (strtod) at every step (~10 % of
-- the Redis CPU per job of a drain: `python -m bench.drain`). The finished registry keeps fractions: it
-- grows into a skiplist, where equal whole-second scores would be ordered by comparing the ids.
local seconds = {}
local function expiry(offset)
  local text = seconds[offset]
  if not text then
    text = string.format('%d', math.ceil(now + offset))
    seconds[offset] = text
  end
  return text
end

local function score(ttl)
  if ttl < 0 then return '+inf' end
  return at(ttl)
end

-- An outcome's first write to the job hash, which also checks that the hash is still the job's: every
-- first write sets 'status', which the claim wrote. A hash replaced by another type of key while the
-- job ran refuses the write (WRONGTYPE); one deleted (or replaced by a hash without 'status') takes
-- every field as new, and those are removed again at once: nothing of it is left. One HSET instead of
-- TYPE + HSET per settled job. Any other error (Redis is full) stops the call before anything is written.
local function write_job(key, ...)
  local added = redis.pcall('HSET', key, ...)
  if type(added) == 'table' then
    if string.sub(added.err, 1, 9) == 'WRONGTYPE' then return false end
    error(added)
  end
  local n = select('#', ...)
  if added * 2 < n then return true end
  local names = {}
  for j = 1, n, 2 do names[#names + 1] = (select(j, ...)) end
  redis.call('HDEL', key, unpack(names))
  return false
end

-- settle
local dependents = {}
local stale, damaged = {}, {}
for i = FIRST, FIRST + settled * STRIDE - 1, STRIDE do
  local a = settlement(i)
  local outcome, id, base = a[0], a[1], PER * tonumber(a[2])
  local ttl = tonumber(a[8])
  local key = 'rq:job:' .. id
  local entry = id .. ':' .. a[3]
  local written = true
  -- fencing: an outcome applies only while this execution's claim is still in the started registry;
  -- once it is gone (another daemon reclaimed the job, or Redis lost it), nothing of it is written.
  -- ZRANK, not ZSCORE: an integer reply, where a score is a double formatted with printf
  if not redis.call('ZRANK', K[base + 2], entry) then
    stale[#stale + 1] = id
  else
    push(zrems, K[base + 2], entry)
    -- one damaged job must not cost the batch: a job hash deleted or replaced by another type of key
    -- while the job ran is reported, its claim removed, and nothing written for it (write_job)
    if outcome == 'finished' then
      written = write_job(key, 'status', 'finished', 'started_at', a[4], 'ended_at', a[5])
      if written then
        if ttl == 0 then
          redis.call('DEL', key)
        else
          result(id, 1, ttl, a, 'return_value')
          if ttl > 0 then redis.call('EXPIRE', key, ttl) end
          push(zadds, K[base + 3], score(ttl), id)
        end
        dependents[#dependents + 1] = key .. ':dependents'
      end
    elseif outcome == 'failed' then
      written = write_job(key, 'status', 'failed', 'started_at', a[4], 'ended_at', a[5], 'exc_info', a[10])
      if written then
        result(id, 2, ttl, a, 'exc_string')
        if ttl > 0 then redis.call('EXPIRE', key, ttl) end
        push(zadds, K[base + 4], score(ttl), id)
        dependents[#dependents + 1] = key .. ':dependents'
      end
    elseif outcome == 'retry' then
      local left, run_at, front = string.match(a[11], '^(%d+):([%d.]+):(%d)$')
      if tonumber(run_at) > 0 then
        written = write_job(key, 'status', 'scheduled', 'retries_left', left, 'exc_info', a[10])
        if written then push(zadds, K[base + 5], run_at, id) end
      else
        written = write_job(key, 'status', 'queued', 'retries_left', left, 'exc_info', a[10])
        if written and front == '1' then redis.call('LPUSH', K[base + 1], id)
        elseif written then redis.call('RPUSH', K[base + 1], id) end
      end
    elseif outcome == 'preempted' then -- stopped under memory pressure: the front of its queue
      written = write_job(key, 'status', 'queued')
      if written then
        if a[11] ~= '' then redis.call('HSET', key, 'asched_checkpoint', a[11]) end
        redis.call('HINCRBY', key, 'asched_preemptions', 1)
        redis.call('LPUSH', K[base + 1], id)
      end
    elseif outcome == 'stopped' then -- stopped for memory, to run again: the front of its queue, counted
      written = write_job(key, 'status', 'queued', 'asched_reason', a[10])
      if written then
        if a[11] ~= '' then redis.call('HSET', key, 'asched_checkpoint', a[11]) end
        redis.call('HINCRBY', key, 'asched_memory_stops', 1)
        redis.call('LPUSH', K[base + 1], id)
      end
    elseif outcome == 'skipped' or outcome == 'shed' then -- not run, parked with the reason; RQ: canceled
      written = write_job(key, 'status', 'canceled', 'ended_at', a[5], 'asched_outcome', outcome,
        'asched_reason', a[10], 'asched_level', a[11])
      if written then
        push(zadds, K[base + 6], at(0), id)
        if outcome == 'shed' then
          redis.call('PERSIST', key)
          push(zadds, K[25], at(0), id)
        else -- skipped: kept for the result ttl, then gone (hash and entry), so heartbeats cannot pile up
          push(zadds, K[26], at(0), id)
          if ttl > 0 then
            redis.call('EXPIRE', key, ttl)
            redis.call('ZREMRANGEBYSCORE', K[26], '-inf', at(-ttl))
          end
        end
      end
    elseif outcome == 'deferred' then -- its task's circuit breaker is open: scheduled until it may run
      written = write_job(key, 'status', 'scheduled', 'asched_reason', a[10])
      if written then push(zadds, K[base + 5], a[11], id) end
    else -- put_back: not run, or stopped part-way: the front of its queue
      written = write_job(key, 'status', 'queued')
      if written then redis.call('LPUSH', K[base + 1], id) end
    end
    if not written then damaged[#damaged + 1] = id end
  end
end
for key, list in pairs(zadds) do redis.call('ZADD', key, unpack(list)) end
for key, list in pairs(zrems) do redis.call('ZREM', key, unpack(list)) end
local with_dependents = {}
if #dependents > 0 and redis.call('EXISTS', unpack(dependents)) > 0 then
  for _, dkey in ipairs(dependents) do
    if redis.call('EXISTS', dkey) == 1 then
      with_dependents[#with_dependents + 1] = string.sub(dkey, 8, -12)
    end
  end
end

-- A queue entry that names no RQ job (an id outside RQ's [A-Za-z0-9_-], or a key of another type) is
-- not run and not lost: it moves to the foreign list (the most recent FOREIGN_KEPT are kept), and the
-- key it names, not ours, is left untouched.
local function refuse(id)
  redis.call('RPUSH', K[27], id)
  redis.call('LTRIM', K[27], -__FOREIGN_KEPT__, -1)
end

-- claim: only under this daemon's own lease (a daemon that lost it, and was reclaimed, claims nothing;
-- nobody would reclaim claims made under an id no longer in the daemon set)
local n = tonumber(ARGV[4])
local lease_key, token = ARGV[11 + settled * STRIDE], ARGV[12 + settled * STRIDE]
if n > 0 and redis.call('GET', lease_key) ~= token then n = 0 end
local counter = tonumber(ARGV[6])
local default_timeout, slack = tonumber(ARGV[7]), tonumber(ARGV[8])
local fields = {__FIELDS__}
local claimed = {}
local emptied = {'0', '0', '0', '0'}
local served = ARGV[10 + settled * STRIDE]
for s = 1, #served do
  local qi = string.byte(served, s) - 48
  if n <= 0 then break end
  local ids = redis.pcall('LPOP', K[PER * qi + 1], n)
  if type(ids) == 'table' and ids.err then -- the queue key is not a list: say so, serve the others
    emptied[qi + 1] = '2'
    ids = nil
  elseif not ids or #ids < n or redis.call('LLEN', K[PER * qi + 1]) == 0 then
    emptied[qi + 1] = '1' -- empty now (also when it held exactly what was asked): the waker watches it
  end
  if ids then
    local members = {}
    for _, id in ipairs(ids) do
      local key = 'rq:job:' .. id
      local values = nil
      if string.find(id, '^[%w_%-]+$') then
        values = redis.pcall('HMGET', key, 'status', 'ttl', 'timeout', unpack(fields))
        if values.err then values = nil end -- not a hash: another application's key
      end
      claimed[#claimed + 1] = qi
      claimed[#claimed + 1] = id
      if not values then -- not an RQ job: it ends in a known place, with the reason, never vanishes
        claimed[#claimed + 1] = '!'
        for _ = 0, #fields do claimed[#claimed + 1] = '' end
        refuse(id)
      elseif not values[1] and redis.call('EXISTS', key) == 0 then
        claimed[#claimed + 1] = ''
      else
        local execution = ARGV[5] .. counter
        counter = counter + 1
        redis.call('HSET', key, 'status', 'started', 'started_at', iso, 'last_heartbeat', iso,
          'worker_name', worker)
        if values[2] then redis.call('PERSIST', key) end
        local timeout = tonumber(values[3]) or default_timeout
        if timeout >= 0 then members[#members + 1] = expiry(timeout + slack)
        else members[#members + 1] = '+inf' end
        members[#members + 1] = id .. ':' .. execution
        claimed[#claimed + 1] = execution
        if parked then redis.call('SET', '__PARKED__' .. execution, id, 'EX', __PARKED_TTL__) end
      end
      if values then
        for j = 3, #values do claimed[#claimed + 1] = values[j] or '' end
      end
    end
    if #members > 0 then redis.call('ZADD', K[PER * qi + 2], unpack(members)) end
    n = n - #ids
  end
end
return {with_dependents, claimed, table.concat(emptied), stale, damaged}
