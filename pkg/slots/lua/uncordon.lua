-- uncordon: a cordoned pod takes work again; its idle slots get queued work
-- in the same script. A pod its own agent cordoned (it is stopping) stays
-- cordoned: work given to it would die with it.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid ("" for any)
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod = ARGV[1]
local ph, code, why = load_pod(pod, ARGV[2])
if ph == nil then return fail(code, why) end
if ph.st == 'active' then return 'active' end
if ph.st ~= 'cordoned' then return fail('podstate', 'pod ' .. pod .. ' is ' .. ph.st) end
if ph.cby == 'agent' then return fail('selfcordoned', 'pod ' .. pod .. ' was cordoned by its stopping agent') end
local now = now_ms()
set_state(pod, 'cordoned', 'active', tonumber(ph.busy))
redis.call('HDEL', pkey(pod), 'cby')
emit(c, now, 'pod', pod, 'st', 'active')
fill_idle_slots(c, now, pod, ph)
return 'active'
