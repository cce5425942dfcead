-- Shared by every script of a group. KEYS[1] is always the group's meta hash.
-- keep(key): a key created lazily gets the remaining TTL of the group.
-- last_id(events): the newest event id ('0-0' for none).
-- alive(): 1 for an active group, -1 for none, -2 for an ended one.
local meta = KEYS[1]
local function keep(key)
  if redis.call('PTTL', key) == -1 then
    local ttl = redis.call('PTTL', meta)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
end
local function last_id(events)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  if last[1] then return last[1][1] end
  return '0-0'
end
local function alive()
  local state = redis.call('HGET', meta, 'state')
  if not state then return -1 end
  if state ~= 'active' then return -2 end
  return 1
end
