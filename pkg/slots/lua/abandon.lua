-- abandon: a deleting pool's deletion timed out while this pod still works.
-- Its running phases and its reservation end failed with pool-deleted (what
-- its agent still runs is no longer recorded: a heartbeat tells it to stop)
-- and its slots are freed, so the janitor drains and deletes it like any
-- idle pod. Only on a deleting pool.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid
-- Returns the ids of the tasks it ended.
local c = load_cfg()
if c == nil then return fail('nopool') end
if not c.del then return fail('podstate', 'pool is not being deleted') end
local pod = ARGV[1]
local ph, code, why = load_pod(pod, ARGV[2])
if ph == nil then return fail(code, why) end
local now = now_ms()
local ended = {}
for i = 0, c.nslots - 1 do
  local s = ph['s' .. i] or ''
  if s ~= '' then
    vacate(pod, i)
    if s ~= '!' then
      local st = redis.call('HGET', tkey(s), 'st')
      if st == 'reserved' then redis.call('ZREM', K .. KEY_RESV, s) end
      if st == 'running' then count('run:' .. class_of(c, i), '-1') end
      if st == 'reserved' or st == 'running' then
        finish(c, now, s, 'failed', 'pool-deleted')
        ended[#ended + 1] = s
      end
    end
  end
end
-- Its idle slots must not take work: a deleting pool's pods are cordoned
-- by the janitor first, but an active one is taken out of the idle sets too.
if ph.st == 'active' then
  drop_idle(c, pod, ph)
  set_state(pod, 'active', 'cordoned', 0)
  redis.call('HSET', pkey(pod), 'cby', 'janitor')
end
if #ended > 0 then emit(c, now, 'pod', pod, 'st', 'abandoned', 'tasks', #ended) else changed() end
return ended
