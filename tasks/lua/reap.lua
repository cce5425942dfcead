-- Jobs whose lease expired: a job that never started goes back to the queue (and onto another idle board
-- if one serves it); any other ends Incomplete (Canceled if it was canceling), naming the lost worker.
-- Nothing is reaped within a lease of the lab coming back (workers had no chance to renew their leases).
-- A lost health check ends Incomplete even if it never started, and sets its board Bad (as a failed one does).
-- Queued jobs and multinode groups past their queue timeout (`timeouts.queue`) are canceled, saying why.
-- KEYS: lab resumed, leases, jobs, pending, ended, queue_until, live
-- A: none
-- Discovers: the jobs whose lease expired, their boards, what placing a requeued job considers; the jobs
--   whose queue timeout passed (a group's: its members), their device types' boards (record); boards whose
--   heartbeat expired, which leave the idle index.
-- Returns {{{job, state, board, host, pid file, boot id}, ...}, {{job, board, attempt}, ...}, {canceled job, ...}}.
take_lab('resumed', 'leases', 'jobs', 'pending', 'ended', 'queue_until', 'live')
keys_taken()
expire_idle(50)

-- How many boards a device type has, and how many of them are Good and online.
local function good_boards(t)
  local boards = redis.call('SMEMBERS', dtype(t).boards)
  local good = 0
  for _, b in ipairs(boards) do
    if health_of(b) == H.Good and board_live(b) then good = good + 1 end
  end
  return #boards, good
end
-- Why no board of the type took the job (`wanted` boards of it at once: a group's members of that type).
local function no_board_reason(t, wanted)
  local boards, good = good_boards(t)
  if boards == 0 then return 'device type ' .. t .. ' has no board' end
  if good == 0 then return 'device type ' .. t .. ' has no Good board (' .. boards .. ' board(s))' end
  if good < wanted then
    return 'it needs ' .. wanted .. ' boards of device type ' .. t .. ' at once, which has ' .. good .. ' Good'
  end
  return 'its ' .. good .. ' Good board(s) of device type ' .. t .. ' were busy'
end
-- A queued multinode group past its queue timeout: every member ends Canceled (the group is one request).
local function group_timed_out(g, timed_out)
  local gs = redis.call('HMGET', group(g).record, 'state', 'needs', 'queue_timeout')
  if gs[1] ~= GS.Submitted or not gs[2] then return end
  local needs = cjson.decode(gs[2])
  unqueue(K.GROUP_REQUEST .. g, needs)
  redis.call('HSET', group(g).record, 'state', GS.Canceled)
  local wanted, types = {}, {}
  for _, need in ipairs(needs) do
    local t = need.device_type or ''
    if not wanted[t] then types[#types + 1] = t end
    wanted[t] = (wanted[t] or 0) + 1
  end
  local why = nil  -- the first type that cannot serve the group, else why its boards were busy
  for _, t in ipairs(types) do
    local r = no_board_reason(t, wanted[t])
    if not why then why = r end
    if string.sub(r, 1, 4) ~= 'its ' then why = r break end
  end
  local msg = 'queue timeout: multinode group ' .. g .. ' not scheduled within ' .. (gs[3] or '?') ..
              ' s (timeouts.queue): ' .. (why or '')
  for _, need in ipairs(needs) do
    if redis.call('HGET', job(need.job).record, 'state') == S.Submitted then
      end_job(need.job, S.Canceled, ERR.Canceled, msg, true)
      timed_out[#timed_out + 1] = need.job
    end
  end
end
local timed_out = {}
for _, j in ipairs(redis.call('ZRANGEBYSCORE', L.queue_until, '-inf', NOW, 'LIMIT', 0, 50)) do
  redis.call('ZREM', L.queue_until, j)
  local g = group_of_request(j)
  if g then
    group_timed_out(g, timed_out)
  else
    local st = redis.call('HMGET', job(j).record, 'state', 'needs', 'queue_timeout', 'device_type', 'group')
    if st[1] == S.Submitted and st[2] and not st[5] then
      unqueue(j, cjson.decode(st[2]))
      end_job(j, S.Canceled, ERR.Canceled, 'queue timeout: not scheduled within ' .. (st[3] or '?') ..
              ' s (timeouts.queue): ' .. no_board_reason(st[4] or '', 1), true)
      timed_out[#timed_out + 1] = j
    end
  end
end
local resumed = tonumber(redis.call('GET', L.resumed) or '0')
if NOW - resumed < LEASE then return {{}, {}, timed_out} end
local lost, placed = {}, {}
for _, j in ipairs(redis.call('ZRANGEBYSCORE', L.leases, '-inf', NOW, 'LIMIT', 0, 50)) do
  redis.call('ZREM', L.leases, j)
  local st = redis.call('HMGET', job(j).record, 'state', 'board', 'laststep', 'score', 'needs', 'current', 'group')
  if ACTIVE[st[1]] then
    local b = st[2] or ''
    local bi = redis.call('HMGET', board(b).record, 'node', 'host', 'pid', 'pid_file', 'boot_id', 'job')
    if bi[6] == j then redis.call('HSET', board(b).record, 'job', '') end
    unavailable(b)
    -- a health check is never requeued: its board's worker was lost during it, which sets the board Bad
    local check = redis.call('HGET', board(b).record, 'hc_job') == j
    if st[1] == S.Scheduled and tonumber(st[3]) < 0 and not st[7] and not check then
      for _, a in ipairs(requeue(j, cjson.decode(st[5]), st[4])) do placed[#placed + 1] = a end
      lost[#lost + 1] = {j, S.Submitted, b, bi[2] or '', bi[4] or '', bi[5] or ''}
    else
      local final = S.Incomplete
      if st[1] == S.Canceling then final = S.Canceled end
      local during = ''
      if st[6] and st[6] ~= '' then during = ' during ' .. st[6] end
      local why = 'worker lost: ' .. (bi[1] or '?') .. ' (pid ' .. (bi[3] or '?') .. ' on ' .. (bi[2] or '?') ..
                  ') stopped renewing its lease' .. during
      if check then why = why .. ' (the worker was lost during its health check)' end
      end_job(j, final, ERR.Infrastructure, why, true)
      after_job(b, j, final, ERR.Infrastructure, why)
      lost[#lost + 1] = {j, final, b, bi[2] or '', bi[4] or '', bi[5] or ''}
    end
  end
end
return {lost, placed, timed_out}
