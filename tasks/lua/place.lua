-- Placement: which idle board serves a request, reserving it, queueing, freeing a board.
-- A request is a list of needs {job, device_type, tags}: a single job's has one, a group's one per member.
-- Uses L.pending and L.leases (the scripts that place take them) and the idle index (index.lua).
-- Every function here does bounded work: it looks at a few tag-set buckets of a type, at most
-- PICK_TRIES dead boards per bucket, the head of a bucket's queue, and GROUP_LOOKAHEAD queued groups.

local PICK_TRIES = 4  -- idle boards of a bucket found dead (then dropped from the index) before the pick moves on
local STALE_TRIES = 8  -- entries of a queue that were no longer queued (dropped) before a freed board gives up
local GROUP_LOOKAHEAD = 8  -- queued groups of its type a freed board considers

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

-- An idle board of the need's type that serves it and is not `used` yet; `prefer` first. A health
-- check looks only at its own board. Otherwise only the buckets whose tags include the need's are
-- looked at, oldest idle board first; a board found dead leaves the index (its heartbeat brings it
-- back); a board the health gate keeps from ordinary jobs (gate.lua) is passed over.
local function idle_serves(b, need)
  return redis.call('ZSCORE', dtype(need.device_type).idle, b) and board_live(b) and board_fits(b, need.tags)
    and board_takes(b, need)
end

local function pick_board(need, prefer, used)
  local t = need.device_type
  if need.health_check then
    if not used[need.board] and idle_serves(need.board, need) then return need.board end
    return nil
  end
  if prefer and not used[prefer] and idle_serves(prefer, need) then return prefer end
  local taken = 0
  for _ in pairs(used) do taken = taken + 1 end
  for _, ts in ipairs(serving_buckets(t, need.tags)) do
    local dead = 0
    for _, b in ipairs(redis.call('ZRANGE', bucket(t, ts).idle, 0, taken + PICK_TRIES - 1)) do
      if not used[b] then
        if not board_live(b) then
          unavailable(b)
          dead = dead + 1
          if dead >= PICK_TRIES then break end
        elseif board_takes(b, need) then
          return b
        end
      end
    end
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

-- The request leaves every queue of type t (the type's, its groups', each bucket's).
local function unqueue_type(req, t)
  redis.call('ZREM', dtype(t).pending, req)
  if group_of_request(req) then
    redis.call('ZREM', tindex(t).groups, req)
  else
    for _, ts in ipairs(bucket_ids(t)) do redis.call('ZREM', bucket(t, ts).queue, req) end
  end
end

local function unqueue(req, needs)
  redis.call('ZREM', L.pending, req)
  for _, need in ipairs(needs) do unqueue_type(req, need.device_type) end
end

-- Queued: in the lab's queue and each needed type's; a single job also in the queue of every bucket
-- that serves it, a group in the groups of each type it needs.
local function enqueue(req, needs, score)
  redis.call('ZADD', L.pending, score, req)
  local grouped = group_of_request(req)
  for _, need in ipairs(needs) do
    local t = need.device_type
    redis.call('ZADD', dtype(t).pending, score, req)
    if grouped then
      redis.call('ZADD', tindex(t).groups, score, req)
    else
      for _, ts in ipairs(serving_buckets(t, need.tags)) do redis.call('ZADD', bucket(t, ts).queue, score, req) end
    end
  end
end

-- Reserve the picked boards: each job becomes Scheduled with a lease. {job, board, attempt} each.
local function commit(req, needs, picked)
  local out = {}
  for i, need in ipairs(needs) do
    local b, j = picked[i], need.job
    local record = job(j).record
    unavailable(b)
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

-- The first `n` requests of queue `key` that are still queued, with their needs and scores; up to
-- STALE_TRIES entries before them that are not (placed or canceled meanwhile) leave type t's queues.
local function queued_heads(key, n, t, into)
  local found = 0
  for _, req in ipairs(redis.call('ZRANGE', key, 0, n + STALE_TRIES - 1)) do
    if found >= n then return end
    local needs = request_needs(req)
    if needs then
      into[#into + 1] = {req = req, score = tonumber(redis.call('ZSCORE', key, req)), needs = needs}
      found = found + 1
    else
      redis.call('ZREM', L.pending, req)
      unqueue_type(req, t)
    end
  end
end

-- The board is idle: it is indexed as idle (the one place that does it) and takes the best queued
-- request it can serve. It looks at the head of its bucket's queue (the best single job any board
-- with its tags serves), the first GROUP_LOOKAHEAD groups of its type, and the head of its type's
-- queue (a request queued by a version of the lab without the index); best score first.
local function release(b)
  local record = board(b).record
  local st = redis.call('HMGET', record, 'device_type', 'stopped', 'tagset')
  local dt, ts = st[1], st[3]
  local out = {}
  if not dt or st[2] == '1' then return out end
  redis.call('HSET', record, 'job', '')
  if not board_live(b) or not board_may_idle(b) then  -- the health gate (gate.lua)
    unavailable(b)
    return out
  end
  if not ts then  -- registered by a version of the lab without the index
    ts = tagset_id(redis.call('SMEMBERS', board(b).tags))
    redis.call('HSET', record, 'tagset', ts)
    join_bucket(dt, ts, redis.call('SMEMBERS', board(b).tags))
  end
  local keys = dtype(dt)
  redis.call('ZADD', keys.idle, 'NX', fmt(NOW), b)
  -- Ordinary jobs look for boards in the buckets: only Good boards are there (an Unknown or Looping
  -- board is idle for its own health check only).
  if health_of(b) == H.Good then
    redis.call('ZADD', bucket(dt, ts).idle, 'NX', fmt(NOW), b)
  else
    redis.call('ZREM', bucket(dt, ts).idle, b)
  end
  local candidates, seen = {}, {}
  local check = redis.call('HGET', record, 'hc_job')  -- the board's own health check comes first
  if check and check ~= '' then
    local needs = request_needs(check)
    if needs then candidates[1] = {req = check, score = -1, needs = needs} end
  end
  queued_heads(bucket(dt, ts).queue, 1, dt, candidates)
  queued_heads(tindex(dt).groups, GROUP_LOOKAHEAD, dt, candidates)
  queued_heads(keys.pending, 1, dt, candidates)
  table.sort(candidates, function(x, y) return x.score < y.score end)
  for _, c in ipairs(candidates) do
    if not redis.call('ZSCORE', keys.idle, b) then break end
    if not seen[c.req] then
      seen[c.req] = true
      local picked = try_place(c.needs, b)
      if picked then
        for _, a in ipairs(commit(c.req, c.needs, picked)) do out[#out + 1] = a end
      end
    end
  end
  return out
end
