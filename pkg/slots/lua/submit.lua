-- submit: create a task and run its plan phase in the best idle slot, or
-- queue it. Idempotent by id: a repeat returns the task's current state.
-- KEYS[1] cfg
-- ARGV[1] task id, ARGV[2] type, ARGV[3] payload, ARGV[4] who submitted ("" unknown)
-- Returns {"created"|"exists", state, epoch, pod, slot}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local id, ttype = ARGV[1], ARGV[2]
local cur = redis.call('HMGET', tkey(id), 'type', 'st', 'ep', 'pod', 'slot')
if cur[1] then
  if cur[1] ~= ttype then return fail('taskconflict', 'task ' .. id .. ' is a ' .. cur[1]) end
  return {'exists', cur[2], cur[3] or '', cur[4] or '', cur[5] or ''}
end
if c.del then return fail('deleting', 'pool is being deleted') end
local order = order_of(c, ttype)
if #order == 0 then return fail('notype', ttype) end
local now = now_ms()
-- Check the limit only when the task would have to wait.
local m, cls = free_slot(order)
if not m then
  local queued = 0
  for _, t in ipairs(split(c.types)) do queued = queued + redis.call('ZCARD', K .. KEY_Q .. t) end
  if queued >= c.qlim then return fail('full', queued .. ' tasks queued, limit ' .. c.qlim) end
end
local qs = redis.call('HINCRBY', N, 'qseq', '1')
-- The new record and its first history entry go with the assignment's (or
-- the queue's) in one HSET and one RPUSH.
local pre = {
  fields = {'id', id, 'type', ttype, 'payload', ARGV[3], 'qs', qs, 'created', now, 'attempt', '0', 'sub', ARGV[4]},
  hist = hist_entry(now, 'submitted', ttype),
}
if m then
  local ep, pod, slot = take_slot(c, now, id, ttype, m, cls, pre)
  return {'created', 'running', ep, pod, slot}
end
enqueue(c, now, id, ttype, qs, pre)
return {'created', 'queued', '', '', ''}
