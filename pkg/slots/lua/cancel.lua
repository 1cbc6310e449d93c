-- cancel: a queued, assigned-but-unstarted or reserved task ends now; a
-- started phase is flagged and its agent told (inbox "c|<task>|<epoch>") to
-- stop the executor, which then completes it as cancelled.
-- KEYS[1] cfg
-- ARGV[1] task, ARGV[2] who, ARGV[3] their note
-- Returns the state: "cancelled" or "cancelling".
local c = load_cfg()
if c == nil then return fail('nopool') end
local id, by, note = ARGV[1], ARGV[2], ARGV[3]
local t = hgetall(tkey(id))
if t == nil then return fail('notask', id) end
local now = now_ms()
if t.st == 'queued' then
  dequeue(id, t.type)
  redis.call('HSET', tkey(id), 'note', note)
  finish(c, now, id, 'cancelled', '', by, decided(by, note))
  return 'cancelled'
elseif t.st == 'reserved' then
  redis.call('HSET', tkey(id), 'rs', '0', 'note', note) -- ended by a decision, not lost
  end_reservation(c, now, id, t, 'cancelled', '', by, decided(by, note))
  return 'cancelled'
elseif t.st == 'running' and t.started ~= '1' then
  count('run:' .. class_of(c, t.slot), '-1')
  redis.call('HSET', tkey(id), 'note', note)
  finish(c, now, id, 'cancelled', '', by, decided(by, note))
  release(c, now, t.pod, t.slot)
  return 'cancelled'
elseif t.st == 'running' then
  if t.cx ~= '1' then
    redis.call('HSET', tkey(id), 'cx', '1', 'cxby', by, 'note', note)
    redis.call('RPUSH', K .. KEY_INBOX .. t.pod, 'c|' .. id .. '|' .. t.ep)
    hist(id, now, 'cancelling', decided(by, note))
    emit(c, now, 'task', id, 'st', 'cancelling', 'pod', t.pod, 'slot', t.slot, 'ep', t.ep)
  end
  return 'cancelling'
end
-- The same person cancelling again (a retry after a lost reply): answered
-- as the first cancel was.
if t.st == 'cancelled' and t.by == by then return 'cancelled' end
return fail('finished', 'task ' .. id .. ' is ' .. t.st)
