-- Renew this daemon's lease, if it is still this daemon's.
-- KEYS: the lease key, the set of daemon ids. ARGV: the token the daemon set, ttl (ms), daemon id.
-- Returns 1: renewed; 2: the key had expired (Redis or this daemon was away for longer than the lease)
--   but no daemon reclaimed this one's claims (it is still in the set): taken again; 0: lost (its
--   claims were reclaimed, or the key holds another token): the daemon must drop what it holds.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current and redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
