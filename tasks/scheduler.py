"""Which board runs which job: the board registry, the queues, leases, recovery.

Every decision is one Lua script run atomically in Redis, so two submitters,
two finishing boards and a lease reaper can never hand one board two jobs or
one job two boards. There is no polling loop: a job is placed when it is
submitted, when a board finishes (``finish`` takes the next queued job
itself) and when a worker registers or comes back to life.

Placement works on *requests*: a request is a list of needs, each "one board
of this device type with these tags, for this job". A single job is a request
of one need and its id is the job id. A multinode group is a request
``group:<id>`` (hash ``lava:group:<id>`` with the same ``needs`` field) of
several needs: ``try_place`` picks a board for every need or for none, so a
group that cannot be placed in full waits in the queues without holding any
board.

Redis keys (prefix ``lava:``):

=============================  ======  ==============================================
``job:<id>``                   hash    the job record (see ``tasks.records``)
``job:<id>:log``               stream  the live log, one entry per record, then ``end``
``job:<id>:steps``             list    one JSON entry per chain step that ran (audit)
``job:<id>:results``           string  the final results (JSON list)
``jobs``                       zset    every job by submit time (ms)
``pending``                    zset    queued requests, by (100 - priority, submit ms)
``pending:<device type>``      zset    the same, per device type a request needs
``leases``                     zset    active job -> lease expiry (ms, Redis clock)
``boards``                     set     every registered board
``type:<device type>:boards``  set     the boards of one device type
``idle:<device type>``         zset    idle boards -> idle since (ms)
``board:<name>``               hash    device type, worker node/host/pid, heartbeat, job
``board:<name>:tags``          set     the board's tags
``board:<name>:control``       pubsub  cancel requests for the board's running job
``tick``, ``resumed``          string  last heartbeat of any worker; when the lab came back
``ended``                      list    jobs that reached their final state, for the lab server's archiver
``done:<token>``               string  a script's answer, so a retried call is not run twice
``last_id``                    string  the last job id the lab assigned (``tasks.ids``)
=============================  ======  ==============================================

Job ids are the lab's own (integers; ``N.i`` for member ``i`` of group ``N``):
``job_key`` and ``group_key`` refuse anything else, so no client-chosen
text ever becomes a key.

Times are Redis server time (``TIME``), so hosts' clocks need not agree.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tasks import config
from tasks.ids import is_group_id, member_id, new_id, require_group_id, require_job_id

if TYPE_CHECKING:
    from pipeline.device import Device
    from pipeline.job import Job

PREFIX = "lava:"
FINAL_STATES = ("Complete", "Incomplete", "Canceled")
SUBMIT_QUEUE = "lava.submit"


def board_queue(board: str) -> str:
    return f"board.{board}"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{require_job_id(job_id)}"


def group_key(group_id: str) -> str:
    return f"{PREFIX}group:{require_group_id(group_id)}"


def board_key(board: str) -> str:
    return f"{PREFIX}board:{board}"


def control_channel(board: str) -> str:
    return f"{PREFIX}board:{board}:control"


# ---------------------------------------------------------------- Lua

LUA_COMMON = r"""
local P = 'lava:'
local TOKEN = ARGV[1]
local BOARD_TTL = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local KEEP = tonumber(ARGV[4])
local A = {}
for i = 5, #ARGV do A[#A + 1] = ARGV[i] end
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local ACTIVE = {Scheduled = true, Running = true, Canceling = true}

local function fmt(n) return string.format('%.0f', n) end
local function jk(j) return P .. 'job:' .. j end
local function bk(b) return P .. 'board:' .. b end

local function board_live(b)
  local hb = redis.call('HGET', bk(b), 'heartbeat')
  return hb ~= false and (NOW - tonumber(hb)) <= BOARD_TTL
end

local function board_fits(b, tags)
  for _, tag in ipairs(tags or {}) do
    if redis.call('SISMEMBER', bk(b) .. ':tags', tag) == 0 then return false end
  end
  return true
end

-- The needs of a queued request, or nil when it should leave the queues.
local function request_needs(req)
  if string.sub(req, 1, 6) == 'group:' then
    local g = redis.call('HMGET', P .. req, 'state', 'needs')
    if g[1] ~= 'Submitted' or not g[2] then return nil end
    return cjson.decode(g[2])
  end
  local st = redis.call('HMGET', jk(req), 'state', 'needs')
  if st[1] ~= 'Submitted' or not st[2] then return nil end
  return cjson.decode(st[2])
end

-- A board for every need or nil (all or nothing); `prefer` is tried first.
local function try_place(needs, prefer)
  local picked, used = {}, {}
  for i, need in ipairs(needs) do
    local idle = P .. 'idle:' .. need.device_type
    local choice = nil
    if prefer and not used[prefer] and redis.call('ZSCORE', idle, prefer)
        and board_live(prefer) and board_fits(prefer, need.tags) then
      choice = prefer
    else
      for _, b in ipairs(redis.call('ZRANGE', idle, 0, -1)) do
        if not used[b] and board_live(b) and board_fits(b, need.tags) then choice = b; break end
      end
    end
    if not choice then return nil end
    used[choice] = true
    picked[i] = choice
  end
  return picked
end

-- The first device type among the needs that has no board at all, or nil.
local function type_without_board(needs)
  for _, need in ipairs(needs) do
    if redis.call('SCARD', P .. 'type:' .. need.device_type .. ':boards') == 0 then return need.device_type end
  end
  return nil
end

-- A decoded JSON object as HSET's list of fields and values.
local function fields_of(object)
  local out = {}
  for key, value in pairs(object) do out[#out + 1] = key; out[#out + 1] = tostring(value) end
  return out
end

local function unqueue(req, needs)
  redis.call('ZREM', P .. 'pending', req)
  for _, need in ipairs(needs) do redis.call('ZREM', P .. 'pending:' .. need.device_type, req) end
end

local function enqueue(req, needs, score)
  redis.call('ZADD', P .. 'pending', score, req)
  for _, need in ipairs(needs) do redis.call('ZADD', P .. 'pending:' .. need.device_type, score, req) end
end

-- Reserve the picked boards: each job becomes Scheduled with a lease.
local function commit(req, needs, picked)
  local out = {}
  for i, need in ipairs(needs) do
    local b, j = picked[i], need.job
    redis.call('ZREM', P .. 'idle:' .. need.device_type, b)
    redis.call('HSET', bk(b), 'job', j)
    local attempt = redis.call('HINCRBY', jk(j), 'attempt', 1)
    redis.call('HSET', jk(j), 'state', 'Scheduled', 'board', b, 'scheduled', fmt(NOW), 'laststep', -1)
    redis.call('ZADD', P .. 'leases', fmt(NOW + LEASE), j)
    out[#out + 1] = {j, b, attempt}
  end
  unqueue(req, needs)
  if string.sub(req, 1, 6) == 'group:' then redis.call('HSET', P .. req, 'state', 'Scheduled') end
  return out
end

-- The board is idle; it takes the queued requests it can serve, best first.
local function release(b)
  local dt = redis.call('HGET', bk(b), 'device_type')
  local out = {}
  if not dt or redis.call('HGET', bk(b), 'stopped') == '1' then return out end
  redis.call('HSET', bk(b), 'job', '')
  local idle = P .. 'idle:' .. dt
  if not redis.call('ZSCORE', idle, b) then redis.call('ZADD', idle, fmt(NOW), b) end
  if not board_live(b) then return out end
  for _, req in ipairs(redis.call('ZRANGE', P .. 'pending:' .. dt, 0, 199)) do
    if not redis.call('ZSCORE', idle, b) then break end
    local needs = request_needs(req)
    if not needs then
      redis.call('ZREM', P .. 'pending', req)
      redis.call('ZREM', P .. 'pending:' .. dt, req)
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
  local dt = redis.call('HGET', bk(b), 'device_type')
  if dt then redis.call('ZREM', P .. 'idle:' .. dt, b) end
end

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

local function end_job(j, state, etype, emsg, logged)
  local k = jk(j)
  redis.call('HSET', k, 'state', state, 'ended', fmt(NOW), 'current', '')
  if etype and etype ~= '' then redis.call('HSET', k, 'error_type', etype, 'error', emsg) end
  redis.call('ZREM', P .. 'leases', j)
  if logged then
    redis.call('XADD', k .. ':log', 'MAXLEN', '~', 200000, '*', 'r',
               cjson.encode({dt = iso(NOW), lvl = 'error', msg = etype .. 'Error: ' .. emsg}))
  end
  redis.call('XADD', k .. ':log', 'MAXLEN', '~', 200000, '*', 'end', state)
  -- the lab server's archiver takes ended jobs from here (atomically with the end; the newest 100000 kept)
  redis.call('RPUSH', P .. 'ended', j)
  redis.call('LTRIM', P .. 'ended', -100000, -1)
  for _, key in ipairs({k, k .. ':log', k .. ':steps', k .. ':results'}) do redis.call('EXPIRE', key, KEEP) end
  -- the index forgets jobs whose keys have long expired
  redis.call('ZREMRANGEBYSCORE', P .. 'jobs', '-inf', fmt(NOW - 2000 * KEEP))
end

local function main()
"""

LUA_TAIL = r"""
end

if TOKEN ~= '' then
  local previous = redis.call('GET', P .. 'done:' .. TOKEN)
  if previous then return cjson.decode(previous) end
end
local result = main()
if TOKEN ~= '' then redis.call('SET', P .. 'done:' .. TOKEN, cjson.encode(result), 'EX', 600) end
return result
"""

# A: job, fields (JSON object), needs (JSON), priority, queue_anyway
LUA_SUBMIT = r"""
  local j, needs = A[1], cjson.decode(A[3])
  if redis.call('EXISTS', jk(j)) == 1 then return {'exists', redis.call('HGET', jk(j), 'state') or ''} end
  local missing = type_without_board(needs)
  if A[5] ~= '1' and missing then return {'noboard', missing} end
  local score = fmt((100 - tonumber(A[4])) * 1e13 + NOW)
  redis.call('HSET', jk(j), 'state', 'Submitted', 'submitted', fmt(NOW), 'attempt', 0, 'laststep', -1,
             'needs', A[3], 'score', score, 'priority', A[4], unpack(fields_of(cjson.decode(A[2]))))
  redis.call('ZADD', P .. 'jobs', fmt(NOW), j)
  local picked = try_place(needs, nil)
  if picked then return {'scheduled', commit(j, needs, picked)} end
  enqueue(j, needs, score)
  return {'queued', {}}
"""

# A: group, group fields (JSON), needs (JSON: one need per member job), priority, queue_anyway,
#    member job fields (JSON: job -> fields)
LUA_SUBMIT_GROUP = r"""
  local g, needs = A[1], cjson.decode(A[3])
  local gk = P .. 'group:' .. g
  if redis.call('EXISTS', gk) == 1 then return {'exists', redis.call('HGET', gk, 'state') or ''} end
  local missing = type_without_board(needs)
  if A[5] ~= '1' and missing then return {'noboard', missing} end
  local score = fmt((100 - tonumber(A[4])) * 1e13 + NOW)
  redis.call('HSET', gk, 'state', 'Submitted', 'submitted', fmt(NOW), 'needs', A[3], 'score', score,
             'priority', A[4], unpack(fields_of(cjson.decode(A[2]))))
  local members = cjson.decode(A[6])
  for _, need in ipairs(needs) do
    redis.call('HSET', jk(need.job), 'state', 'Submitted', 'submitted', fmt(NOW), 'attempt', 0, 'laststep', -1,
               'needs', cjson.encode({need}), 'score', score, 'priority', A[4], 'group', g,
               unpack(fields_of(members[need.job])))
    redis.call('ZADD', P .. 'jobs', fmt(NOW), need.job)
  end
  local req = 'group:' .. g
  local picked = try_place(needs, nil)
  if picked then
    redis.call('HSET', gk, 'state', 'Scheduled')
    return {'scheduled', commit(req, needs, picked)}
  end
  enqueue(req, needs, score)
  return {'queued', {}}
"""

# A: job, board, attempt, step, action name, node, pid, host
LUA_CLAIM = r"""
  local k = jk(A[1])
  local st = redis.call('HMGET', k, 'state', 'board', 'attempt', 'laststep')
  if not st[1] then return {'missing', ''} end
  if st[2] ~= A[2] or st[3] ~= A[3] then return {'stale', st[1]} end
  if not ACTIVE[st[1]] then return {'final', st[1]} end
  local step = tonumber(A[4])
  if tonumber(st[4]) ~= step - 1 then return {'duplicate', st[1]} end
  local state = st[1]
  if step == 0 then
    if state == 'Scheduled' then state = 'Running' end
    redis.call('HSET', k, 'state', state, 'started', fmt(NOW), 'worker', A[6], 'worker_pid', A[7], 'host', A[8])
  end
  redis.call('HSET', k, 'laststep', step, 'current', A[5])
  redis.call('ZADD', P .. 'leases', fmt(NOW + LEASE), A[1])
  return {'ok', state}
"""

# A: job, board, attempt, state, error type, error, durations JSON, results JSON, audit entry JSON
LUA_FINISH = r"""
  local j, b = A[1], A[2]
  local k = jk(j)
  if A[9] ~= '' then redis.call('RPUSH', k .. ':steps', A[9]) end
  local st = redis.call('HMGET', k, 'state', 'board', 'attempt')
  local final = st[1] or 'missing'
  if st[1] and st[2] == b and st[3] == A[3] and ACTIVE[st[1]] then
    final = A[4]
    if st[1] == 'Canceling' then final = 'Canceled' end
    if A[7] ~= '' then redis.call('HSET', k, 'durations', A[7]) end
    if A[8] ~= '' then redis.call('SET', k .. ':results', A[8]) end
    end_job(j, final, A[5], A[6])
  end
  local out = {}
  local bj = redis.call('HGET', bk(b), 'job')
  if bj == j or bj == '' or not bj then out = release(b) end
  return {final, out}
"""

# A: job, board, reason, only if started ('1'), error type
LUA_LOSE = r"""
  local j, b = A[1], A[2]
  local st = redis.call('HMGET', jk(j), 'state', 'board', 'laststep')
  if not st[1] or st[2] ~= b or not ACTIVE[st[1]] then return {'noop', st[1] or 'missing'} end
  if A[4] == '1' and tonumber(st[3]) < 0 then return {'unstarted', st[1]} end
  local final = 'Incomplete'
  if st[1] == 'Canceling' then final = 'Canceled' end
  end_job(j, final, A[5], A[3], true)
  if redis.call('HGET', bk(b), 'job') == j then redis.call('HSET', bk(b), 'job', '') end
  unavailable(b)
  return {final, ''}
"""

# A: job, board  -- a reserved job that never started gets a new attempt (its chain is sent again)
LUA_REDISPATCH = r"""
  local j, b = A[1], A[2]
  local st = redis.call('HMGET', jk(j), 'state', 'board', 'laststep')
  if not st[1] or st[2] ~= b or not ACTIVE[st[1]] or tonumber(st[3]) >= 0 then return {'noop', st[1] or 'missing'} end
  local attempt = redis.call('HINCRBY', jk(j), 'attempt', 1)
  redis.call('ZADD', P .. 'leases', fmt(NOW + LEASE), j)
  return {'ok', attempt}
"""

# A: job  -- a member of a group cancels the whole group
LUA_CANCEL = r"""
  local function cancel_one(j)
    local st = redis.call('HMGET', jk(j), 'state', 'board', 'needs', 'group')
    if not st[1] then return {'missing', ''} end
    if st[1] == 'Submitted' then
      if st[4] then
        unqueue('group:' .. st[4], cjson.decode(redis.call('HGET', P .. 'group:' .. st[4], 'needs') or '[]'))
        redis.call('HSET', P .. 'group:' .. st[4], 'state', 'Canceled')
      else
        unqueue(j, cjson.decode(st[3]))
      end
      end_job(j, 'Canceled', 'Canceled', 'canceled while queued')
      return {'Canceled', ''}
    end
    if ACTIVE[st[1]] then
      redis.call('HSET', jk(j), 'state', 'Canceling', 'cancel_requested', fmt(NOW))
      redis.call('PUBLISH', bk(st[2]) .. ':control', j)
      return {'Canceling', st[2]}
    end
    return {st[1], st[2] or ''}
  end
  local group = redis.call('HGET', jk(A[1]), 'group')
  if not group then return cancel_one(A[1]) end
  local answer = nil
  for _, need in ipairs(cjson.decode(redis.call('HGET', P .. 'group:' .. group, 'needs') or '[]')) do
    local one = cancel_one(need.job)
    if need.job == A[1] then answer = one end
  end
  return answer or {'missing', ''}
"""

# A: board, node, job the worker runs ('' if none)
LUA_HEARTBEAT = r"""
  local last = redis.call('GET', P .. 'tick')
  if not last or NOW - tonumber(last) > LEASE / 3 then redis.call('SET', P .. 'resumed', fmt(NOW)) end
  redis.call('SET', P .. 'tick', fmt(NOW))
  local b = A[1]
  local node = redis.call('HGET', bk(b), 'node')
  if not node then return {'unregistered', {}} end
  if node ~= A[2] then return {'replaced', {node}} end
  if redis.call('HGET', bk(b), 'stopped') == '1' then return {'stopped', {}} end
  redis.call('HSET', bk(b), 'heartbeat', fmt(NOW))
  if A[3] ~= '' then
    local st = redis.call('HMGET', jk(A[3]), 'state', 'board')
    if st[2] == b and ACTIVE[st[1]] then
      redis.call('ZADD', P .. 'leases', fmt(NOW + LEASE), A[3])
      return {'job', {st[1]}}
    end
    return {'gone', {st[1] or 'missing'}}
  end
  local bj = redis.call('HGET', bk(b), 'job')
  if bj and bj ~= '' then
    local st = redis.call('HMGET', jk(bj), 'state', 'board', 'laststep', 'scheduled', 'attempt')
    if st[2] == b and ACTIVE[st[1]] then
      redis.call('ZADD', P .. 'leases', fmt(NOW + LEASE), bj)
      return {'reserved', {bj, st[1], st[3], fmt(NOW - tonumber(st[4] or NOW)), st[5]}}
    end
    return {'idle', release(b)}
  end
  local dt = redis.call('HGET', bk(b), 'device_type')
  if not redis.call('ZSCORE', P .. 'idle:' .. dt, b) or redis.call('ZCARD', P .. 'pending:' .. dt) > 0 then
    return {'idle', release(b)}
  end
  return {'idle', {}}
"""

# no A: mark the jobs whose lease expired
LUA_REAP = r"""
  local resumed = tonumber(redis.call('GET', P .. 'resumed') or '0')
  if NOW - resumed < LEASE then return {{}, {}} end
  local lost, placed = {}, {}
  for _, j in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', NOW, 'LIMIT', 0, 50)) do
    redis.call('ZREM', P .. 'leases', j)
    local st = redis.call('HMGET', jk(j), 'state', 'board', 'laststep', 'score', 'needs', 'current', 'group')
    if ACTIVE[st[1]] then
      local b = st[2] or ''
      local bi = redis.call('HMGET', bk(b), 'node', 'host', 'pid', 'pid_file', 'boot_id', 'job')
      if bi[6] == j then redis.call('HSET', bk(b), 'job', '') end
      unavailable(b)
      if st[1] == 'Scheduled' and tonumber(st[3]) < 0 and not st[7] then
        -- it never started: back to the queue, and onto another board if one is idle
        redis.call('HSET', jk(j), 'state', 'Submitted', 'board', '')
        local needs = cjson.decode(st[5])
        local picked = try_place(needs, nil)
        if picked then
          for _, a in ipairs(commit(j, needs, picked)) do placed[#placed + 1] = a end
        else
          enqueue(j, needs, st[4])
        end
        lost[#lost + 1] = {j, 'Submitted', b, bi[2] or '', bi[4] or '', bi[5] or ''}
      else
        local final = 'Incomplete'
        if st[1] == 'Canceling' then final = 'Canceled' end
        local during = ''
        if st[6] and st[6] ~= '' then during = ' during ' .. st[6] end
        end_job(j, final, 'Infrastructure', 'worker lost: ' .. (bi[1] or '?') .. ' (pid ' .. (bi[3] or '?') ..
                ' on ' .. (bi[2] or '?') .. ') stopped renewing its lease' .. during, true)
        lost[#lost + 1] = {j, final, b, bi[2] or '', bi[4] or '', bi[5] or ''}
      end
    end
  end
  return {lost, placed}
"""

# A: board, device type, tags JSON, node, host, pid, supervisor pid, device YAML, device sha, pid file, boot id, force
LUA_REGISTER = r"""
  local b = A[1]
  local k = bk(b)
  local old = redis.call('HMGET', k, 'node', 'host', 'pid', 'heartbeat', 'device_type', 'stopped')
  if old[1] and old[1] ~= A[4] and A[12] ~= '1' and old[6] ~= '1' and old[4]
      and NOW - tonumber(old[4]) <= BOARD_TTL then
    return {'conflict', {old[1], old[2] or '', old[3] or '', fmt(NOW - tonumber(old[4]))}}
  end
  if old[5] and old[5] ~= A[2] then
    redis.call('SREM', P .. 'type:' .. old[5] .. ':boards', b)
    redis.call('ZREM', P .. 'idle:' .. old[5], b)
  end
  redis.call('HSET', k, 'name', b, 'device_type', A[2], 'tags', A[3], 'node', A[4], 'host', A[5], 'pid', A[6],
             'supervisor', A[7], 'device', A[8], 'device_sha', A[9], 'pid_file', A[10], 'boot_id', A[11],
             'registered', fmt(NOW), 'heartbeat', fmt(NOW), 'stopped', '0')
  if redis.call('HEXISTS', k, 'job') == 0 then redis.call('HSET', k, 'job', '') end
  redis.call('DEL', k .. ':tags')
  for _, tag in ipairs(cjson.decode(A[3])) do redis.call('SADD', k .. ':tags', tag) end
  redis.call('SADD', P .. 'boards', b)
  redis.call('SADD', P .. 'type:' .. A[2] .. ':boards', b)
  redis.call('ZREM', P .. 'idle:' .. A[2], b)
  local j = redis.call('HGET', k, 'job')
  if j ~= '' then
    local st = redis.call('HMGET', jk(j), 'state', 'board', 'laststep', 'worker', 'worker_pid', 'current')
    return {'job', {j, st[1] or 'missing', st[2] or '', st[3] or '-1', st[4] or '', st[5] or '', st[6] or ''}}
  end
  return {'free', {}}
"""

# A: board
LUA_RELEASE = r"""
  return {'idle', release(A[1])}
"""

# A: board, node  -- the worker stops: the board leaves the pool; a reserved job that never started is requeued
LUA_STOP = r"""
  local b = A[1]
  local k = bk(b)
  if redis.call('HGET', k, 'node') ~= A[2] then return {'replaced', {}} end
  redis.call('HSET', k, 'stopped', '1', 'heartbeat', '0')
  unavailable(b)
  local placed = {}
  local j = redis.call('HGET', k, 'job')
  if j and j ~= '' then
    local st = redis.call('HMGET', jk(j), 'state', 'board', 'laststep', 'score', 'needs', 'group')
    if st[2] == b and st[1] == 'Scheduled' and tonumber(st[3]) < 0 and not st[6] then
      redis.call('HSET', k, 'job', '')
      redis.call('ZREM', P .. 'leases', j)
      redis.call('HSET', jk(j), 'state', 'Submitted', 'board', '')
      local needs = cjson.decode(st[5])
      local picked = try_place(needs, nil)
      if picked then placed = commit(j, needs, picked) else enqueue(j, needs, st[4]) end
    end
  end
  return {'stopped', placed}
"""

# A: board
LUA_FORGET = r"""
  local b = A[1]
  local k = bk(b)
  local st = redis.call('HMGET', k, 'heartbeat', 'job', 'device_type')
  if not st[3] then return {'missing'} end
  if st[2] and st[2] ~= '' then return {'busy'} end
  if st[1] and NOW - tonumber(st[1]) <= BOARD_TTL then return {'online'} end
  redis.call('SREM', P .. 'boards', b)
  redis.call('SREM', P .. 'type:' .. st[3] .. ':boards', b)
  redis.call('ZREM', P .. 'idle:' .. st[3], b)
  redis.call('DEL', k, k .. ':tags')
  return {'forgotten'}
"""

SCRIPTS = {"submit": LUA_SUBMIT, "submit_group": LUA_SUBMIT_GROUP, "claim": LUA_CLAIM, "finish": LUA_FINISH, "lose": LUA_LOSE,
           "redispatch": LUA_REDISPATCH, "cancel": LUA_CANCEL, "heartbeat": LUA_HEARTBEAT, "reap": LUA_REAP,
           "register": LUA_REGISTER, "release": LUA_RELEASE, "stop": LUA_STOP, "forget": LUA_FORGET}


# ---------------------------------------------------------------- Python side


class SubmitError(Exception):
    """The lab refuses the job (no board of its type, a duplicate id, ...)."""


@dataclass
class Assignment:
    """A job reserved on a board: its chain is to be sent to the board's queue."""

    job: str
    board: str
    attempt: int

    @classmethod
    def many(cls, rows: Iterable[Any]) -> list[Assignment]:
        return [cls(str(r[0]), str(r[1]), int(r[2])) for r in rows or []]


@dataclass
class Submitted:
    job_id: str  # a multinode submission: the group id
    state: str  # Scheduled or Submitted (queued)
    board: str | None = None
    assignments: list[Assignment] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # a group's sub-job ids


@dataclass
class LostJob:
    job: str
    state: str  # Incomplete/Canceled, or Submitted when it went back to the queue
    board: str
    host: str
    pid_file: str
    boot_id: str


def no_board_error(device_type: str, what: str) -> SubmitError:
    return SubmitError(f"no board of device type {device_type!r} is registered in this lab "
                       f"(`lava-dispatch devices` lists the boards); submit with --queue-anyway to queue "
                       f"the {what} until one registers")


def device_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def priority_value(value: str | int | None) -> int | None:
    """A priority given outside the job file, by the job file's own rule; None: the job's own."""
    from pipeline.job import job_priority

    if value is None:
        return None
    try:
        return job_priority(value)
    except ValueError as exc:
        raise SubmitError(str(exc)) from None


class Lab:
    """The scheduler's operations on one Redis database."""

    def __init__(self, r: Any = None, url: str | None = None):
        self.url = url or config.redis_url()
        self.r = r if r is not None else config.redis_client(self.url)
        self.lease_ms = int(config.lease_seconds() * 1000)
        self.board_ttl_ms = self.lease_ms
        self.keep_s = config.keep_seconds()
        self._scripts = {name: self.r.register_script(LUA_COMMON + body + LUA_TAIL) for name, body in SCRIPTS.items()}
        self._devices: dict[str, Device] = {}
        self._coordinator: Any = None

    # -- plumbing

    def call(self, name: str, *args: Any, retry: bool = True, token: str | None = None) -> Any:
        """Run a script; a retry after a lost answer returns the first answer (never runs it twice).

        Callers that retry for longer than the client does (a Redis restart)
        pass the same ``token`` to every try.
        """
        token = token or (uuid.uuid4().hex if retry else "")
        argv = [token, self.board_ttl_ms, self.lease_ms, self.keep_s, *["" if a is None else a for a in args]]
        return self._scripts[name](keys=[], args=argv)

    def device_for_sha(self, sha: str, text: str | None = None) -> Device:
        from pipeline.device import parse_device

        device = self._devices.get(sha)
        if device is None:
            if text is None:
                raise KeyError(sha)
            device = self._devices[sha] = parse_device(text, "device")
        return device

    def board_device(self, board: str) -> Device:
        sha = self.r.hget(board_key(board), "device_sha")
        if sha is None:
            raise SubmitError(f"board {board!r} is not registered")
        if sha not in self._devices:
            return self.device_for_sha(sha, self.r.hget(board_key(board), "device"))
        return self._devices[sha]

    # -- submitting

    def validate_for_type(self, job: Job, device_type: str, role: str | None = None) -> list[str]:
        """Build the job's pipeline on each distinct device config of the type's boards; the problems found."""
        from pipeline.builder import build_pipeline
        from pipeline.errors import ProblemList

        boards = sorted(self.r.smembers(f"{PREFIX}type:{device_type}:boards"))
        seen: set[str] = set()
        problems: list[str] = []
        pipe = self.r.pipeline(transaction=False)
        for board in boards:
            pipe.hmget(board_key(board), "device_sha")
        for board, (sha,) in zip(boards, pipe.execute()):
            if not sha or sha in seen:
                continue
            seen.add(sha)
            try:
                device = self.board_device(board)
                build_pipeline(job, device, role)
            except ProblemList as exc:
                problems += [f"{p} (on board {board})" if len(seen) > 1 else p for p in exc.problems]
        return problems

    def submit(self, text: str, *, priority: str | int | None = None, queue_anyway: bool = False,
               submitter: str = "", dispatch: bool = True, job: Job | None = None, client_ref: str = "",
               job_id: str | None = None, visibility: str = "") -> Submitted:
        """Validate, record and place (or queue) a job under a new id. Raises ProblemList or SubmitError.

        ``client_ref`` (a ``celery call``'s task id) is only stored in the
        record; ``job_id``: an id this lab already assigned (``new_id``);
        ``visibility``: ``public`` or ``personal`` (the lab server's reading of the job's ``visibility:``).
        """
        from pipeline.errors import ProblemList
        from pipeline.parser import parse_job

        self.reap()
        prio = priority_value(priority)
        job = job or parse_job(text)
        if job.multinode:
            return self.submit_group(text, job, priority=prio, queue_anyway=queue_anyway, submitter=submitter,
                                     dispatch=dispatch, client_ref=client_ref, group_id=job_id, visibility=visibility)
        device_type = job.header.device_type or ""
        problems = self.validate_for_type(job, device_type)
        if problems:
            raise ProblemList(problems)
        job_id = require_job_id(job_id) if job_id else new_id(self.r)
        if prio is None:
            prio = job.header.priority
        needs = [{"job": job_id, "device_type": device_type, "tags": list(job.header.tags)}]
        fields = {"id": job_id, "name": job.name, "device_type": device_type, "tags": json.dumps(job.header.tags),
                  "definition": text, "submitter": submitter, "timeout": job.header.timeouts.job,
                  "client_ref": client_ref, "visibility": visibility}
        answer = self.call("submit", job_id, json.dumps(fields), json.dumps(needs), prio, int(queue_anyway))
        kind = answer[0]
        if kind == "exists":
            raise SubmitError(f"a job with id {job_id} already exists")
        if kind == "noboard":
            raise no_board_error(answer[1], "job")
        assignments = Assignment.many(answer[1])
        if dispatch and assignments:
            self.dispatch(assignments, jobs={job_id: job})
        board = next((a.board for a in assignments if a.job == job_id), None)
        return Submitted(job_id, "Scheduled" if board else "Submitted", board, assignments)

    def submit_group(self, text: str, job: Job, *, priority: int | None, queue_anyway: bool, submitter: str,
                     dispatch: bool, client_ref: str = "", group_id: str | None = None,
                     visibility: str = "") -> Submitted:
        """A multinode job: one sub-job per member (role x count), placed all together or queued together.

        Every board of the group is reserved in one script before any sub-job
        starts, so two groups can never each hold half of the boards they need.
        """
        from pipeline.errors import ProblemList
        from pipeline.multinode_local import members_of

        roles = job.multinode.roles
        problems = []
        for role, spec in roles.items():
            problems += [f"{p} (role {role})" for p in self.validate_for_type(job, spec.device_type, role)]
        if problems:
            raise ProblemList(problems)
        group_id = require_group_id(group_id) if group_id else new_id(self.r)
        prio = job.header.priority if priority is None else priority
        members = members_of(job)
        needs, fields, sub_jobs = [], {}, {}
        for index, (member, role) in enumerate(members.items()):
            sub_job = sub_jobs[member] = member_id(group_id, index)
            spec = roles[role]
            needs.append({"job": sub_job, "device_type": spec.device_type, "tags": list(spec.tags)})
            fields[sub_job] = {"id": sub_job, "name": f"{job.name} [{member}]", "device_type": spec.device_type,
                               "tags": json.dumps(spec.tags), "definition": text, "submitter": submitter,
                               "timeout": job.header.timeouts.job, "role": role, "member": member,
                               "client_ref": client_ref, "visibility": visibility}
        group_fields = {"id": group_id, "name": job.name, "submitter": submitter, "client_ref": client_ref,
                        "members": json.dumps({sub_jobs[m]: r for m, r in members.items()})}
        self.coordinator().create_group(group_id, members)
        answer = self.call("submit_group", group_id, json.dumps(group_fields), json.dumps(needs), prio,
                           int(queue_anyway), json.dumps(fields))
        if answer[0] == "exists":
            raise SubmitError(f"a group with id {group_id} already exists")
        if answer[0] == "noboard":
            self.coordinator().end_group(group_id)
            raise no_board_error(answer[1], "group")
        assignments = Assignment.many(answer[1])
        if dispatch and assignments:
            self.dispatch(assignments, jobs={a.job: job for a in assignments})
        return Submitted(group_id, "Scheduled" if assignments else "Submitted", None, assignments,
                         members=[need["job"] for need in needs])

    def coordinator(self) -> Any:
        """The Multinode coordinator of this lab (the same Redis)."""
        from coordinator import RedisCoordinator

        if self._coordinator is None:
            self._coordinator = RedisCoordinator(self.url, group_ttl=max(self.keep_s, 3600),
                                                 end_ttl=config.group_end_seconds())
        return self._coordinator

    def group_members(self, group_id: str) -> dict[str, str]:
        """sub-job id -> role of a group's members ({} if ``group_id`` is not a group)."""
        if not is_group_id(group_id):
            return {}
        raw = self.r.hget(group_key(group_id), "members")
        return json.loads(raw) if raw else {}

    def end_group_of(self, job_id: str) -> None:
        group = self.r.hget(job_key(job_id), "group")
        if group:
            self.end_group_if_done(group)

    def end_group_if_done(self, group_id: str) -> bool:
        """Once every sub-job of a group has ended, end its coordinator group (its keys then expire)."""
        members = self.group_members(group_id)
        states = [self.r.hget(job_key(job), "state") for job in members]
        if not members or any(state not in FINAL_STATES for state in states):
            return False
        self.coordinator().end_group(group_id)
        self.r.hset(group_key(group_id), "state", "Ended")
        self.r.expire(group_key(group_id), self.keep_s)
        return True

    # -- chains

    def pipeline_names(self, job: Job, board: str, role: str | None = None) -> list[str]:
        from pipeline.builder import build_pipeline

        return [a.name for a in build_pipeline(job, self.board_device(board), role).pipeline.actions]

    def dispatch(self, assignments: Iterable[Assignment], jobs: dict[str, Job] | None = None,
                 first_step: int = 0) -> None:
        """Send each reserved job's chain to its board's queue: start, one task per action, finalize."""
        from pipeline.errors import ProblemList
        from pipeline.parser import parse_job

        for a in assignments:
            job = (jobs or {}).get(a.job)
            try:
                definition, role = self.r.hmget(job_key(a.job), "definition", "role")
                if job is None:
                    job = parse_job(definition or "")
                names = self.pipeline_names(job, a.board, role or None)
            except (ProblemList, SubmitError) as exc:
                # The board's device cannot run it after all (its config changed): the chain's start reports it.
                names = []
                self.r.hset(job_key(a.job), mapping={"dispatch_error": str(exc)})
            self.r.hset(job_key(a.job), mapping={"nactions": len(names), "actions": json.dumps(names)})
            send_chain(a.job, a.board, a.attempt, names, first_step, url=self.url)

    # -- board workers

    def register(self, board: str, device_text: str, device: Device, *, node: str, pid: int,
                 supervisor_pid: int, pid_file: str, force: bool = False) -> list[Any]:
        sha = device_sha(device_text)
        self._devices[sha] = device
        return self.call("register", board, device.device_type, json.dumps(list(device.tags)), node,
                         config.hostname(), pid, supervisor_pid, device_text, sha, pid_file, config.boot_id(),
                         int(force))

    def heartbeat(self, board: str, node: str, job: str | None) -> list[Any]:
        return self.call("heartbeat", board, node, require_job_id(job) if job else "", retry=False)

    def release(self, board: str, token: str | None = None) -> list[Assignment]:
        return Assignment.many(self.call("release", board, token=token)[1])

    def claim(self, job: str, board: str, attempt: int, step: int, name: str, node: str, pid: int,
              token: str | None = None) -> tuple[str, str]:
        """Claim step ``step`` of the job's attempt: ('ok', state) once; duplicate/stale/final otherwise."""
        kind, state = self.call("claim", require_job_id(job), board, attempt, step, name, node, pid, config.hostname(),
                                token=token)
        return kind, state

    def finish(self, job: str, board: str, attempt: int, state: str, error_type: str | None, error: str | None,
               durations: list[dict[str, Any]] | None, results: list[dict[str, Any]] | None,
               audit: dict[str, Any] | None = None, token: str | None = None) -> tuple[str, list[Assignment]]:
        """Store a job's end, free the board and reserve it for the best queued job (returned)."""
        final, placed = self.call("finish", require_job_id(job), board, attempt, state, error_type or "",
                                  error or "",
                                  json.dumps(durations) if durations is not None else "",
                                  json.dumps(results) if results is not None else "",
                                  json.dumps(audit) if audit else "", token=token)
        return final, Assignment.many(placed)

    def lose(self, job: str, board: str, reason: str, only_started: bool = True,
             error_type: str = "Infrastructure", token: str | None = None) -> str:
        """End an active job of ``board`` whose worker is gone (Incomplete, or Canceled if it was canceling)."""
        state = self.call("lose", require_job_id(job), board, reason, int(only_started), error_type, token=token)[0]
        self.end_group_of(job)
        return state

    def redispatch(self, job: str, board: str, token: str | None = None) -> int | None:
        kind, attempt = self.call("redispatch", require_job_id(job), board, token=token)
        return int(attempt) if kind == "ok" else None

    def stop(self, board: str, node: str) -> list[Assignment]:
        return Assignment.many(self.call("stop", board, node)[1])

    def forget(self, board: str) -> str:
        return self.call("forget", board)[0]

    # -- users

    def cancel(self, job: str) -> tuple[str, str]:
        state, board = self.call("cancel", require_job_id(job))
        return state, board

    def reap(self, on_lost: Callable[[LostJob], None] | None = None) -> list[LostJob]:
        """Mark the jobs whose worker stopped renewing their lease; requeue those that never started."""
        if not self.r.zcard(f"{PREFIX}leases"):
            return []
        lost_rows, placed = self.call("reap")
        lost = [LostJob(*[str(x) for x in row]) for row in lost_rows or []]
        for item in lost:
            if on_lost:
                on_lost(item)
            self.end_group_of(item.job)
        if placed:
            self.dispatch(Assignment.many(placed))
        return lost

    def boards(self) -> list[dict[str, Any]]:
        """Every registered board with its state: idle, busy (reserved or running a job) or offline."""
        names = sorted(self.r.smembers(f"{PREFIX}boards"))
        now_ms = redis_now_ms(self.r)
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(board_key(name), "device_type", "tags", "node", "host", "pid", "heartbeat", "job", "stopped")
        out = []
        for name, row in zip(names, pipe.execute()):
            device_type, tags, node, host, pid, heartbeat, job, stopped = row
            age = (now_ms - int(heartbeat)) / 1000 if heartbeat and heartbeat != "0" else None
            live = age is not None and age * 1000 <= self.board_ttl_ms and stopped != "1"
            state = "offline" if not live else ("busy" if job else "idle")
            out.append({"board": name, "device_type": device_type, "state": state, "job": job or None,
                        "tags": json.loads(tags or "[]"), "worker": node, "host": host, "pid": int(pid or 0),
                        "heartbeat_age": None if age is None else round(age, 1)})
        return out

    def queue(self, device_type: str | None = None, limit: int = 100) -> list[str]:
        key = f"{PREFIX}pending:{device_type}" if device_type else f"{PREFIX}pending"
        return list(self.r.zrange(key, 0, limit - 1))


def redis_now_ms(r: Any) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def send_chain(job_id: str, board: str, attempt: int, names: list[str], first_step: int = 0,
               url: str | None = None) -> None:
    """start -> one task per top-level action -> finalize, every task on ``board.<board>``.

    Step numbers: 0 is start, 1..n the actions, n + 1 finalize. ``first_step``
    resends the rest of a chain whose next message was lost; a step that was
    already claimed does nothing when it arrives twice.
    """
    from celery import chain

    from tasks.app import app_for

    app = app_for(url)
    # ignore_result: no result-backend subscription per message (the job record is the result).
    options = {"immutable": True, "queue": board_queue(board), "ignore_result": True}
    steps = [app.signature("tasks.start", args=(job_id, board, attempt, len(names)), **options)]
    for index, name in enumerate(names):
        steps.append(app.signature("tasks.action", args=(job_id, board, attempt, index, name), **options))
    steps.append(app.signature("tasks.finalize", args=(job_id, board, attempt, len(names)), **options))
    steps = steps[first_step:]
    if len(steps) == 1:
        steps[0].apply_async()
    else:
        chain(*steps).apply_async()
