-- A job is submitted: record it, reserve an idle board of its device type, or queue it.
-- KEYS: lab jobs, pending, leases, queue_until; job A[1]; device type A[6]
-- A: job, fields (JSON object), needs (JSON: one need), priority, queue_anyway ('1'), device type,
--    queue timeout (ms, 0 none)
-- Discovers: the boards of the type it considers (record, tags); a health check's board (its `hc_job`).
-- Returns {'scheduled', {{job, board, attempt}}}, {'queued', {}}, {'exists', state}, {'noboard', type},
--   {'checking', job} (the board's health check is already queued or running).
take_lab('jobs', 'pending', 'leases', 'queue_until')
local j, needs = A[1], cjson.decode(A[3])
take_job(j)
take_type(A[6])
keys_taken()
local record = job(j).record
if redis.call('EXISTS', record) == 1 then return {'exists', redis.call('HGET', record, 'state') or ''} end
local missing = type_without_board(needs)
if A[5] ~= '1' and missing then return {'noboard', missing} end
local check = needs[1].health_check and needs[1].board
if check then
  local previous = redis.call('HGET', board(check).record, 'hc_job')
  if previous and previous ~= '' then
    local state = redis.call('HGET', job(previous).record, 'state')
    if state == S.Submitted or ACTIVE[state] then return {'checking', previous} end
  end
  redis.call('HSET', board(check).record, 'hc_job', j)
end
local score = fmt((100 - tonumber(A[4])) * 1e13 + NOW)
redis.call('HSET', record, 'state', S.Submitted, 'submitted', fmt(NOW), 'attempt', 0, 'laststep', -1,
           'needs', A[3], 'score', score, 'priority', A[4], unpack(fields_of(cjson.decode(A[2]))))
redis.call('ZADD', L.jobs, fmt(NOW), j)
local picked = try_place(needs, nil)
if picked then return {'scheduled', commit(j, needs, picked)} end
enqueue(j, needs, score)
if tonumber(A[7] or '0') > 0 then redis.call('ZADD', L.queue_until, fmt(NOW + tonumber(A[7])), j) end
return {'queued', {}}
