-- drain: atomically prove a pod idle and take it out of service for good.
-- Succeeds only if no slot is running, reserved or busy with orphan work;
-- works on expected pods too, so a registration racing the drain loses.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid ("" for any)
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod = ARGV[1]
local ph, code, why = load_pod(pod, ARGV[2])
if ph == nil then return fail(code, why) end
if ph.st == 'draining' then return 'draining' end
if ph.st ~= 'expected' and ph.st ~= 'active' and ph.st ~= 'cordoned' then
  return fail('podstate', 'pod ' .. pod .. ' is ' .. ph.st)
end
if tonumber(ph.busy) ~= 0 then return fail('busy', 'pod ' .. pod .. ' has ' .. ph.busy .. ' busy slots') end
if ph.st == 'active' then drop_idle(c, pod, ph) end
set_state(pod, ph.st, 'draining', 0)
emit(c, now_ms(), 'pod', pod, 'st', 'draining')
return 'draining'
