-- A chain task claims its step: same board, same attempt, step = last step + 1 (a compare-and-set).
-- KEYS: lab leases; job A[1]
-- A: job, board, attempt, step, action name, node, pid, host
-- Returns {'ok', state} once; {'duplicate'|'stale'|'final', state}, {'missing', ''} otherwise.
take_lab('leases')
take_job(A[1])
keys_taken()
local record = job(A[1]).record
local st = redis.call('HMGET', record, 'state', 'board', 'attempt', 'laststep')
if not st[1] then return {'missing', ''} end
if st[2] ~= A[2] or st[3] ~= A[3] then return {'stale', st[1]} end
if not ACTIVE[st[1]] then return {'final', st[1]} end
local step = tonumber(A[4])
if tonumber(st[4]) ~= step - 1 then return {'duplicate', st[1]} end
local state = st[1]
if step == 0 then
  if state == S.Scheduled then state = S.Running end
  redis.call('HSET', record, 'state', state, 'started', fmt(NOW), 'worker', A[6], 'worker_pid', A[7], 'host', A[8])
end
redis.call('HSET', record, 'laststep', step, 'current', A[5])
redis.call('ZADD', L.leases, fmt(NOW + LEASE), A[1])
return {'ok', state}
