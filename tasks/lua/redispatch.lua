-- A reserved job that never started gets a new attempt (its chain is sent again).
-- KEYS: lab leases; job A[1]
-- A: job, board
-- Returns {'ok', attempt} or {'noop', state}.
take_lab('leases')
local j, b = A[1], A[2]
take_job(j)
keys_taken()
local record = job(j).record
local st = redis.call('HMGET', record, 'state', 'board', 'laststep')
if not st[1] or st[2] ~= b or not ACTIVE[st[1]] or tonumber(st[3]) >= 0 then return {'noop', st[1] or 'missing'} end
local attempt = redis.call('HINCRBY', record, 'attempt', 1)
redis.call('ZADD', L.leases, fmt(NOW + LEASE), j)
return {'ok', attempt}
