-- heartbeat: an agent proves it is alive and reports the phases it really
-- runs: those it is claiming, running, or holding an unrecorded result for.
-- Redis is reconciled against the report:
--   * a started phase on this pod that the agent does not report is lost
--     (a plan requeued, an apply failed; the agent says it is not running it)
--     if the report certainly postdates the claim. A report is a snapshot
--     taken before it reaches Redis, and a claim may land in between.
--     Numbered reports (seq > 0) are exact: the claim recorded (hbs) the
--     first report number that includes the phase, so only a report
--     numbered at least that can miss it, whatever order heartbeats land in
--     (one that timed out may land after its successor). Unnumbered ones
--     (or a claim without hbs) judge by time: the phase started before the
--     previous heartbeat landed, which holds while heartbeats land in order;
--   * an orphan slot (work Redis lost) the agent no longer reports is freed;
--   * a reported phase Redis did not give this pod with that epoch, or whose
--     cancel was requested, is returned for the agent to stop, except work on
--     an orphan slot, which may finish (killing an apply midway is worse).
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid, ARGV[3] report number (0: unnumbered),
-- ARGV[4..] "<slot>|<task>|<epoch>" (slot -1 while claiming)
-- Returns {pod state, "<task>|<epoch>" to stop...}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid = ARGV[1], ARGV[2]
local ph, code, why = load_pod(pod, uid, true)
if ph == nil then return fail(code, why) end
if ph.st == 'lost' then return fail('lost', 'pod ' .. pod) end
if ph.st == 'expected' then return fail('podstate', 'pod ' .. pod .. ' has not registered') end
local now = now_ms()
local prev = tonumber(ph.lhb or '0')
local seq = tonumber(ARGV[3]) or 0
redis.call('ZADD', K .. KEY_HB, now + c.hbto, pod)
redis.call('HSET', pkey(pod), 'lhb', now)
local reported, on_slot = {}, {}
for i = 4, #ARGV do
  local slot, id, ep = string.match(ARGV[i], '^(-?%d+)|([^|]+)|(.*)$')
  if slot then
    reported[id] = ep
    on_slot[id] = tonumber(slot)
  end
end
local ours, orphan = {}, {}
for i = 0, c.nslots - 1 do
  local s = ph['s' .. i] or ''
  if s == '!' then orphan[i] = true end
end
-- missing: whether a started phase absent from this report is really gone.
local function missing(seq, hbs, started, prev)
  if seq > 0 and hbs > 0 then return seq >= hbs end
  return started < prev
end
local stop, lost, vacated = {}, {}, {}
for i = 0, c.nslots - 1 do
  local s = ph['s' .. i] or ''
  if s == '!' then
    local still = false
    for id, slot in pairs(on_slot) do if slot == i then still = true end end
    if not still then
      release(c, now, pod, i)
      changed() -- the pod may be idle now: no event says so
    end
  elseif s ~= '' then
    local t = redis.call('HMGET', tkey(s), 'st', 'ep', 'started', 'cx', 'sat', 'hbs')
    if t[1] == 'running' then
      if reported[s] == t[2] then
        ours[s] = true
        if t[4] == '1' then stop[#stop + 1] = s .. '|' .. t[2] end
      elseif t[3] == '1' and missing(seq, tonumber(t[6] or '0') or 0, tonumber(t[5]), prev) then
        vacate(pod, i)
        lost[#lost + 1] = s
        vacated[#vacated + 1] = i
      end
    end
  end
end
lose_all(c, now, lost, true)
if ph.st == 'active' then
  for _, i in ipairs(vacated) do fill_slot(c, now, pod, i) end
end
for id, ep in pairs(reported) do
  if not ours[id] and not orphan[on_slot[id]] then stop[#stop + 1] = id .. '|' .. ep end
end
local out = {ph.st}
for _, s in ipairs(stop) do out[#out + 1] = s end
return out
