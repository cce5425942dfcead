-- The idle index (docs/lab.md, "Placement"): a device type's boards grouped by their tag set, a *bucket*.
-- Each bucket has its idle boards (K.bucket(t, s).idle) and the queued single jobs its boards serve
-- (.queue: every job whose tags are all in the bucket's). A type has few distinct tag sets, so placing
-- a job looks at a few buckets, and a freed board at the head of its own bucket's queue, whatever the
-- number of idle boards and of queued jobs. Keys: K.tindex(t) (tagsets, tagcount, groups), K.bucket(t, s).

local TINDEX, BUCKETS = {}, {}
local function tindex(t) return known(TINDEX, K.tindex, t) end
local function bucket(t, s)
  local id = t .. '\0' .. s
  local keys = BUCKETS[id]
  if not keys then keys = K.bucket(t, s); BUCKETS[id] = keys end
  return keys
end

-- The id of a tag set: as tasks.keys.tagset_id (sorted, without repeats, joined by newlines, SHA-1).
local function tagset_id(tags)
  local seen, sorted = {}, {}
  for _, tag in ipairs(tags) do
    if not seen[tag] then seen[tag] = true; sorted[#sorted + 1] = tag end
  end
  table.sort(sorted)
  return string.sub(redis.sha1hex(table.concat(sorted, '\n')), 1, 12)
end

-- The buckets of type t whose boards have every tag in `tags`, fewest tags first (a job that asks for
-- nothing takes a plain board before a special one); each call reads the type's few tag sets once.
local SERVING = {}
local function serving_buckets(t, tags)
  local sets = SERVING[t]
  if not sets then
    sets = {}
    local flat = redis.call('HGETALL', tindex(t).tagsets)
    for i = 1, #flat, 2 do
      local has = {}
      local list = cjson.decode(flat[i + 1])
      for _, tag in ipairs(list) do has[tag] = true end
      sets[#sets + 1] = {id = flat[i], has = has, n = #list}
    end
    table.sort(sets, function(a, b) if a.n ~= b.n then return a.n < b.n end return a.id < b.id end)
    SERVING[t] = sets
  end
  local out = {}
  for _, set in ipairs(sets) do
    local fits = true
    for _, tag in ipairs(tags or {}) do
      if not set.has[tag] then fits = false; break end
    end
    if fits then out[#out + 1] = set.id end
  end
  return out
end

local function bucket_ids(t) return redis.call('HKEYS', tindex(t).tagsets) end

-- The board's type and tag set, from its record.
local function board_bucket(b)
  local st = redis.call('HMGET', board(b).record, 'device_type', 'tagset')
  return st[1], st[2]
end

-- The board leaves the pool of idle boards (its worker is gone, it was reserved, it stopped).
local function unavailable(b)
  local dt, ts = board_bucket(b)
  if not dt then return end
  redis.call('ZREM', dtype(dt).idle, b)
  if ts then redis.call('ZREM', bucket(dt, ts).idle, b) end
end

-- Boards whose heartbeat is older than the TTL leave the idle index (at most `limit` per call), so that
-- a pick need not check the liveness of every idle board; a board's next heartbeat indexes it again.
local function expire_idle(limit)
  for _, b in ipairs(redis.call('ZRANGEBYSCORE', L.live, '-inf', fmt(NOW - BOARD_TTL), 'LIMIT', 0, limit)) do
    redis.call('ZREM', L.live, b)
    unavailable(b)
  end
end

-- A board with tag set `ts` (tags `tags`) joins type t: a tag set new to the type becomes a bucket, and
-- its queue gets the type's queued single jobs it serves (one pass over the type's queue: the only
-- step whose cost grows with the queue, and only when a board brings a tag set the type did not have).
local function join_bucket(t, ts, tags)
  local ti = tindex(t)
  if redis.call('HINCRBY', ti.tagcount, ts, 1) > 1 then return end
  redis.call('HSET', ti.tagsets, ts, #tags == 0 and '[]' or cjson.encode(tags))
  SERVING[t] = nil
  local has = {}
  for _, tag in ipairs(tags) do has[tag] = true end
  local q = bucket(t, ts).queue
  local flat = redis.call('ZRANGE', dtype(t).pending, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    local req = flat[i]
    if not group_of_request(req) then
      local st = redis.call('HMGET', job(req).record, 'state', 'needs')
      if st[1] == S.Submitted and st[2] then
        local fits = true
        for _, need in ipairs(cjson.decode(st[2])) do
          for _, tag in ipairs(need.tags or {}) do if not has[tag] then fits = false end end
        end
        if fits then redis.call('ZADD', q, flat[i + 1], req) end
      end
    end
  end
end

-- A board with tag set `ts` leaves type t (forgotten, or registered again with another type or tags):
-- the last one takes the bucket with it (its queued jobs stay in the type's queue).
local function leave_bucket(t, ts)
  local ti = tindex(t)
  if redis.call('HINCRBY', ti.tagcount, ts, -1) > 0 then return end
  redis.call('HDEL', ti.tagcount, ts)
  redis.call('HDEL', ti.tagsets, ts)
  SERVING[t] = nil
  local keys = bucket(t, ts)
  redis.call('DEL', keys.idle, keys.queue)
end
