-- Placement: which idle board serves a request, reserving it, queueing, freeing a board.
-- A request is a list of needs {job, device_type, tags}: a single job's has one, a group's one per member.
-- Uses L.pending and L.leases (the scripts that place take them).

local function board_live(b)
  local hb = redis.call('HGET', board(b).record, 'heartbeat')
  return hb ~= false and (NOW - tonumber(hb)) <= BOARD_TTL
end

local function board_fits(b, tags)
  for _, tag in ipairs(tags or {}) do
    if redis.call('SISMEMBER', board(b).tags, tag) == 0 then return false end
  end
  return true
end

local function board_serves(b, need) return board_live(b) and board_fits(b, need.tags) and board_takes(b, need) end

-- An idle board of the need's type that serves it and is not `used` yet; `prefer` first.
-- (The only place that looks for a board: an index of the idle boards would replace the scan here.)
local function pick_board(need, prefer, used)
  local idle = dtype(need.device_type).idle
  if prefer and not used[prefer] and redis.call('ZSCORE', idle, prefer) and board_serves(prefer, need) then
    return prefer
  end
  for _, b in ipairs(redis.call('ZRANGE', idle, 0, -1)) do
    if not used[b] and board_serves(b, need) then return b end
  end
  return nil
end

-- A board for every need or nil (all or nothing).
local function try_place(needs, prefer)
  local picked, used = {}, {}
  for i, need in ipairs(needs) do
    local choice = pick_board(need, prefer, used)
    if not choice then return nil end
    used[choice] = true
    picked[i] = choice
  end
  return picked
end

-- The needs of a queued request, or nil when it should leave the queues.
local function request_needs(req)
  local g = group_of_request(req)
  local st
  if g then
    st = redis.call('HMGET', group(g).record, 'state', 'needs')
    if st[1] ~= GS.Submitted then return nil end
  else
    st = redis.call('HMGET', job(req).record, 'state', 'needs')
    if st[1] ~= S.Submitted then return nil end
  end
  if not st[2] then return nil end
  return cjson.decode(st[2])
end

-- The first device type among the needs that has no board at all, or nil.
local function type_without_board(needs)
  for _, need in ipairs(needs) do
    if redis.call('SCARD', dtype(need.device_type).boards) == 0 then return need.device_type end
  end
  return nil
end

local function unqueue(req, needs)
  redis.call('ZREM', L.pending, req)
  for _, need in ipairs(needs) do redis.call('ZREM', dtype(need.device_type).pending, req) end
end

local function enqueue(req, needs, score)
  redis.call('ZADD', L.pending, score, req)
  for _, need in ipairs(needs) do redis.call('ZADD', dtype(need.device_type).pending, score, req) end
end

-- Reserve the picked boards: each job becomes Scheduled with a lease. {job, board, attempt} each.
local function commit(req, needs, picked)
  local out = {}
  for i, need in ipairs(needs) do
    local b, j = picked[i], need.job
    local record = job(j).record
    redis.call('ZREM', dtype(need.device_type).idle, b)
    redis.call('HSET', board(b).record, 'job', j)
    local attempt = redis.call('HINCRBY', record, 'attempt', 1)
    redis.call('HSET', record, 'state', S.Scheduled, 'board', b, 'scheduled', fmt(NOW), 'laststep', -1)
    redis.call('ZADD', L.leases, fmt(NOW + LEASE), j)
    out[#out + 1] = {j, b, attempt}
  end
  unqueue(req, needs)
  local g = group_of_request(req)
  if g then redis.call('HSET', group(g).record, 'state', GS.Scheduled) end
  return out
end

-- A job's request goes back to the queue (its board went away before it started); placed elsewhere if it can.
local function requeue(j, needs, score)
  redis.call('HSET', job(j).record, 'state', S.Submitted, 'board', '')
  local picked = try_place(needs, nil)
  if picked then return commit(j, needs, picked) end
  enqueue(j, needs, score)
  return {}
end

-- The board is idle; it takes the queued requests it can serve, best first.
local function release(b)
  local record = board(b).record
  local dt = redis.call('HGET', record, 'device_type')
  local out = {}
  if not dt or redis.call('HGET', record, 'stopped') == '1' then return out end
  redis.call('HSET', record, 'job', '')
  local keys = dtype(dt)
  if not board_may_idle(b) then redis.call('ZREM', keys.idle, b) return out end  -- health gate (gate.lua)
  if not redis.call('ZSCORE', keys.idle, b) then redis.call('ZADD', keys.idle, fmt(NOW), b) end
  if not board_live(b) then return out end
  for _, req in ipairs(redis.call('ZRANGE', keys.pending, 0, 199)) do
    if not redis.call('ZSCORE', keys.idle, b) then break end
    local needs = request_needs(req)
    if not needs then
      redis.call('ZREM', L.pending, req)
      redis.call('ZREM', keys.pending, req)
    else
      local picked = try_place(needs, b)
      if picked then
        for _, a in ipairs(commit(req, needs, picked)) do out[#out + 1] = a end
      end
    end
  end
  return out
end

-- The board leaves the pool of idle boards (its worker is gone).
local function unavailable(b)
  local dt = redis.call('HGET', board(b).record, 'device_type')
  if dt then redis.call('ZREM', dtype(dt).idle, b) end
end
