-- lava-send: store a member's message; the same data again adds no event.
-- KEYS meta msg events; ARGV field json message_id sender maxlen
local st = alive()
if st ~= 1 then return st end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  keep(KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 't', 'send', 'id', ARGV[3], 'from', ARGV[4])
end
return 1
