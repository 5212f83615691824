-- Put claimed jobs back at the front of their queues with status "queued": the started-registry
-- entries whose execution id ("<daemon id>.<n>") names
--   mode "dead": a daemon whose lease key has expired (any daemon recovers a dead one's jobs), or
--   mode "mine": this daemon, for executions it does not hold (a reply lost with a dropped connection).
-- Entries of live daemons, and entries not made by this project (e.g. an rq worker's), are left alone.
-- An outage is not a death: in mode "dead", nothing is reclaimed until Redis has been up for ARGV[3]
-- seconds (a lease and a renewal), so a lease that expired while Redis itself was away (a restart, a
-- failover to a replica that had just started) is renewed by its live daemon before anyone looks.
-- KEYS: 4 queue keys (P0..P3), their 4 started-registry keys, the set of daemon ids.
-- ARGV: mode; for "dead" the lease key prefix (a daemon id is appended) and the uptime Redis needs;
--   for "mine" this daemon's id, then the execution ids it holds.
-- Returns the ids put back.
local function reclaimable(daemon, execution) return false end
local dead = {}
if ARGV[1] == 'dead' then
  local uptime = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
  if uptime and uptime < tonumber(ARGV[3]) then return {} end
  for _, daemon in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    if redis.call('EXISTS', ARGV[2] .. daemon) == 0 then dead[daemon] = true end
  end
  if next(dead) == nil then return {} end
  reclaimable = function(daemon, execution) return dead[daemon] end
else
  local held = {}
  for i = 3, #ARGV do held[ARGV[i]] = true end
  reclaimable = function(daemon, execution) return daemon == ARGV[2] and not held[execution] end
end
local recovered = {}
for qi = 1, 4 do
  local entries = redis.call('ZRANGE', KEYS[4 + qi], 0, -1)
  for j = #entries, 1, -1 do
    local entry = entries[j]
    local id, execution = string.match(entry, '^(.+):([^:]+)$')
    local daemon = execution and string.match(execution, '^([^.]+)%.%d+$')
    if daemon and reclaimable(daemon, execution) then
      redis.call('ZREM', KEYS[4 + qi], entry)
      if redis.pcall('HGET', 'rq:job:' .. id, 'status') == 'started' then -- pcall: may not be a hash
        redis.call('HSET', 'rq:job:' .. id, 'status', 'queued')
        redis.call('LPUSH', KEYS[qi], id)
        recovered[#recovered + 1] = id
      end
    end
  end
end
for daemon in pairs(dead) do redis.call('SREM', KEYS[9], daemon) end
return recovered
