-- snapshot: one page of a pool's pods with their slots, and on the first
-- page the pool-level part (queue, counts, generation, change token). Each
-- call does about ARGV[3] reads at most, so no call holds Redis for long
-- however big the pool (Snapshot in snapshot.go assembles the pages; why
-- pages from different moments are safe is said there).
-- KEYS[1] cfg
-- ARGV[1] how many queued tasks to list (0: none, only the counts)
-- ARGV[2] cursor: "" for the first page, else the pod seq the last page
-- ended at (pods are read in seq order, K.pods' scores)
-- ARGV[3] the page's budget of reads (see below)
-- Returns {now, {pod...}, {"<task>|<type>|<queued at>"...} in dispatch
-- order, generation, generation born at (ms), {type, count, ...}, next
-- cursor ("" after the last page), last event, chg}; the queue, the counts and
-- the change token (last event, chg) only on the first page. A pod is
-- {name, uid, st, seq, created, reg, cby, idle, tasks, heartbeat deadline,
-- then per slot its task ("" idle, "!" orphan) and, for a task, its type,
-- st, phase, ep, started, attempt, upd, cx, rdl}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local now = now_ms()
local first = ARGV[2] == ''
-- A page is bounded by its work, in reads: the first page's queue listing
-- costs one per task listed, a pod 2 (its record, its heartbeat), each
-- task it holds 1 more. At least one pod per page.
local budget = tonumber(ARGV[3]) or 100
local used = 0
local q, counts = {}, {}
if first then
  -- The queue in dispatch order (by queue position across types), its
  -- first ARGV[1] entries only: the dispatch order's first n are among each
  -- type's first n, so a long queue costs O(n·types), not O(queue). Every
  -- type's count is returned whole.
  local limit = tonumber(ARGV[1]) or 0
  local entries = {}
  for _, t in ipairs(split(c.types)) do
    counts[#counts + 1] = t
    counts[#counts + 1] = redis.call('ZCARD', K .. KEY_Q .. t)
    if limit > 0 then
      local r = redis.call('ZRANGE', K .. KEY_Q .. t, 0, limit - 1, 'WITHSCORES')
      for i = 1, #r, 2 do entries[#entries + 1] = {id = r[i], type = t, qs = tonumber(r[i + 1])} end
    end
  end
  table.sort(entries, function(a, b) return a.qs < b.qs end)
  for i = 1, math.min(#entries, limit) do
    local e = entries[i]
    q[#q + 1] = e.id .. '|' .. e.type .. '|' .. (redis.call('ZSCORE', K .. KEY_QAT, e.id) or '0')
  end
  used = #q
end
local after = '-inf'
if not first then after = '(' .. ARGV[2] end
local want = math.max(1, math.ceil((budget - used) / 2))
local ids = redis.call('ZRANGEBYSCORE', K .. KEY_PODS, after, '+inf', 'WITHSCORES', 'LIMIT', 0, want)
local pods = {}
local nxt = ''
local done = #ids < 2 * want
for j = 1, #ids, 2 do
  if j > 1 and used >= budget then
    done = false
    break
  end
  local pod = ids[j]
  nxt = ids[j + 1]
  used = used + 2
  local ph = hgetall(pkey(pod))
  if ph then
    -- Flat strings, no JSON: a page of busy pods costs half as much.
    local p = {pod, ph.uid or '', ph.st or '', ph.seq or '', ph.created or '', ph.reg or '', ph.cby or '', ph.idle or '', ph.tasks or '',
      redis.call('ZSCORE', K .. KEY_HB, pod) or ''}
    for i = 0, c.nslots - 1 do
      local s = ph['s' .. i] or ''
      p[#p + 1] = s
      if s ~= '' and s ~= '!' then
        local t = redis.call('HMGET', tkey(s), 'type', 'st', 'phase', 'ep', 'started', 'attempt', 'upd', 'cx', 'rdl')
        for k = 1, 9 do p[#p + 1] = t[k] or '' end
        used = used + 1
      end
    end
    pods[#pods + 1] = p
  end
end
if done then nxt = '' end
local g = redis.call('HMGET', CFG, CF_GEN, CF_GAT)
if not first then
  return {now, pods, {}, g[1] or '', tonumber(g[2] or '0'), {}, nxt, '', ''}
end
return {now, pods, q, g[1] or '', tonumber(g[2] or '0'), counts, nxt, last_event(), redis.call('HGET', N, 'chg') or '0'}
