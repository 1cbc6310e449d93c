-- cordon: a pod takes no new work; running phases continue, a reservation
-- may still be approved and its apply runs here. A cordon has an owner
-- (cby): the janitor (scale-down, template change; it may lift it) or the
-- pod's own agent (it is stopping; nobody lifts that one). An agent's
-- cordon takes over a janitor's.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid ("" for any), ARGV[3] owner: janitor | agent
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod = ARGV[1]
local ph, code, why = load_pod(pod, ARGV[2])
if ph == nil then return fail(code, why) end
if ph.st == 'cordoned' then
  if ARGV[3] == 'agent' and ph.cby ~= 'agent' then
    redis.call('HSET', pkey(pod), 'cby', 'agent')
    changed()
  end
  return 'cordoned'
end
if ph.st ~= 'active' then return fail('podstate', 'pod ' .. pod .. ' is ' .. ph.st) end
drop_idle(c, pod, ph)
set_state(pod, 'active', 'cordoned', tonumber(ph.busy))
redis.call('HSET', pkey(pod), 'cby', ARGV[3])
emit(c, now_ms(), 'pod', pod, 'st', 'cordoned', 'by', ARGV[3])
return 'cordoned'
