-- Write the outcomes of a batch of claimed jobs the way RQ's worker does, in one atomic step:
-- job hash status and times, the results stream (rq:results:<id>), the finished/failed/scheduled
-- registries, the queue (retries, put back) and removal from the started registry.
-- KEYS: for each priority P0..P3: queue, started, finished, failed, scheduled (20 keys).
-- ARGV: now (unix s), worker name, stats key, then 12 values per job:
--   outcome (finished|failed|retry|put_back), job id, priority index, execution id,
--   started_at (ISO), ended_at (ISO), started (unix s), ended (unix s), ttl (s; -1 = forever),
--   payload (base64 return value, or base64 zlib exception text), exc_info (zlib text for the hash),
--   extra (retry: "<retries_left>:<unix s to run at, 0 = now>:<0|1 at front>").
-- Returns the ids of settled jobs that have dependents waiting (RQ's rq:job:<id>:dependents).
local now = tonumber(ARGV[1])
local worker = ARGV[2]
local STRIDE = 12
local zadds = {}
local zrems = {}
local counts = {}
local with_dependents = {}

local function add(bucket, key, ...)
  local list = bucket[key]
  if not list then list = {}; bucket[key] = list end
  for _, v in ipairs({...}) do list[#list + 1] = v end
end

local function result(id, kind, ttl, execution, started, ended, field, payload)
  local stream = 'rq:results:' .. id
  if payload ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '10', '*', 'type', kind, 'worker_name', worker,
      'execution_id', execution, 'execution_started_at', started, 'execution_ended_at', ended,
      field, payload)
  else
    redis.call('XADD', stream, 'MAXLEN', '10', '*', 'type', kind, 'worker_name', worker,
      'execution_id', execution, 'execution_started_at', started, 'execution_ended_at', ended)
  end
  if ttl > 0 then redis.call('EXPIRE', stream, ttl) end
end

local function registry_score(ttl)
  if ttl < 0 then return '+inf' end
  return now + ttl
end

for i = 4, #ARGV, STRIDE do
  local outcome, id, base = ARGV[i], ARGV[i + 1], 5 * tonumber(ARGV[i + 2])
  local execution, ttl = ARGV[i + 3], tonumber(ARGV[i + 8])
  local key = 'rq:job:' .. id
  add(zrems, KEYS[base + 2], id .. ':' .. execution)
  counts[outcome] = (counts[outcome] or 0) + 1
  if outcome == 'finished' then
    redis.call('HSET', key, 'status', 'finished', 'started_at', ARGV[i + 4], 'ended_at', ARGV[i + 5])
    if ttl == 0 then
      redis.call('DEL', key)
    else
      result(id, 1, ttl, execution, ARGV[i + 6], ARGV[i + 7], 'return_value', ARGV[i + 9])
      if ttl > 0 then redis.call('EXPIRE', key, ttl) end
      add(zadds, KEYS[base + 3], registry_score(ttl), id)
    end
  elseif outcome == 'failed' then
    redis.call('HSET', key, 'status', 'failed', 'started_at', ARGV[i + 4], 'ended_at', ARGV[i + 5],
      'exc_info', ARGV[i + 10])
    result(id, 2, ttl, execution, ARGV[i + 6], ARGV[i + 7], 'exc_string', ARGV[i + 9])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    add(zadds, KEYS[base + 4], registry_score(ttl), id)
  elseif outcome == 'retry' then
    local left, at, front = string.match(ARGV[i + 11], '^(%d+):([%d.]+):(%d)$')
    if tonumber(at) > 0 then
      redis.call('HSET', key, 'status', 'scheduled', 'retries_left', left, 'exc_info', ARGV[i + 10])
      add(zadds, KEYS[base + 5], at, id)
    else
      redis.call('HSET', key, 'status', 'queued', 'retries_left', left, 'exc_info', ARGV[i + 10])
      if front == '1' then redis.call('LPUSH', KEYS[base + 1], id)
      else redis.call('RPUSH', KEYS[base + 1], id) end
    end
  else -- put_back: not run, or stopped before the end; the front of its queue
    redis.call('HSET', key, 'status', 'queued')
    redis.call('LPUSH', KEYS[base + 1], id)
  end
  if outcome ~= 'put_back' and outcome ~= 'retry' and redis.call('EXISTS', key .. ':dependents') == 1 then
    with_dependents[#with_dependents + 1] = id
  end
end
for key, list in pairs(zadds) do redis.call('ZADD', key, unpack(list)) end
for key, list in pairs(zrems) do redis.call('ZREM', key, unpack(list)) end
for outcome, count in pairs(counts) do redis.call('HINCRBY', ARGV[3], outcome, count) end
return with_dependents
