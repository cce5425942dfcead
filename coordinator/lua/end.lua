-- End a group: waiters wake up and fail; every key expires within end_ttl.
-- KEYS meta members msg sync started events; ARGV end_ttl_ms now
if redis.call('EXISTS', meta) == 0 then return -1 end
if redis.call('HGET', meta, 'state') ~= 'ended' then
  redis.call('HSET', meta, 'state', 'ended', 'ended', ARGV[2])
  redis.call('XADD', KEYS[6], '*', 't', 'end')
end
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local t = redis.call('PTTL', KEYS[i])
  if t == -1 or t > ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
