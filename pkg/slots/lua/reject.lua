-- reject: end a reservation without applying; the slot is freed and gets
-- queued work in the same script. With ARGV[3] = "release" a stopping agent
-- gives the reservation up instead, and the task fails with ARGV[4] as reason.
-- A reject repeated by the same person (a retry after a lost reply) is
-- answered as the first one was.
-- KEYS[1] cfg
-- ARGV[1] task, ARGV[2] who, ARGV[3] "reject"|"release", ARGV[4] reason, ARGV[5] the
-- rejecter's note (their reason in words; ARGV[4] is a machine-readable code)
local c = load_cfg()
if c == nil then return fail('nopool') end
local id = ARGV[1]
local t, reply = load_reserved(id, function(t)
  if ARGV[3] == 'reject' and t.st == 'rejected' and t.by == ARGV[2] then return 'rejected' end
end)
if t == nil then return reply end
local now = now_ms()
if ARGV[3] == 'release' then
  end_reservation(c, now, id, t, 'failed', ARGV[4], ARGV[2])
  return 'failed'
end
redis.call('HSET', tkey(id), 'rs', '0', 'note', ARGV[5]) -- ended by a decision, not lost
end_reservation(c, now, id, t, 'rejected', '', ARGV[2], decided(ARGV[2], ARGV[5]))
return 'rejected'
