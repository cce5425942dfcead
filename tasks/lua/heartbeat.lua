-- A board worker's heartbeat (every few seconds): the board's liveness, its job's lease; a free board
-- that finds queued work takes it. Not idempotent by token: a lost answer is simply the next beat's.
-- KEYS: lab tick, resumed, pending, leases, live; board A[1]; the job A[3] the worker runs (when it runs one);
--       the board's device type A[4] (when given)
-- A: board, node, job the worker runs ('' if none), the board's device type ('' if unknown)
-- Discovers: the job reserved on the board (the worker does not know it yet), and what release() does;
--   a few boards whose heartbeat expired, which leave the idle index (expire_idle).
-- Returns {'job', {state}}, {'gone', {state}}, {'reserved', {job, state, laststep, age ms, attempt}},
--   {'idle', {{job, board, attempt}, ...}}, {'unregistered'|'replaced'|'stopped', {...}}.
take_lab('tick', 'resumed', 'pending', 'leases', 'live')
local b = A[1]
take_board(b)
if A[3] ~= '' then take_job(A[3]) end
if A[4] ~= '' then take_type(A[4]) end
keys_taken()
local last = redis.call('GET', L.tick)
if not last or NOW - tonumber(last) > LEASE / 3 then redis.call('SET', L.resumed, fmt(NOW)) end
redis.call('SET', L.tick, fmt(NOW))
local record = board(b).record
local node = redis.call('HGET', record, 'node')
if not node then return {'unregistered', {}} end
if node ~= A[2] then return {'replaced', {node}} end
if redis.call('HGET', record, 'stopped') == '1' then return {'stopped', {}} end
redis.call('HSET', record, 'heartbeat', fmt(NOW))
redis.call('ZADD', L.live, fmt(NOW), b)
expire_idle(4)
if A[3] ~= '' then
  local st = redis.call('HMGET', job(A[3]).record, 'state', 'board')
  if st[2] == b and ACTIVE[st[1]] then
    redis.call('ZADD', L.leases, fmt(NOW + LEASE), A[3])
    return {'job', {st[1]}}
  end
  return {'gone', {st[1] or 'missing'}}
end
local bj = redis.call('HGET', record, 'job')
if bj and bj ~= '' then
  local st = redis.call('HMGET', job(bj).record, 'state', 'board', 'laststep', 'scheduled', 'attempt')
  if st[2] == b and ACTIVE[st[1]] then
    redis.call('ZADD', L.leases, fmt(NOW + LEASE), bj)
    return {'reserved', {bj, st[1], st[3], fmt(NOW - tonumber(st[4] or NOW)), st[5]}}
  end
  return {'idle', release(b)}
end
local keys = dtype(redis.call('HGET', record, 'device_type'))
if not redis.call('ZSCORE', keys.idle, b) or redis.call('ZCARD', keys.pending) > 0 then
  return {'idle', release(b)}
end
return {'idle', {}}
