-- Create a group, or check that an existing one has the same members.
-- KEYS meta members events; ARGV ttl_ms now maxlen m1 r1 m2 r2 ...
-- Returns 1, or -3 when the group exists with other members.
local n = (#ARGV - 3) / 2
if redis.call('EXISTS', meta) == 1 then
  if redis.call('HLEN', KEYS[2]) ~= n then return -3 end
  for i = 4, #ARGV, 2 do
    if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then return -3 end
  end
  return 1
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', meta, 'state', 'active', 'created', ARGV[2], 'size', n)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 't', 'created')
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
