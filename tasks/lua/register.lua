-- A board worker starts: the board joins the lab (or its record is refreshed) under this worker.
-- KEYS: lab boards, live; board A[1] (record, tags); device type A[2]
-- A: board, device type, tags JSON, node, host, pid, supervisor pid, device YAML, device sha, pid file,
--    boot id, force ('1': take the board over even if another live worker holds it)
-- Discovers: the board's former device type (when it changed), the job the board had, the type's idle
--   index (a tag set new to the type gets the queued jobs it serves: index.lua, join_bucket).
-- Returns {'conflict', {node, host, pid, heartbeat age ms}}, {'job', {job, state, board, laststep, worker,
--   worker pid, current action}} (the board had a job), or {'free', {}}.
take_lab('boards', 'live')
local b = A[1]
take_board(b)
take_type(A[2])
keys_taken()
local k = board(b)
local old = redis.call('HMGET', k.record, 'node', 'host', 'pid', 'heartbeat', 'device_type', 'stopped', 'tagset')
if old[1] and old[1] ~= A[4] and A[12] ~= '1' and old[6] ~= '1' and old[4]
    and NOW - tonumber(old[4]) <= BOARD_TTL then
  return {'conflict', {old[1], old[2] or '', old[3] or '', fmt(NOW - tonumber(old[4]))}}
end
local tags = cjson.decode(A[3])
local ts = tagset_id(tags)
unavailable(b)
if old[5] and old[5] ~= A[2] then
  redis.call('SREM', dtype(old[5]).boards, b)
end
if old[5] and old[7] and (old[5] ~= A[2] or old[7] ~= ts) then leave_bucket(old[5], old[7]) end
if not (old[5] == A[2] and old[7] == ts) then join_bucket(A[2], ts, tags) end
redis.call('HSET', k.record, 'name', b, 'device_type', A[2], 'tags', A[3], 'node', A[4], 'host', A[5],
           'pid', A[6], 'supervisor', A[7], 'device', A[8], 'device_sha', A[9], 'pid_file', A[10],
           'boot_id', A[11], 'registered', fmt(NOW), 'heartbeat', fmt(NOW), 'stopped', '0', 'tagset', ts)
redis.call('ZADD', L.live, fmt(NOW), b)
if redis.call('HEXISTS', k.record, 'job') == 0 then redis.call('HSET', k.record, 'job', '') end
redis.call('DEL', k.tags)
for _, tag in ipairs(tags) do redis.call('SADD', k.tags, tag) end
redis.call('SADD', L.boards, b)
redis.call('SADD', dtype(A[2]).boards, b)
local j = redis.call('HGET', k.record, 'job')
if j ~= '' then
  local st = redis.call('HMGET', job(j).record, 'state', 'board', 'laststep', 'worker', 'worker_pid', 'current')
  return {'job', {j, st[1] or 'missing', st[2] or '', st[3] or '-1', st[4] or '', st[5] or '', st[6] or ''}}
end
return {'free', {}}
