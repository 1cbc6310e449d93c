-- handback: a stopping agent returns the phases assigned to it that it has
-- not started; they are requeued in their old place without spending an
-- attempt. Call after cordon so they do not come straight back.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid
-- Returns the task ids handed back.
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod = ARGV[1]
local ph, code, why = load_pod(pod, ARGV[2])
if ph == nil then return fail(code, why) end
local now = now_ms()
local out, vacated = {}, {}
for i = 0, c.nslots - 1 do
  local s = ph['s' .. i] or ''
  if s ~= '' and s ~= '!' then
    local t = redis.call('HMGET', tkey(s), 'st', 'started', 'phase')
    if t[1] == 'running' and t[2] ~= '1' and t[3] == 'plan' then
      vacate(pod, i)
      out[#out + 1] = s
      vacated[#vacated + 1] = i
    end
  end
end
lose_all(c, now, out, false)
if ph.st == 'active' then
  for _, i in ipairs(vacated) do fill_slot(c, now, pod, i) end
end
return out
