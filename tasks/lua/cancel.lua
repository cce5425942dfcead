-- Cancel a job: a queued one ends at once (Canceled), a running one becomes Canceling and its board's
-- worker is told on the board's control channel. A member of a group cancels the whole group.
-- KEYS: lab jobs, pending, leases, ended; job A[1]; its group A[2] (when it is a member)
-- A: job, the group its id names ('' for a single job)
-- Discovers: the group's other members, the queues of the device types the job (or group) needs; it
--   publishes on the control channel of the board it runs on.
-- Returns {state, board}: Canceled or Canceling (and the board), or the state it already had.
take_lab('jobs', 'pending', 'leases', 'ended')
take_job(A[1])
if A[2] ~= '' then take_group(A[2]) end
keys_taken()

local function cancel_one(j)
  local st = redis.call('HMGET', job(j).record, 'state', 'board', 'needs', 'group')
  if not st[1] then return {'missing', ''} end
  if st[1] == S.Submitted then
    if st[4] then
      local gk = group(st[4]).record
      unqueue(K.GROUP_REQUEST .. st[4], cjson.decode(redis.call('HGET', gk, 'needs') or '[]'))
      redis.call('HSET', gk, 'state', GS.Canceled)
    else
      unqueue(j, cjson.decode(st[3]))
    end
    end_job(j, S.Canceled, ERR.Canceled, 'canceled while queued')
    return {S.Canceled, ''}
  end
  if ACTIVE[st[1]] then
    redis.call('HSET', job(j).record, 'state', S.Canceling, 'cancel_requested', fmt(NOW))
    redis.call('PUBLISH', K.control(st[2]), j)
    return {S.Canceling, st[2]}
  end
  return {st[1], st[2] or ''}
end

local g = redis.call('HGET', job(A[1]).record, 'group')
if not g then return cancel_one(A[1]) end
local answer = nil
for _, need in ipairs(cjson.decode(redis.call('HGET', group(g).record, 'needs') or '[]')) do
  local one = cancel_one(need.job)
  if need.job == A[1] then answer = one end
end
return answer or {'missing', ''}
