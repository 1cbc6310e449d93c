-- approve: run the apply of a reserved plan_and_apply in the slot that ran
-- its plan, also when that pod is cordoned.
-- Idempotent per approver: the same approver approving again (a client
-- retry after a lost reply; go-redis itself resends a command whose
-- connection broke) gets the first approval's answer, not a refusal.
-- KEYS[1] cfg
-- ARGV[1] task, ARGV[2] who approved, ARGV[3] their note
-- Returns {epoch, pod, slot}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local id = ARGV[1]
local t, reply = load_reserved(id, function(t)
  if t.aby == ARGV[2] and t.aep then return {t.aep, t.pod, t.slot} end
end)
if t == nil then return reply end
local now = now_ms()
redis.call('ZREM', K .. KEY_RESV, id)
local ep = c.gen .. '-' .. redis.call('HINCRBY', N, 'seq', '1')
redis.call('HSET', tkey(id), 'st', 'running', 'phase', 'apply', 'ep', ep, 'started', '0', 'attempt', 0,
  'upd', now, 'by', ARGV[2], 'note', ARGV[3], 'rdl', '', 'rs', '0', 'aby', ARGV[2], 'aep', ep)
count('run:' .. class_of(c, t.slot), '1')
redis.call('RPUSH', K .. KEY_INBOX .. t.pod, 'a|' .. id .. '|' .. ep)
hist(id, now, 'approved', decided(ARGV[2], ARGV[3]))
hist(id, now, 'assigned', 'apply ' .. t.pod .. '#' .. t.slot .. ' epoch ' .. ep)
emit(c, now, 'task', id, 'st', 'running', 'phase', 'apply', 'pod', t.pod, 'slot', t.slot, 'ep', ep, 'by', ARGV[2])
return {ep, t.pod, t.slot}
