-- Jobs whose lease expired: a job that never started goes back to the queue (and onto another idle board
-- if one serves it); any other ends Incomplete (Canceled if it was canceling), naming the lost worker.
-- Nothing is reaped within a lease of the lab coming back (workers had no chance to renew their leases).
-- Queued jobs past their queue timeout (`timeouts.queue`) are canceled, saying why.
-- KEYS: lab resumed, leases, jobs, pending, ended, queue_until, live
-- A: none
-- Discovers: the jobs whose lease expired, their boards, what placing a requeued job considers; the jobs
--   whose queue timeout passed, their device type's boards (record); boards whose heartbeat expired,
--   which leave the idle index.
-- Returns {{{job, state, board, host, pid file, boot id}, ...}, {{job, board, attempt}, ...}, {canceled job, ...}}.
take_lab('resumed', 'leases', 'jobs', 'pending', 'ended', 'queue_until', 'live')
keys_taken()
expire_idle(50)

-- Why no board of the type took the job.
local function no_board_reason(t)
  local boards = redis.call('SMEMBERS', dtype(t).boards)
  if #boards == 0 then return 'device type ' .. t .. ' has no board' end
  local good = 0
  for _, b in ipairs(boards) do
    if health_of(b) == H.Good and board_live(b) then good = good + 1 end
  end
  if good == 0 then return 'device type ' .. t .. ' has no Good board (' .. #boards .. ' board(s))' end
  return 'its ' .. good .. ' Good board(s) of device type ' .. t .. ' were busy'
end
local timed_out = {}
for _, j in ipairs(redis.call('ZRANGEBYSCORE', L.queue_until, '-inf', NOW, 'LIMIT', 0, 50)) do
  redis.call('ZREM', L.queue_until, j)
  local st = redis.call('HMGET', job(j).record, 'state', 'needs', 'queue_timeout', 'device_type', 'group')
  if st[1] == S.Submitted and st[2] and not st[5] then
    unqueue(j, cjson.decode(st[2]))
    end_job(j, S.Canceled, ERR.Canceled, 'queue timeout: not scheduled within ' .. (st[3] or '?') ..
            ' s (timeouts.queue): ' .. no_board_reason(st[4] or ''), true)
    timed_out[#timed_out + 1] = j
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
    if st[1] == S.Scheduled and tonumber(st[3]) < 0 and not st[7] then
      for _, a in ipairs(requeue(j, cjson.decode(st[5]), st[4])) do placed[#placed + 1] = a end
      lost[#lost + 1] = {j, S.Submitted, b, bi[2] or '', bi[4] or '', bi[5] or ''}
    else
      local final = S.Incomplete
      if st[1] == S.Canceling then final = S.Canceled end
      local during = ''
      if st[6] and st[6] ~= '' then during = ' during ' .. st[6] end
      end_job(j, final, ERR.Infrastructure, 'worker lost: ' .. (bi[1] or '?') .. ' (pid ' .. (bi[3] or '?') ..
              ' on ' .. (bi[2] or '?') .. ') stopped renewing its lease' .. during, true)
      lost[#lost + 1] = {j, final, b, bi[2] or '', bi[4] or '', bi[5] or ''}
    end
  end
end
return {lost, placed, timed_out}
