-- Replay shed jobs: each id leaves the shed registry and RQ's canceled registry and goes back to the
-- end of its queue with status "queued" (and its count of stops for memory back at zero). An id not in the shed registry is left alone.
-- KEYS: the shed registry. ARGV: job ids. Returns the ids replayed.
local replayed = {}
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local key = 'rq:job:' .. id
    local origin = redis.call('HGET', key, 'origin')
    if origin then
      redis.call('HSET', key, 'status', 'queued')
      redis.call('HDEL', key, 'asched_outcome', 'asched_reason', 'asched_level', 'ended_at',
        'asched_memory_stops')
      redis.call('ZREM', 'rq:canceled:' .. origin, id)
      redis.call('RPUSH', 'rq:queue:' .. origin, id)
      replayed[#replayed + 1] = id
    end
  end
end
return replayed
