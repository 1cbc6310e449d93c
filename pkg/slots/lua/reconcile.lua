-- reconcile: recount every counter and rebuild the idle sets from the pod
-- records (the source of truth), then dispatch queued work to idle slots.
-- With ARGV[1] = "check" nothing is written: the mismatches are only reported.
-- KEYS[1] cfg
-- Returns {"<what>|<stored>|<recounted>"...}, one entry per mismatch.
local c = load_cfg()
if c == nil then return fail('nopool') end
local fix = ARGV[1] ~= 'check'
local want = {busy = 0, idlepods = 0, ['pods:expected'] = 0, ['pods:active'] = 0, ['pods:cordoned'] = 0,
  ['pods:draining'] = 0, ['pods:lost'] = 0}
for i = 0, c.ncls - 1 do want['run:' .. i] = 0 end
local idle = {}
for i = 0, c.ncls - 1 do idle[tostring(i)] = {} end
local pods = redis.call('ZRANGE', K .. KEY_PODS, 0, -1)
local busy_of = {}
for _, pod in ipairs(pods) do
  local ph = hgetall(pkey(pod))
  local busy = 0
  for i = 0, c.nslots - 1 do
    local s = ph['s' .. i] or ''
    if s ~= '' then
      busy = busy + 1
      if s ~= '!' and redis.call('HGET', tkey(s), 'st') == 'running' then
        want['run:' .. class_of(c, i)] = want['run:' .. class_of(c, i)] + 1
      end
    elseif ph.st == 'active' then
      idle[class_of(c, i)][member(pod, i)] = ph.seq
    end
  end
  busy_of[pod] = busy
  want['pods:' .. ph.st] = (want['pods:' .. ph.st] or 0) + 1
  if busy > 0 then want.busy = want.busy + 1 elseif ph.st == 'active' then want.idlepods = want.idlepods + 1 end
end
local out = {}
for _, pod in ipairs(pods) do
  local stored = redis.call('HGET', pkey(pod), 'busy')
  if tonumber(stored) ~= busy_of[pod] then
    out[#out + 1] = 'pod:' .. pod .. ':busy|' .. stored .. '|' .. busy_of[pod]
    if fix then redis.call('HSET', pkey(pod), 'busy', busy_of[pod]) end
  end
end
for field, v in pairs(want) do
  local stored = tonumber(redis.call('HGET', N, field) or '0')
  if stored ~= v then
    out[#out + 1] = field .. '|' .. stored .. '|' .. v
    if fix then redis.call('HSET', N, field, v) end
  end
end
for cls, members in pairs(idle) do
  local key = K .. KEY_IDLE .. cls
  local n = 0
  for m, _ in pairs(members) do
    n = n + 1
    if not redis.call('ZSCORE', key, m) then out[#out + 1] = key .. ':missing|' .. m .. '|' end
  end
  if redis.call('ZCARD', key) ~= n then out[#out + 1] = key .. ':size|' .. redis.call('ZCARD', key) .. '|' .. n end
  if fix then
    redis.call('DEL', key)
    for m, seq in pairs(members) do redis.call('ZADD', key, seq, m) end
  end
end
-- The at-rest invariant: no queued task beside an idle slot that may run it.
for cls, _ in pairs(idle) do
  local key = K .. KEY_IDLE .. cls
  while true do
    local m = redis.call('ZRANGE', key, 0, 0)[1]
    if not m then break end
    local id = next_queued(c, cls)
    if not id then break end
    out[#out + 1] = 'undispatched|' .. id .. '|' .. m
    if not fix then break end
    redis.call('ZREM', key, m)
    local pod, slot = string.match(m, '^(.*)#(%d+)$')
    fill_slot(c, now_ms(), pod, slot)
  end
end
if fix and #out > 0 then changed() end
return out
