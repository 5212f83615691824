-- Move due jobs from RQ's scheduled registries into their queues (what RQ's scheduler does for
-- enqueue_at/enqueue_in and retries with an interval), so no separate `rq worker --with-scheduler`
-- is needed. KEYS: 4 scheduled-registry keys, then the 4 queue keys. ARGV: now (unix s), max per queue.
-- Returns how many jobs were moved.
local moved = 0
for qi = 1, 4 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[qi], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[qi], id)
    if redis.call('TYPE', 'rq:job:' .. id).ok == 'hash' then -- a key of another type is not a job
      redis.call('HSET', 'rq:job:' .. id, 'status', 'queued')
      redis.call('RPUSH', KEYS[4 + qi], id)
      moved = moved + 1
    end
  end
end
return moved
