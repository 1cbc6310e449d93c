-- expect_pod: the janitor records a pod it created, before the agent registers.
-- A stopping pod's record (a terminating pod whose record Redis lost) is
-- cordoned on its agent's behalf: the agent may register again with the
-- work it still runs, and never gets new work.
-- KEYS[1] cfg
-- ARGV[1] pod name, ARGV[2] pod uid, ARGV[3] "1" when the pod is stopping
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid = ARGV[1], ARGV[2]
if redis.call('ZSCORE', K .. KEY_TOMB, uid) then return fail('tombstoned', 'pod ' .. pod .. ' uid ' .. uid) end
local ph = redis.call('HMGET', pkey(pod), 'uid', 'st')
if ph[1] then
  if ph[1] == uid then return ph[2] end
  return fail('conflict', 'pod ' .. pod .. ' is held by uid ' .. ph[1])
end
local now = now_ms()
local seq = redis.call('HINCRBY', N, 'podseq', '1')
local fields = {'uid', uid, 'st', 'expected', 'seq', seq, 'busy', 0, 'created', now}
if ARGV[3] == '1' then fields[#fields + 1] = 'cby'; fields[#fields + 1] = 'agent' end
for i = 0, c.nslots - 1 do fields[#fields + 1] = 's' .. i; fields[#fields + 1] = '' end
redis.call('HSET', pkey(pod), unpack(fields))
redis.call('ZADD', K .. KEY_PODS, seq, pod)
count('pods:expected', '1')
emit(c, now, 'pod', pod, 'st', 'expected', 'uid', uid)
return 'expected'
