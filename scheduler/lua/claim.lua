-- Claim up to N jobs, highest priority first, in one atomic step.
-- Each claimed id leaves its queue and enters RQ's started registry (rq:wip:<queue>) as
-- "<job id>:<execution id>" in the same script, so a crash at any instant leaves every job either in
-- its queue or in a started registry under an execution id that names its daemon (see recover.lua).
-- KEYS: 4 queue keys (P0..P3), then their 4 started-registry keys.
-- ARGV: n, execution-id prefix, first counter, now (unix s), now (RQ ISO text), worker name,
--       default timeout (s), lease slack (s), then the hash fields to return.
-- Returns a flat list: priority index, job id, execution id (or "" when the job hash is gone: RQ
-- drops such ids too), the job's timeout, then one value per requested field; repeated per job.
local n = tonumber(ARGV[1])
local counter = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local default_timeout = tonumber(ARGV[7])
local slack = tonumber(ARGV[8])
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
for qi = 1, 4 do
  if n <= 0 then break end
  local ids = redis.call('LPOP', KEYS[qi], n)
  if ids then
    local members = {}
    for _, id in ipairs(ids) do
      local key = 'rq:job:' .. id
      local values = redis.call('HMGET', key, 'status', 'ttl', 'timeout', unpack(fields))
      out[#out + 1] = qi - 1
      out[#out + 1] = id
      if not values[1] then
        out[#out + 1] = ''
      else
        local execution = ARGV[2] .. counter
        counter = counter + 1
        redis.call('HSET', key, 'status', 'started', 'started_at', ARGV[5], 'last_heartbeat', ARGV[5],
          'worker_name', ARGV[6])
        if values[2] then redis.call('PERSIST', key) end
        local timeout = tonumber(values[3]) or default_timeout
        local score = '+inf'
        if timeout >= 0 then score = now + timeout + slack end
        members[#members + 1] = score
        members[#members + 1] = id .. ':' .. execution
        out[#out + 1] = execution
      end
      for i = 3, #values do out[#out + 1] = values[i] or '' end
    end
    if #members > 0 then redis.call('ZADD', KEYS[4 + qi], unpack(members)) end
    n = n - #ids
  end
end
return out
