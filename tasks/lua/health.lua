-- Board health (after place.lua and end.lua): a change and its history, and what a job's end means for it.
-- Discovers: the board's history list, K.LAB.health_changes (the lab server archives it).

-- The board's health becomes `new` (`who`: '' for the lab itself), recorded with when and why.
local function change_health(b, new, who, reason)
  local k = board(b)
  local had = redis.call('HGET', k.record, 'health')
  local old = had or H.Unknown
  redis.call('HSET', k.record, 'health', new, 'health_reason', reason, 'health_by', who, 'health_changed', fmt(NOW))
  if had and old == new and who == '' then return old end  -- the lab repeating itself (a first health is kept)
  local entry = cjson.encode({board = b, old = old, new = new, who = who, reason = reason, time = NOW})
  redis.call('LPUSH', k.health, entry)
  redis.call('LTRIM', k.health, 0, HEALTH_HISTORY - 1)
  redis.call('RPUSH', K.LAB.health_changes, entry)
  redis.call('LTRIM', K.LAB.health_changes, -100000, -1)
  return old
end

-- The board's running (or reserved) job is canceled: Canceling, and its worker is told.
local function cancel_running(b)
  local j = redis.call('HGET', board(b).record, 'job')
  if not j or j == '' then return '' end
  local st = redis.call('HMGET', job(j).record, 'state', 'board')
  if st[2] ~= b or not ACTIVE[st[1]] then return '' end
  if st[1] ~= S.Canceling then
    redis.call('HSET', job(j).record, 'state', S.Canceling, 'cancel_requested', fmt(NOW))
  end
  redis.call('PUBLISH', K.control(b), j)
  return j
end

-- After a health change: out of the pool of idle boards, or back in (taking queued work) when free.
local function health_pool(b)
  if not board_may_idle(b) then unavailable(b) return {} end
  local j = redis.call('HGET', board(b).record, 'job')
  if j and j ~= '' then return {} end
  return release(b)
end

-- A job of board b ended (before the board is released): a health check's outcome sets the board Good
-- or Bad; an ordinary job counts towards the next health check, and its Infrastructure errors in a row
-- set the board Bad at the board's limit.
local function after_job(b, j, final, etype, emsg)
  local record = board(b).record
  local st = redis.call('HMGET', record, 'health', 'hc_job', 'hc_definition', 'hc_jobs', 'hc_hours', 'hc_last',
                        'infra_limit')
  local h = st[1] or H.Good
  local why = ''
  if emsg and emsg ~= '' then why = ': ' .. emsg end
  if st[2] == j then
    redis.call('HSET', record, 'hc_job', '', 'hc_due', '0', 'hc_last', fmt(NOW), 'hc_last_job', j,
               'hc_last_result', final, 'jobs_since_hc', 0)
    if not health_may_idle(h) then return end  -- an admin's Maintenance, Bad or Retired stays
    if final == S.Complete then
      if h ~= H.Looping then change_health(b, H.Good, '', 'health check job ' .. j .. ' passed') end
    else
      change_health(b, H.Bad, '', 'health check job ' .. j .. ' ' .. final .. why)
    end
    return
  end
  local n = redis.call('HINCRBY', record, 'jobs_since_hc', 1)
  if etype == ERR.Infrastructure then
    local count = redis.call('HINCRBY', record, 'infra_errors', 1)
    local limit = tonumber(st[7] or '3') or 3
    if limit > 0 and count >= limit and h == H.Good then
      change_health(b, H.Bad, '', count .. ' infrastructure errors in a row (the last: job ' .. j .. why .. ')')
    end
  elseif etype ~= ERR.Canceled then
    redis.call('HSET', record, 'infra_errors', 0)
  end
  if (st[3] or '') ~= '' and h == H.Good then
    local every, hours = tonumber(st[4] or '0') or 0, tonumber(st[5] or '0') or 0
    if (every > 0 and n >= every) or (hours > 0 and NOW - tonumber(st[6] or '0') >= hours * 3600000) then
      redis.call('HSET', record, 'hc_due', '1')
    end
  end
end
