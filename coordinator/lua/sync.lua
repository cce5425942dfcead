-- lava-sync arrival, counted once per member; the last arrival releases the barrier.
-- KEYS meta sync members events; ARGV sync_id member maxlen
-- Returns {status, done (0|1), last event id}.
local st = alive()
if st ~= 1 then return {st, 0, '0-0'} end
local id = ARGV[1]
local size = tonumber(redis.call('HGET', meta, 'size'))
local count = tonumber(redis.call('HGET', KEYS[2], id) or '0')
if count >= size then return {1, 1, '0-0'} end
if redis.call('HSETNX', KEYS[2], id .. ' ' .. ARGV[2], '1') == 1 then
  count = redis.call('HINCRBY', KEYS[2], id, 1)
  keep(KEYS[2])
  if count >= size then
    for _, m in ipairs(redis.call('HKEYS', KEYS[3])) do
      redis.call('HDEL', KEYS[2], id .. ' ' .. m)
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 't', 'sync', 'id', id)
    return {1, 1, '0-0'}
  end
end
return {1, 0, last_id(KEYS[4])}
