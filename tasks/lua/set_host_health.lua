-- A worker host's health is set: its boards leave the pool (Maintenance, Retired) or come back (Active).
-- Back to Active, a Good board whose type has a health check has it due: it runs before any other job there.
-- KEYS: lab pending, leases, hosts
-- A: host, health, who, reason, force ('1': cancel the boards' running jobs), its boards JSON
-- Discovers: each board of the host (record, job, device type), what release() does, control channels.
-- Returns {'ok', old, {canceled jobs}, {{job, board, attempt}, ...}}.
take_lab('pending', 'leases', 'hosts')
keys_taken()
local prev = redis.call('HGET', L.hosts, A[1])
local value = prev and cjson.decode(prev) or {health = WH.Active, history = {}}
local old = value.health
local history = value.history or {}
table.insert(history, 1, {old = old, new = A[2], who = A[3], reason = A[4], time = NOW})
while #history > 20 do table.remove(history) end
redis.call('HSET', L.hosts, A[1], cjson.encode({health = A[2], reason = A[4], by = A[3], changed = NOW,
                                                history = history}))
local canceled, placed = {}, {}
local back = A[2] == WH.Active and old ~= WH.Active
for _, b in ipairs(cjson.decode(A[6])) do
  if redis.call('HGET', board(b).record, 'host') == A[1] then
    local st = redis.call('HMGET', board(b).record, 'health', 'hc_definition')
    if back and (st[1] or H.Good) == H.Good and (st[2] or '') ~= '' then
      redis.call('HSET', board(b).record, 'hc_due', '1')
    end
    if A[5] == '1' and A[2] ~= WH.Active then
      local j = cancel_running(b)
      if j ~= '' then canceled[#canceled + 1] = j end
    end
    for _, a in ipairs(health_pool(b)) do placed[#placed + 1] = a end
  end
end
return {'ok', old, canceled, placed}
