-- A multinode group is submitted: a record per member job, then every member placed at once, or all queued.
-- KEYS: lab jobs, pending, leases, queue_until; group A[1]; each member job (in the order of the needs); each device
--       type of A[7], in order
-- A: group, group fields (JSON), needs (JSON: one need per member job), priority, queue_anyway ('1'),
--    member job fields (JSON: job -> fields), device types (JSON list), queue timeout (ms, 0 none)
-- Discovers: the boards of those types it considers (record, tags).
-- Returns as submit.lua.
take_lab('jobs', 'pending', 'leases', 'queue_until')
local g, needs = A[1], cjson.decode(A[3])
take_group(g)
for _, need in ipairs(needs) do take_job(need.job) end
for _, t in ipairs(cjson.decode(A[7])) do take_type(t) end
keys_taken()
local record = group(g).record
if redis.call('EXISTS', record) == 1 then return {'exists', redis.call('HGET', record, 'state') or ''} end
local missing = type_without_board(needs)
if A[5] ~= '1' and missing then return {'noboard', missing} end
local score = fmt((100 - tonumber(A[4])) * 1e13 + NOW)
redis.call('HSET', record, 'state', GS.Submitted, 'submitted', fmt(NOW), 'needs', A[3], 'score', score,
           'priority', A[4], unpack(fields_of(cjson.decode(A[2]))))
local members = cjson.decode(A[6])
for _, need in ipairs(needs) do
  redis.call('HSET', job(need.job).record, 'state', S.Submitted, 'submitted', fmt(NOW), 'attempt', 0,
             'laststep', -1, 'needs', cjson.encode({need}), 'score', score, 'priority', A[4], 'group', g,
             unpack(fields_of(members[need.job])))
  redis.call('ZADD', L.jobs, fmt(NOW), need.job)
end
local req = K.GROUP_REQUEST .. g
local picked = try_place(needs, nil)
if picked then
  redis.call('HSET', record, 'state', GS.Scheduled)
  return {'scheduled', commit(req, needs, picked)}
end
enqueue(req, needs, score)
if tonumber(A[8] or '0') > 0 then redis.call('ZADD', L.queue_until, fmt(NOW + tonumber(A[8])), req) end
return {'queued', {}}
