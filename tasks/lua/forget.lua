-- Remove an offline, idle board from the lab for good.
-- KEYS: lab boards, live; board A[1] (record, tags); the board's device type A[2] (when given)
-- A: board, the board's device type ('' if unknown)
-- Discovers: the board's device type (when not given).
-- Returns {'forgotten'}, {'missing'}, {'busy'} or {'online'}.
take_lab('boards', 'live')
local b = A[1]
take_board(b)
if A[2] ~= '' then take_type(A[2]) end
keys_taken()
local k = board(b)
local st = redis.call('HMGET', k.record, 'heartbeat', 'job', 'device_type', 'tagset')
if not st[3] then return {'missing'} end
if st[2] and st[2] ~= '' then return {'busy'} end
if st[1] and NOW - tonumber(st[1]) <= BOARD_TTL then return {'online'} end
redis.call('SREM', L.boards, b)
redis.call('SREM', dtype(st[3]).boards, b)
unavailable(b)
if st[4] then leave_bucket(st[3], st[4]) end
redis.call('ZREM', L.live, b)
redis.call('DEL', k.record, k.tags, k.health)
return {'forgotten'}
