-- The start of every scheduler script, after the generated constants (S, GS, ERR, K: tasks/scripts.py).
-- ARGV[1] board heartbeat TTL (ms), ARGV[2] lease (ms), ARGV[3] how long a finished job's keys stay (s);
-- A = ARGV[4..]: the script's own arguments.
local BOARD_TTL = tonumber(ARGV[1])
local LEASE = tonumber(ARGV[2])
local KEEP = tonumber(ARGV[3])
local A = {}
for i = 4, #ARGV do A[#A + 1] = ARGV[i] end
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local ACTIVE = {[S.Scheduled] = true, [S.Running] = true, [S.Canceling] = true}

local function fmt(n) return string.format('%.0f', n) end

-- Keys. A script reads the keys its caller named from KEYS, in order: `take_lab(...)` the lab-wide ones
-- it uses, then `take_job(id)`, `take_group(id)`, `take_board(name)`, `take_type(name)` (each declares
-- that entity's keys). The entities a script only finds while it runs (a board in an idle set, a job in
-- a queue, a board's former device type) are "discovered": their keys come from K, the same templates.
-- job(j), group(g), board(b), dtype(t) give an entity's keys either way.
local L = {}
local JOBS, GROUPS, BOARDS, TYPES = {}, {}, {}, {}
local NEXT_KEY = 1

local function take_lab(...)
  for _, name in ipairs({...}) do
    if K.LAB[name] ~= KEYS[NEXT_KEY] then error('KEYS[' .. NEXT_KEY .. '] is not the lab key ' .. name) end
    L[name] = KEYS[NEXT_KEY]
    NEXT_KEY = NEXT_KEY + 1
  end
end
local function take(cache, build, read, id)
  local keys, after = read(NEXT_KEY)
  for part, name in pairs(build(id)) do
    if keys[part] ~= name then error('KEYS[' .. NEXT_KEY .. '..] are not the keys of ' .. id) end
  end
  cache[id], NEXT_KEY = keys, after
end
local function take_job(j) take(JOBS, K.job, K.job_at, j) end
local function take_group(g) take(GROUPS, K.group, K.group_at, g) end
local function take_board(b) take(BOARDS, K.board, K.board_at, b) end
local function take_type(t) take(TYPES, K.type, K.type_at, t) end
-- Every key the caller named was taken (the last one of a script answered once is its answer's key, DONE).
local function keys_taken()
  if NEXT_KEY ~= #KEYS + 1 - ONCE then
    error('the script was given ' .. #KEYS .. ' keys, it took ' .. (NEXT_KEY - 1))
  end
end

local function known(cache, build, id)
  local keys = cache[id]
  if not keys then keys = build(id); cache[id] = keys end
  return keys
end
local function job(j) return known(JOBS, K.job, j) end
local function group(g) return known(GROUPS, K.group, g) end
local function board(b) return known(BOARDS, K.board, b) end
local function dtype(t) return known(TYPES, K.type, t) end

-- The group of a queued request ('group:<id>'), or nil for a single job's request.
local function group_of_request(req)
  if string.sub(req, 1, #K.GROUP_REQUEST) == K.GROUP_REQUEST then return string.sub(req, #K.GROUP_REQUEST + 1) end
  return nil
end

-- A decoded JSON object as HSET's list of fields and values.
local function fields_of(object)
  local out = {}
  for key, value in pairs(object) do out[#out + 1] = key; out[#out + 1] = tostring(value) end
  return out
end
