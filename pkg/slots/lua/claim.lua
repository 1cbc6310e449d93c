-- claim: the agent moved "a|<task>|<epoch>" from its inbox to its processing
-- list; start the phase if the entry is still current and drop the entry. A
-- stale entry (cancelled, handed back, reassigned) returns nil. If this
-- script never runs (Redis unreachable), the entry stays in the processing
-- list and the next take claims it again; if it ran but its reply was lost,
-- the store retries the same entry and gets the same assignment back.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid, ARGV[3] task, ARGV[4] epoch, ARGV[5] the entry,
-- ARGV[6] the first heartbeat report number that includes the phase (hbs;
-- 0 when the agent does not number its reports)
-- Returns {type, phase, slot, attempt, payload, left, workspace digest}
-- (the digest its plan's agent recorded, "" when none), or {"", left} for a
-- stale entry; left is how many entries the processing list still holds
-- (an entry whose move reply was lost: the caller looks at the list again).
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid, id, ep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- Not load_pod: a claim by another incarnation answers nopod, not conflict,
-- and a claim, once per phase, reads two fields rather than the whole record.
local ph = redis.call('HMGET', pkey(pod), 'uid', 'st')
if ph[1] ~= uid then
  if redis.call('ZSCORE', K .. KEY_TOMB, uid) then return fail('tombstoned', 'pod ' .. pod .. ' uid ' .. uid) end
  return fail('nopod', 'pod ' .. pod .. ' uid ' .. uid)
end
if ph[2] == 'lost' then return fail('lost', 'pod ' .. pod) end
redis.call('LREM', K .. KEY_PROC .. pod, 1, ARGV[5])
local left = redis.call('LLEN', K .. KEY_PROC .. pod)
local t = redis.call('HMGET', tkey(id), 'st', 'ep', 'started', 'pod', 'type', 'phase', 'slot', 'attempt', 'payload', 'wsd')
if t[1] == 'running' and t[2] == ep and t[3] == '1' and t[4] == pod then
  -- The pod's one reader retrying a claim that landed but whose reply was
  -- lost: the same assignment again, no second start.
  return {t[5], t[6], t[7], tonumber(t[8]), t[9], left, t[10] or ''}
end
if t[1] ~= 'running' or t[2] ~= ep or t[3] ~= '0' or t[4] ~= pod then return {'', left} end
local now = now_ms()
local attempt = (tonumber(t[8]) or 0) + 1
redis.call('HSET', tkey(id), 'attempt', attempt, 'started', '1', 'upd', now, 'sat', now, 'hbs', tonumber(ARGV[6]) or 0)
-- The pod's task count (the janitor recycles pods after spec.recycle.afterTasks):
-- a task counts once, when its plan starts; its apply runs on the same pod.
if t[6] == 'plan' then redis.call('HINCRBY', pkey(pod), 'tasks', '1') end
hist(id, now, 'started', t[6] .. ' attempt ' .. attempt)
emit(c, now, 'task', id, 'st', 'started', 'phase', t[6], 'pod', pod, 'slot', t[7], 'ep', ep)
return {t[5], t[6], t[7], attempt, t[9], left, t[10] or ''}
