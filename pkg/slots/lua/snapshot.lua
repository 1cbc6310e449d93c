-- snapshot: one page of a pool's pods with their slots, and on the first
-- page the pool-level part (queue, counts, generation, change token). Each
-- call reads at most ARGV[3] pods, so no call holds Redis for long however
-- big the pool (Snapshot in snapshot.go assembles the pages; why pages
-- from different moments are safe is said there).
-- KEYS[1] cfg
-- ARGV[1] how many queued tasks to list (0: none, only the counts)
-- ARGV[2] cursor: "" for the first page, else the pod seq the last page
-- ended at (pods are read in seq order, K.pods' scores)
-- ARGV[3] pods per page
-- Returns {now, {pod JSON...}, {"<task>|<type>|<queued at>"...} in dispatch
-- order, generation, generation born at (ms), {type, count, ...}, next
-- cursor ("" after the last page), evseq, chg}; the queue, the counts and
-- the change token (evseq, chg) only on the first page.
local c = load_cfg()
if c == nil then return fail('nopool') end
local now = now_ms()
local first = ARGV[2] == ''
local after = '-inf'
if not first then after = '(' .. ARGV[2] end
local page = tonumber(ARGV[3]) or 100
local ids = redis.call('ZRANGEBYSCORE', K .. KEY_PODS, after, '+inf', 'WITHSCORES', 'LIMIT', 0, page)
local pods = {}
local nxt = ''
for j = 1, #ids, 2 do
  local pod = ids[j]
  nxt = ids[j + 1]
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
if #ids < 2 * page then nxt = '' end
local g = redis.call('HMGET', CFG, CF_GEN, CF_GAT)
if not first then
  return {now, pods, {}, g[1] or '', tonumber(g[2] or '0'), {}, nxt, '', ''}
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
local n = redis.call('HMGET', N, 'evseq', 'chg')
return {now, pods, q, g[1] or '', tonumber(g[2] or '0'), counts, nxt, n[1] or '0', n[2] or '0'}
