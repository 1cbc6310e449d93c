-- heartbeat: an agent proves it is alive and reports the phases it really
-- runs (or holds an unrecorded result for); Redis is reconciled against it.
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid, ARGV[3..] "<slot>|<task>|<epoch>" per running phase
-- Returns {pod state, "<task>|<epoch>" the agent must stop...}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid = ARGV[1], ARGV[2]
local ph = hgetall(pkey(pod))
if ph == nil or ph.uid ~= uid then
  if redis.call('ZSCORE', K .. 'tomb', uid) then return fail('tombstoned', 'pod ' .. pod .. ' uid ' .. uid) end
  if ph == nil then return fail('nopod', 'pod ' .. pod) end
  return fail('conflict', 'pod ' .. pod .. ' is held by uid ' .. ph.uid)
end
if ph.st == 'lost' then return fail('lost', 'pod ' .. pod) end
if ph.st == 'expected' then return fail('podstate', 'pod ' .. pod .. ' has not registered') end
local now = now_ms()
redis.call('ZADD', K .. 'hb', now + c.hbto, pod)
local reports = {}
for i = 3, #ARGV do
  local slot, id, ep = string.match(ARGV[i], '^(%d+)|([^|]+)|(.*)$')
  if slot then reports[tonumber(slot)] = {id = id, ep = ep} end
end
local stop = {}
for i = 0, c.nslots - 1 do
  local s = ph['s' .. i] or ''
  local rep = reports[i]
  if s == '!' then
    if rep == nil then release(c, now, pod, i) end
  elseif s ~= '' then
    local t = redis.call('HMGET', tkey(s), 'st', 'ep', 'started', 'cx')
    if t[1] == 'running' and t[3] == '1' then
      if rep and rep.id == s and rep.ep == t[2] then
        if t[4] == '1' then stop[#stop + 1] = s .. '|' .. t[2] end
        rep = nil
      else
        -- The agent does not run the phase Redis says it started: lost.
        vacate(pod, i)
        lose(c, now, s, true)
        local st = redis.call('HGET', pkey(pod), 'st')
        if st == 'active' and redis.call('HGET', pkey(pod), 's' .. i) == '' then fill_slot(c, now, pod, i) end
      end
    end
  end
  if rep then stop[#stop + 1] = rep.id .. '|' .. rep.ep end
end
local out = {ph.st}
for _, s in ipairs(stop) do out[#out + 1] = s end
return out
