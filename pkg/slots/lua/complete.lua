-- complete: record the outcome of a started phase. A successful plan of a
-- plan_and_apply keeps its slot reserved for the apply; every other outcome
-- frees the slot and dispatches queued work to it. A repeat with an epoch
-- already recorded returns that epoch's first outcome (each phase's result
-- is kept under "r:<epoch>"); any other epoch is stale.
-- A cancel requested while the phase ran wins over a successful plan: the
-- task ends cancelled instead of reserving its slot for an apply nobody wants.
-- KEYS[1] cfg
-- ARGV[1] task, ARGV[2] epoch, ARGV[3] outcome (success|failure|timeout|cancelled),
-- ARGV[4] exit code, ARGV[5] reason, ARGV[6] output tail, ARGV[7] the
-- workspace digest when a plan ended (optional; kept as "wsd" for the apply)
-- Returns the task's resulting state.
local c = load_cfg()
if c == nil then return fail('nopool') end
local id, ep, outcome = ARGV[1], ARGV[2], ARGV[3]
-- The fields this script reads, not the whole record (payload, output).
local v = redis.call('HMGET', tkey(id), 'type', 'r:' .. ep, 'st', 'ep', 'started', 'slot', 'phase', 'sat', 'pod', 'cx', 'cxby')
if not v[1] then return fail('notask', id) end
if v[2] then return v[2] end
local t = {type = v[1], st = v[3], ep = v[4], started = v[5], slot = v[6], phase = v[7], sat = v[8], pod = v[9],
  cx = v[10] or nil, cxby = v[11] or nil}
if not (t.st == 'running' and t.ep == ep) then return fail('stale', 'task ' .. id .. ' epoch ' .. ep) end
if t.started ~= '1' then return fail('notstarted', 'task ' .. id) end
local now = now_ms()
count('run:' .. class_of(c, t.slot), '-1')
observe('pd:' .. t.type .. ':' .. t.phase, PD_BOUNDS, now - (tonumber(t.sat) or now))
-- Written with the outcome's fields, in one HSET.
local fields = {'exit', ARGV[4], 'out', ARGV[6]}
local plan_of_pa = t.type == 'plan_and_apply' and t.phase == 'plan'
if t.phase == 'plan' and ARGV[7] and ARGV[7] ~= '' then
  fields[#fields + 1] = 'wsd'
  fields[#fields + 1] = ARGV[7]
end
local st, reason = 'succeeded', ''
if outcome == 'success' and plan_of_pa and t.cx == '1' then
  st = 'cancelled'
elseif outcome == 'success' and plan_of_pa and redis.call('HGET', pkey(t.pod), 'st') == 'lost' then
  -- The plan finished, but its pod was declared lost: the apply could not
  -- run where the plan's files are.
  st, reason = 'failed', 'reservation-lost'
  -- a reservation it could not keep: approve answers reservation lost
  fields[#fields + 1] = 'rs'
  fields[#fields + 1] = '1'
elseif outcome == 'success' and plan_of_pa then
  local deadline = now + c.rttl
  for _, f in ipairs({'st', 'reserved', 'upd', now, 'rdl', deadline, 'rs', '1', 'r:' .. ep, 'reserved'}) do
    fields[#fields + 1] = f
  end
  redis.call('HSET', tkey(id), unpack(fields))
  redis.call('ZADD', K .. KEY_RESV, deadline, id)
  hist(id, now, 'reserved', t.pod .. '#' .. t.slot .. ' until ' .. deadline)
  emit(c, now, 'task', id, 'st', 'reserved', 'pod', t.pod, 'slot', t.slot, 'ep', ep)
  return 'reserved'
elseif outcome == 'failure' then
  st, reason = 'failed', (ARGV[5] ~= '' and ARGV[5]) or 'exit-code'
elseif outcome == 'timeout' then
  st, reason = 'failed', 'timeout'
elseif outcome == 'cancelled' then
  st, reason = 'cancelled', ARGV[5]
end
fields[#fields + 1] = 'r:' .. ep
fields[#fields + 1] = st
finish(c, now, id, st, reason, st == 'cancelled' and t.cxby or nil, nil, t.type, fields)
release(c, now, t.pod, t.slot)
return st
