-- Put back the jobs of dead daemons: every started-registry entry whose execution id names a daemon
-- whose lease key has expired goes back to the front of its queue with status "queued".
-- Entries of live daemons, and entries not made by this project (e.g. an rq worker's), are left alone.
-- KEYS: 4 queue keys (P0..P3), their 4 started-registry keys, the set of daemon ids.
-- ARGV: lease key prefix (the daemon id is appended).
-- Returns the ids put back.
local dead = {}
for _, daemon in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  if redis.call('EXISTS', ARGV[1] .. daemon) == 0 then dead[daemon] = true end
end
local recovered = {}
if next(dead) == nil then return recovered end
for qi = 1, 4 do
  local entries = redis.call('ZRANGE', KEYS[4 + qi], 0, -1)
  for j = #entries, 1, -1 do
    local entry = entries[j]
    local id, daemon = string.match(entry, '^(.+):([^:.]+)%.%d+$')
    if daemon and dead[daemon] then
      redis.call('ZREM', KEYS[4 + qi], entry)
      if redis.call('HGET', 'rq:job:' .. id, 'status') == 'started' then
        redis.call('HSET', 'rq:job:' .. id, 'status', 'queued')
        redis.call('LPUSH', KEYS[qi], id)
        recovered[#recovered + 1] = id
      end
    end
  end
end
for daemon in pairs(dead) do redis.call('SREM', KEYS[9], daemon) end
return recovered
