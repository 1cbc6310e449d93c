-- cordon: a pod takes no new work; running phases continue, a reservation
-- may still be approved and its apply runs here.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid ("" for any)
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod = ARGV[1]
local ph = hgetall(pkey(pod))
if ph == nil then return fail('nopod', 'pod ' .. pod) end
if ARGV[2] ~= '' and ph.uid ~= ARGV[2] then return fail('conflict', 'pod ' .. pod .. ' is held by uid ' .. ph.uid) end
if ph.st == 'cordoned' then return 'cordoned' end
if ph.st ~= 'active' then return fail('podstate', 'pod ' .. pod .. ' is ' .. ph.st) end
drop_idle(c, pod, ph)
set_state(pod, 'active', 'cordoned', tonumber(ph.busy))
emit(c, now_ms(), 'pod', pod, 'st', 'cordoned')
return 'cordoned'
