-- register_pod: an agent announces itself. Managed pools accept it only
-- against an expected record with the same uid (so a registration racing a
-- drain of that record loses); static pools create the record.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid, ARGV[3] comma list of slots still busy with work
-- Redis does not know (re-registration after Redis lost its data), ARGV[4]
-- "1" when the agent is stopping.
-- A stopping agent, or one whose record was written for a stopping pod,
-- registers straight into cordoned (owned by the agent): it finishes what it
-- runs and gets nothing new, not even for an instant.
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid = ARGV[1], ARGV[2]
if redis.call('ZSCORE', K .. KEY_TOMB, uid) then return fail('tombstoned', 'pod ' .. pod .. ' uid ' .. uid) end
local ph = hgetall(pkey(pod))
local now = now_ms()
if ph == nil then
  if c.managed == '1' then return fail('notexpected', 'pod ' .. pod .. ' uid ' .. uid) end
  local seq = redis.call('HINCRBY', N, 'podseq', '1')
  local fields = {'uid', uid, 'st', 'expected', 'seq', seq, 'busy', 0, 'created', now}
  for i = 0, c.nslots - 1 do fields[#fields + 1] = 's' .. i; fields[#fields + 1] = '' end
  redis.call('HSET', pkey(pod), unpack(fields))
  redis.call('ZADD', K .. KEY_PODS, seq, pod)
  count('pods:expected', '1')
  ph = {uid = uid, st = 'expected', busy = '0'}
elseif ph.uid ~= uid then
  return fail('conflict', 'pod ' .. pod .. ' is held by uid ' .. ph.uid)
elseif ph.st == 'active' and ARGV[4] == '1' then
  -- A retry of a registration that already succeeded, by an agent that
  -- started stopping meanwhile: cordon it now.
  drop_idle(c, pod, ph)
  set_state(pod, 'active', 'cordoned', tonumber(ph.busy))
  redis.call('HSET', pkey(pod), 'cby', 'agent')
  redis.call('ZADD', K .. KEY_HB, now + c.hbto, pod)
  emit(c, now, 'pod', pod, 'st', 'cordoned', 'by', 'agent')
  return 'cordoned'
elseif ph.st == 'active' or ph.st == 'cordoned' then
  -- A retry of a registration that already succeeded.
  if ARGV[4] == '1' and ph.cby ~= 'agent' then
    redis.call('HSET', pkey(pod), 'cby', 'agent')
    changed()
  end
  redis.call('ZADD', K .. KEY_HB, now + c.hbto, pod)
  return ph.st
elseif ph.st ~= 'expected' then
  return fail('podstate', 'pod ' .. pod .. ' is ' .. ph.st)
end
local to = 'active'
if ARGV[4] == '1' or ph.cby == 'agent' then to = 'cordoned' end
set_state(pod, 'expected', to, 0)
redis.call('HSET', pkey(pod), 'reg', now)
if to == 'cordoned' then redis.call('HSET', pkey(pod), 'cby', 'agent') end
redis.call('ZADD', K .. KEY_HB, now + c.hbto, pod)
local orphan = {}
for _, s in ipairs(split(ARGV[3])) do orphan[tonumber(s)] = true end
for i = 0, c.nslots - 1 do
  if orphan[i] then occupy(pod, i, '!') end
end
emit(c, now, 'pod', pod, 'st', to, 'uid', uid)
if to == 'cordoned' then return 'cordoned' end
fill_idle_slots(c, now, pod, hgetall(pkey(pod)))
return 'active'
