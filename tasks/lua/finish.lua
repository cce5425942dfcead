-- A job's finalize: store its end, free the board, and reserve it for the best queued request it serves.
-- KEYS: lab jobs, pending, leases, ended; job A[1]; board A[2]; the board's device type A[10] (when given)
-- A: job, board, attempt, state, error type, error, durations JSON, results JSON, audit entry JSON,
--    the board's device type ('' if the caller does not know it)
-- Discovers: the queued requests of the type (their job or group records), the other device types a
--   group needs, the boards it considers (record, tags).
-- Returns {final state, {{job, board, attempt}, ...}}: the jobs the board (and others) now run.
take_lab('jobs', 'pending', 'leases', 'ended')
local j, b = A[1], A[2]
take_job(j)
take_board(b)
if A[10] ~= '' then take_type(A[10]) end
keys_taken()
local k = job(j)
if A[9] ~= '' then redis.call('RPUSH', k.steps, A[9]) end
local st = redis.call('HMGET', k.record, 'state', 'board', 'attempt')
local final = st[1] or 'missing'
if st[1] and st[2] == b and st[3] == A[3] and ACTIVE[st[1]] then
  final = A[4]
  if st[1] == S.Canceling then final = S.Canceled end
  if A[7] ~= '' then redis.call('HSET', k.record, 'durations', A[7]) end
  if A[8] ~= '' then redis.call('SET', k.results, A[8]) end
  end_job(j, final, A[5], A[6])
  after_job(b, j, final, A[5], A[6])
end
local out = {}
local bj = redis.call('HGET', board(b).record, 'job')
if bj == j or bj == '' or not bj then out = release(b) end
return {final, out}
