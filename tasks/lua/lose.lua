-- End an active job of a board whose worker is gone: Incomplete (Canceled if it was canceling).
-- KEYS: lab jobs, leases, ended; job A[1]; board A[2]; the board's device type A[6] (when given)
-- A: job, board, reason, only if started ('1'), error type, the board's device type ('' if unknown)
-- Returns {final state, ''}, or {'noop'|'unstarted', state}.
take_lab('jobs', 'leases', 'ended')
local j, b = A[1], A[2]
take_job(j)
take_board(b)
if A[6] ~= '' then take_type(A[6]) end
keys_taken()
local st = redis.call('HMGET', job(j).record, 'state', 'board', 'laststep')
if not st[1] or st[2] ~= b or not ACTIVE[st[1]] then return {'noop', st[1] or 'missing'} end
if A[4] == '1' and tonumber(st[3]) < 0 then return {'unstarted', st[1]} end
local final = S.Incomplete
if st[1] == S.Canceling then final = S.Canceled end
end_job(j, final, A[5], A[3], true)
after_job(b, j, final, A[5], A[3])
if redis.call('HGET', board(b).record, 'job') == j then redis.call('HSET', board(b).record, 'job', '') end
unavailable(b)
return {final, ''}
