-- The health gate of placement (loaded before place.lua): which boards may be idle, which needs they serve.
-- A board with no health yet is Good (registered by hand, or before health existed).
-- Discovers: K.LAB.hosts (the worker hosts' health).

local function host_active(record)
  local host = redis.call('HGET', record, 'host')
  local h = host and redis.call('HGET', K.LAB.hosts, host)
  return not h or cjson.decode(h).health == WH.Active
end

local function health_of(b) return redis.call('HGET', board(b).record, 'health') or H.Good end

-- Good, or Unknown/Looping (they wait for their health check), on an Active worker host.
local function health_may_idle(h) return h == H.Good or h == H.Unknown or h == H.Looping end
local function board_may_idle(b)
  return health_may_idle(health_of(b)) and host_active(board(b).record)
end

-- A health check runs only on its own board; any other job only on a Good board with no health check due.
local function board_takes(b, need)
  local st = redis.call('HMGET', board(b).record, 'health', 'hc_due')
  local h = st[1] or H.Good
  if need.health_check then return need.board == b and health_may_idle(h) end
  return h == H.Good and st[2] ~= '1'
end
