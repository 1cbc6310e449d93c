-- snapshot: every pod, slot and queued task of a pool, read atomically.
-- KEYS[1] cfg
-- ARGV[1] how many queued tasks to list (0: none, only the counts)
-- Returns {now, {pod JSON...}, {"<task>|<type>|<queued at>"...} in dispatch order,
-- generation, generation born at (ms), {type, count, ...}}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local now = now_ms()
local pods = {}
for _, pod in ipairs(redis.call('ZRANGE', K .. KEY_PODS, 0, -1)) do
  local ph = hgetall(pkey(pod))
  if ph then
    local p = {name = pod, uid = ph.uid, st = ph.st, seq = tonumber(ph.seq), created = tonumber(ph.created),
      reg = tonumber(ph.reg or '0'), cby = ph.cby or '', idle = tonumber(ph.idle or '0'), tasks = tonumber(ph.tasks or '0'), hb = tonumber(redis.call('ZSCORE', K .. KEY_HB, pod) or '0'), slots = {}}
    for i = 0, c.nslots - 1 do
      local s = ph['s' .. i] or ''
      local slot = {i = i, task = s}
      if s ~= '' and s ~= '!' then
        local t = redis.call('HMGET', tkey(s), 'type', 'st', 'phase', 'ep', 'started', 'attempt', 'upd', 'cx', 'rdl')
        slot.type, slot.st, slot.phase, slot.ep = t[1], t[2], t[3], t[4]
        slot.started = t[5] == '1'
        slot.attempt = tonumber(t[6] or '0')
        slot.since = tonumber(t[7] or '0')
        slot.cx = t[8] == '1'
        slot.rdl = tonumber(t[9] or '0') or 0
      end
      p.slots[#p.slots + 1] = slot
    end
    pods[#pods + 1] = cjson.encode(p)
  end
end
-- The queue in dispatch order (by queue position across types), its first
-- ARGV[1] entries only: the dispatch order's first n are among each type's
-- first n, so a long queue costs O(n·types), not O(queue). Every type's
-- count is returned whole.
local limit = tonumber(ARGV[1]) or 0
local entries, counts = {}, {}
for _, t in ipairs(split(c.types)) do
  counts[#counts + 1] = t
  counts[#counts + 1] = redis.call('ZCARD', K .. KEY_Q .. t)
  if limit > 0 then
    local r = redis.call('ZRANGE', K .. KEY_Q .. t, 0, limit - 1, 'WITHSCORES')
    for i = 1, #r, 2 do entries[#entries + 1] = {id = r[i], type = t, qs = tonumber(r[i + 1])} end
  end
end
table.sort(entries, function(a, b) return a.qs < b.qs end)
local q = {}
for i = 1, math.min(#entries, limit) do
  local e = entries[i]
  q[#q + 1] = e.id .. '|' .. e.type .. '|' .. (redis.call('ZSCORE', K .. KEY_QAT, e.id) or '0')
end
local g = redis.call('HMGET', CFG, CF_GEN, CF_GAT)
return {now, pods, q, g[1] or '', tonumber(g[2] or '0'), counts}
