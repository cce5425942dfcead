-- A worker host's health is set: its boards leave the pool (Maintenance, Retired) or come back (Active).
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
for _, b in ipairs(cjson.decode(A[6])) do
  if redis.call('HGET', board(b).record, 'host') == A[1] then
    if A[5] == '1' and A[2] ~= WH.Active then
      local j = cancel_running(b)
      if j ~= '' then canceled[#canceled + 1] = j end
    end
    for _, a in ipairs(health_pool(b)) do placed[#placed + 1] = a end
  end
end
return {'ok', old, canceled, placed}
