-- lava-start: mark roles started; only newly started roles make an event.
-- KEYS meta started events; ARGV maxlen role1 role2 ...
local st = alive()
if st ~= 1 then return st end
local new = {}
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then table.insert(new, ARGV[i]) end
end
if #new > 0 then
  keep(KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 't', 'start', 'roles', table.concat(new, ' '))
end
return 1
