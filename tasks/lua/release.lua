-- The board is free: it becomes idle and takes the best queued requests it serves.
-- KEYS: lab pending, leases; board A[1]; the board's device type A[2] (when given)
-- A: board, the board's device type ('' if unknown)
-- Discovers: as finish.lua.
-- Returns {'idle', {{job, board, attempt}, ...}}.
take_lab('pending', 'leases')
take_board(A[1])
if A[2] ~= '' then take_type(A[2]) end
keys_taken()
return {'idle', release(A[1])}
