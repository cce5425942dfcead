-- A board's health is set (the CLI, the lab server's API, a worker's health-check settings): one rule for all.
-- KEYS: lab pending, leases, health_changes; board A[1]
-- A: board, health (or '' to only store settings), who ('' the lab), reason, force ('1': cancel the running
--    job), health-check settings JSON ('' none: {definition, hours, jobs, infra_limit}, written by the worker)
-- Discovers: the board's job and device type, what release() does, the board's control channel.
-- Returns {'missing'} or {'ok', old, new, canceled job or '', {{job, board, attempt}, ...}}.
take_lab('pending', 'leases', 'health_changes')
local b = A[1]
take_board(b)
keys_taken()
local record = board(b).record
if not redis.call('HGET', record, 'device_type') then return {'missing'} end
local old = redis.call('HGET', record, 'health')
local new, reason = A[2], A[4]
if A[6] ~= '' then
  local s = cjson.decode(A[6])
  redis.call('HSET', record, 'hc_definition', s.definition, 'hc_hours', s.hours, 'hc_jobs', s.jobs,
             'infra_limit', s.infra_limit)
  if not old then  -- the board's first registration: its health check decides (none: Good at once)
    if s.definition ~= '' then new, reason = H.Unknown, 'first registration: its health check runs first'
    else new, reason = H.Good, 'first registration; no health check for its device type' end
  elseif s.definition == '' and (old == H.Unknown or old == H.Looping) then
    new, reason = H.Good, 'no health check for its device type'
  end
end
old = old or H.Unknown
if new == '' then return {'ok', old, old, '', {}} end
local has_check = (redis.call('HGET', record, 'hc_definition') or '') ~= ''
if new == H.Looping and not has_check then return {'nocheck', old} end
-- back to Good from anything else (or Unknown asked): its health check first, when its type has one
if (new == H.Good and old ~= H.Good) or new == H.Unknown then
  if has_check then
    if new == H.Good then reason = reason .. ' (its health check runs first)' end
    new = H.Unknown
  else
    new = H.Good
  end
end
if new == H.Good or new == H.Unknown or new == H.Looping then redis.call('HSET', record, 'infra_errors', 0) end
change_health(b, new, A[3], reason)
local canceled = ''
if A[5] == '1' and not health_may_idle(new) then canceled = cancel_running(b) end
return {'ok', old, new, canceled, health_pool(b)}
