-- Ending a job: its final state, its error, the end of its log, its keys' expiry. Uses L.leases, L.jobs, L.ended.

-- ISO 8601 UTC of a time in ms (the log's `dt`).
local function iso(ms)
  local s = math.floor(ms / 1000)
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if m > 12 then m = m - 12 end
  if m <= 2 then y = y + 1 end
  local sod = s % 86400
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03d000', y, m, d, math.floor(sod / 3600),
                       math.floor(sod / 60) % 60, sod % 60, ms % 1000)
end

-- `logged`: the error also goes into the job's log, as the engine would have written it.
local function end_job(j, state, etype, emsg, logged)
  local k = job(j)
  local line = logged and cjson.encode({dt = iso(NOW), lvl = 'error', msg = ERR_CLASS[etype] .. ': ' .. emsg})
  redis.call('HSET', k.record, 'state', state, 'ended', fmt(NOW), 'current', '')
  if etype and etype ~= '' then redis.call('HSET', k.record, 'error_type', etype, 'error', emsg) end
  redis.call('ZREM', L.leases, j)
  if logged then
    redis.call('XADD', k.log, 'MAXLEN', '~', LOG_MAXLEN, '*', 'r', line)
  end
  redis.call('XADD', k.log, 'MAXLEN', '~', LOG_MAXLEN, '*', 'end', state)
  for _, key in ipairs({k.record, k.log, k.steps, k.results}) do redis.call('EXPIRE', key, KEEP) end
  -- the lab server's archiver takes ended jobs from here (atomically with the end; the newest 100000 kept)
  redis.call('RPUSH', L.ended, j)
  redis.call('LTRIM', L.ended, -100000, -1)
  -- the index forgets jobs whose keys have long expired
  redis.call('ZREMRANGEBYSCORE', L.jobs, '-inf', fmt(NOW - 2000 * KEEP))
end
