-- After a lost reply (the connection dropped mid-call), put back this daemon's claims that it does
-- not know about: started-registry entries under its execution prefix that it holds neither in its
-- local queue nor in a slot. Their jobs go back to the front of their queues with status "queued".
-- KEYS: 4 queue keys (P0..P3), then their 4 started-registry keys.
-- ARGV: this daemon's execution prefix ("<daemon id>."), then the execution ids it holds.
-- Returns the ids put back.
local held = {}
for i = 2, #ARGV do held[ARGV[i]] = true end
local prefix = ARGV[1]
local recovered = {}
for qi = 1, 4 do
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4 + qi], 0, -1)) do
    local id, execution = string.match(entry, '^(.+):([^:]+)$')
    if execution and string.sub(execution, 1, #prefix) == prefix and not held[execution] then
      redis.call('ZREM', KEYS[4 + qi], entry)
      if redis.call('HGET', 'rq:job:' .. id, 'status') == 'started' then
        redis.call('HSET', 'rq:job:' .. id, 'status', 'queued')
        redis.call('LPUSH', KEYS[qi], id)
        recovered[#recovered + 1] = id
      end
    end
  end
end
return recovered
