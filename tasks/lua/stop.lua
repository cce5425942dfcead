-- The worker stops: the board leaves the pool; a job reserved on it that never started is queued again.
-- KEYS: lab pending, leases; board A[1]; the board's device type A[3] (when given)
-- A: board, node, the board's device type ('' if unknown)
-- Discovers: the job reserved on the board, what placing it elsewhere considers.
-- Returns {'stopped', {{job, board, attempt}, ...}} or {'replaced', {}}.
take_lab('pending', 'leases')
local b = A[1]
take_board(b)
if A[3] ~= '' then take_type(A[3]) end
keys_taken()
local record = board(b).record
if redis.call('HGET', record, 'node') ~= A[2] then return {'replaced', {}} end
redis.call('HSET', record, 'stopped', '1', 'heartbeat', '0')
unavailable(b)
local placed = {}
local j = redis.call('HGET', record, 'job')
if j and j ~= '' then
  local st = redis.call('HMGET', job(j).record, 'state', 'board', 'laststep', 'score', 'needs', 'group')
  if st[2] == b and st[1] == S.Scheduled and tonumber(st[3]) < 0 and not st[6] then
    redis.call('HSET', record, 'job', '')
    redis.call('ZREM', L.leases, j)
    placed = requeue(j, cjson.decode(st[5]), st[4])
  end
end
return {'stopped', placed}
