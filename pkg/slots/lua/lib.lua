-- lib.lua: helpers shared by every script; the store prepends it to each one.
-- Scripts use the names they share with Go (KEY_* key suffixes, CF_* config
-- fields, from names.go), never the literals, so each name is defined once;
-- the store writes their values in when it builds the scripts.
--
-- KEYS[1] of every script is the pool's config hash, "<prefix>:v1:{ns/name}:cfg".
-- Every other key is built from it and shares its hash tag, so a pool lives in
-- one Redis Cluster slot and each script stays atomic there.
--
-- Pool keys (K = "<prefix>:v1:{ns/name}:"):
--   K.cfg            hash   pool config (CF_* fields; scripts read it through load_cfg). CF_HPATOL
--                           is what the janitor found on the pool's HPA: "" unknown, "cluster" (no
--                           scaleUp.tolerance of its own), or the tolerance; stats returns it
--                           under that name for the scaler's nudge
--   K.n              hash   counters and sequences
--   K.pods           zset   pod name -> pod seq (age order)
--   K.pod:<name>     hash   uid, st, seq, busy, idle (ms the last slot freed), created, reg, lhb (last
--                           heartbeat), cby (cordon owner), tasks (plan phases the pod started, one
--                           per task, counted by claim; absent = 0), s<i> ("" idle, task id, "!" orphan)
--   K.inbox:<name>   list   "a|<task>|<epoch>" assignments, "c|<task>|<epoch>" cancels
--   K.proc:<name>    list   entries the agent took from its inbox but has not claimed yet
--   K.idle:<class>   zset   "<pod>#<slot>" -> pod seq, idle slots of active pods
--   K.q:<type>       zset   task -> queue seq (FIFO; a requeue keeps its place)
--   K.qat            zset   task -> time it was (re)queued
--   K.hb             zset   pod -> heartbeat deadline
--   K.resv           zset   task -> reservation deadline
--   K.done           zset   task -> time it finished
--   K.tomb           zset   pod uid -> time it was removed
--   K.t:<id>         hash   task; among its fields: by (who decided last), note (that decision's
--                           note), sub (who submitted, "" when unknown)
--   K.h:<id>         list   task history "<ms>|<state>|<detail>"
--   K.ev             stream events, ids "0-<n>", n counting up from 1 (XADD "0-*": the stream
--                           keeps its last id when trimmed; it and K.n go only together)
--   K.metrics        hash   cumulative counters for Prometheus (metrics.go), never decremented:
--                           qw:<type>:<bucket> and qw:<type>:s, queue waits (count per histogram
--                           bucket of QW_BOUNDS, sum in ms); pd:<type>:<phase>:<bucket> and
--                           pd:<type>:<phase>:s, durations of started phases the agent completed
--                           (PD_BOUNDS); out:<type>:<state>:<reason>, finished tasks (a reason
--                           outside METRIC_REASONS counts as "other")
-- Times are milliseconds from Redis TIME: one clock for every writer.

local K = string.sub(KEYS[1], 1, #KEYS[1] - #KEY_CFG)
local CFG = K .. KEY_CFG
local N = K .. KEY_N

local function fail(code, msg)
  return redis.error_reply('SSERR:' .. code .. ' ' .. (msg or ''))
end

-- now_ms is the time in ms as a string of digits, built from TIME's strings:
-- Redis formats every number a script passes to redis.call (and Lua every
-- number it concatenates) with printf, which was about a tenth of the
-- cycle's cost. Arithmetic converts it; compare it only through tonumber.
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.sub('00000' .. t[2], -6, -4)
end

local function split(s)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end
  return out
end

local function hgetall(key)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then return nil end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end

-- load_cfg returns the pool config, or nil when the pool is not declared.
-- Scripts read the config through these Lua fields and the accessors below
-- only, so a config field's name lives in the CF_* names alone. The scalar
-- fields come in one HMGET into a plain table; the lists are split on first
-- use (class_of, fill_order), and a class's types and a type's classes read
-- on first use (class_types, order_of): a claim needs none of them, and
-- building every field on every call was a large part of the cost of the
-- cheapest scripts.
local function load_cfg()
  local v = redis.call('HMGET', CFG, CF_GEN, CF_MANAGED, CF_TYPES, CF_EVCAP, CF_NSLOTS, CF_SC, CF_FILL,
    CF_NCLS, CF_HBTO, CF_RTTL, CF_MAXATT, CF_QLIM, CF_QAGE, CF_RET, CF_RETN, CF_DEL)
  if not v[1] and #redis.call('HKEYS', CFG) == 0 then return nil end
  return {
    gen = v[1] or nil,
    managed = v[2] or nil,
    types = v[3] or nil,
    evcap = v[4] or nil,
    -- Numbers used only in arithmetic stay strings (Lua converts them
    -- there): each tonumber is a strtod on every call of every script.
    nslots = v[5] or nil,
    sc_raw = v[6] or nil,             -- class index of each slot (class_of)
    fill_raw = v[7] or nil,           -- slot indexes, most specific class first (fill_order)
    ncls = v[8] or nil,
    hbto = v[9] or nil,
    rttl = v[10] or nil,
    maxatt = tonumber(v[11]),         -- compared
    qlim = tonumber(v[12]),           -- compared
    qage = tonumber(v[13]),           -- compared
    ret = v[14] or nil,
    retn = v[15] or nil,
    del = v[16] or nil,               -- set while the pool is being deleted (delete_pool)
  }
end

-- class_of is the class index (a string) of a slot.
local function class_of(c, slot)
  if c.sc == nil then c.sc = split(c.sc_raw) end
  return c.sc[tonumber(slot) + 1]
end

-- fill_order is the pool's slot indexes (strings), most specific class first.
local function fill_order(c)
  if c.fill == nil then c.fill = split(c.fill_raw) end
  return c.fill
end

-- class_types is the types a class runs.
local function class_types(c, cls)
  if c.ctypes == nil then c.ctypes = {} end
  local types = c.ctypes[cls]
  if types == nil then
    types = split(redis.call('HGET', CFG, CF_CT .. cls))
    c.ctypes[cls] = types
  end
  return types
end

local function order_of(c, ttype) return split(redis.call('HGET', CFG, CF_ORD .. ttype)) end
local function pkey(pod) return K .. KEY_POD .. pod end
local function tkey(id) return K .. KEY_T .. id end
local function member(pod, slot) return pod .. '#' .. slot end

-- load_pod reads the record of a pod for a caller that names its incarnation
-- by uid ('' for any). It returns the record, or nil, the refusal's code and
-- its detail, checked in this order: tombstoned (only with check_tomb: that
-- uid was removed, so its agent must stop rather than register again), nopod,
-- conflict (another incarnation holds the name).
local function load_pod(pod, uid, check_tomb)
  local ph = hgetall(pkey(pod))
  if ph ~= nil and (uid == '' or ph.uid == uid) then return ph end
  if check_tomb and uid ~= '' and redis.call('ZSCORE', K .. KEY_TOMB, uid) then
    return nil, 'tombstoned', 'pod ' .. pod .. ' uid ' .. uid
  end
  if ph == nil then return nil, 'nopod', 'pod ' .. pod end
  return nil, 'conflict', 'pod ' .. pod .. ' is held by uid ' .. ph.uid
end

-- load_reserved reads the task a decision (approve, reject) is about. It
-- returns the task when it is reserved; otherwise nil and the reply: notask;
-- what repeated(t) returns, when the caller's own decision is being repeated
-- (a retry after a lost reply gets the first answer); reslost when the task
-- held a reservation that ended without an approval (rs = 1); notreserved.
local function load_reserved(id, repeated)
  local t = hgetall(tkey(id))
  if t == nil then return nil, fail('notask', id) end
  if t.st == 'reserved' then return t end
  local again = repeated(t)
  if again ~= nil then return nil, again end
  if t.rs == '1' then return nil, fail('reslost', 'task ' .. id .. ' is ' .. t.st .. ' ' .. (t.reason or '')) end
  return nil, fail('notreserved', 'task ' .. id .. ' is ' .. t.st)
end

local function emit(c, now, ...)
  redis.call('XADD', K .. KEY_EV, 'MAXLEN', '~', c.evcap, '0-*', 'at', now, ...)
end

-- last_event is the number of the pool's last event ("0-<n>" ids count up
-- by one, and the capped stream always keeps its newest entry), '0' before
-- the first: the event half of the change token (version, snapshot).
local function last_event()
  local e = redis.call('XREVRANGE', K .. KEY_EV, '+', '-', 'COUNT', 1)
  if e[1] == nil then return '0' end
  return string.match(e[1][1], '^0%-(%d+)$') or '0'
end

-- hist appends a history entry; hist_entry is its text, for a caller that
-- appends several in one RPUSH.
local function hist_entry(now, st, detail) return now .. '|' .. st .. '|' .. (detail or '') end
local function hist(id, now, st, detail)
  redis.call('RPUSH', K .. KEY_H .. id, hist_entry(now, st, detail))
end

local function count(field, by) redis.call('HINCRBY', N, field, by) end

-- observe counts one duration (ms) in a histogram of K.metrics: the bucket it
-- falls in (the first bound it does not exceed; #bounds for beyond the
-- last) and the sum. Two O(1) calls, so the exporter reads a pool's
-- histograms with one HGETALL and keeps nothing per task.
local function observe(name, bounds, ms)
  if ms < 0 then ms = 0 end
  local b = #bounds
  for i, bound in ipairs(bounds) do
    if ms <= bound then b = i - 1 break end
  end
  redis.call('HINCRBY', K .. KEY_M, name .. ':' .. b, '1')
  -- Adding 0 changes nothing: an absent sum reads as 0 (parsePoolMetrics).
  if ms > 0 then redis.call('HINCRBY', K .. KEY_M, name .. ':s', ms) end
end

-- occupy marks a slot as held by val (a task id or "!" for orphan work) and
-- keeps the busy/idle pod counters. One read and one write of the pod: the
-- script is atomic, so reading busy and writing it back is an increment.
local function occupy(pod, slot, val)
  local pk = pkey(pod)
  local ph = redis.call('HMGET', pk, 'busy', 'st')
  local busy = (tonumber(ph[1]) or 0) + 1
  redis.call('HSET', pk, 's' .. slot, val, 'busy', busy)
  if busy == 1 then
    count('busy', '1')
    if ph[2] == 'active' then count('idlepods', '-1') end
  end
end

-- vacate clears a slot (the caller decides whether it gets new work) and
-- returns the pod's state and seq (for fill_slot). now, when given, is the
-- script's time.
local function vacate(pod, slot, now)
  local pk = pkey(pod)
  local ph = redis.call('HMGET', pk, 'st', 'seq', 'busy')
  local st = ph[1]
  local busy = (tonumber(ph[3]) or 0) - 1
  if busy == 0 then
    count('busy', '-1')
    if st == 'active' then count('idlepods', '1') end
    -- The janitor's idleFor counts from here.
    redis.call('HSET', pk, 's' .. slot, '', 'busy', '0', 'idle', now or now_ms())
  else
    redis.call('HSET', pk, 's' .. slot, '', 'busy', busy)
  end
  return st, ph[2]
end

-- assign puts a task phase into a slot whose idle entry the caller removed.
-- pre, when given, is what a new task's record holds before it (field/value
-- pairs and its first history entry, written with the assignment's).
local function assign(c, now, id, phase, pod, slot, pre)
  local ep = c.gen .. '-' .. redis.call('HINCRBY', N, 'seq', '1')
  local fields = {'st', 'running', 'phase', phase, 'pod', pod, 'slot', slot, 'ep', ep, 'started', '0', 'upd', now}
  if pre then for _, v in ipairs(pre.fields) do fields[#fields + 1] = v end end
  redis.call('HSET', tkey(id), unpack(fields))
  occupy(pod, slot, id)
  count('run:' .. class_of(c, slot), '1')
  redis.call('RPUSH', K .. KEY_INBOX .. pod, 'a|' .. id .. '|' .. ep)
  local entry = hist_entry(now, 'assigned', phase .. ' ' .. pod .. '#' .. slot .. ' epoch ' .. ep)
  if pre then
    redis.call('RPUSH', K .. KEY_H .. id, pre.hist, entry)
  else
    redis.call('RPUSH', K .. KEY_H .. id, entry)
  end
  emit(c, now, 'task', id, 'st', 'running', 'phase', phase, 'pod', pod, 'slot', slot, 'ep', ep)
  return ep
end

local function dequeue(id, ttype)
  redis.call('ZREM', K .. KEY_Q .. ttype, id)
  redis.call('ZREM', K .. KEY_QAT, id)
end

-- next_queued returns the oldest queued task a slot of class cls may run.
local function next_queued(c, cls)
  local best, best_type, best_score
  for _, t in ipairs(class_types(c, cls)) do
    local r = redis.call('ZRANGE', K .. KEY_Q .. t, 0, 0, 'WITHSCORES')
    if r[1] and (best_score == nil or tonumber(r[2]) < best_score) then
      best, best_type, best_score = r[1], t, tonumber(r[2])
    end
  end
  return best, best_type
end

-- fill_slot gives an idle slot of an active pod the oldest queued work it may
-- run, or files it as idle. Every path that frees a slot ends here. seq,
-- when given, is the pod's (else it is read).
local function fill_slot(c, now, pod, slot, seq)
  local cls = class_of(c, slot)
  local id, ttype = next_queued(c, cls)
  if id then
    local qat = redis.call('ZSCORE', K .. KEY_QAT, id)
    dequeue(id, ttype)
    observe('qw:' .. ttype, QW_BOUNDS, now - (tonumber(qat) or now))
    assign(c, now, id, 'plan', pod, slot)
    return true
  end
  redis.call('ZADD', K .. KEY_IDLE .. cls, seq or redis.call('HGET', pkey(pod), 'seq'), member(pod, slot))
  return false
end

-- fill_idle_slots gives each idle slot of an active pod queued work, the
-- most specific slots first, so a plan does not take a slot 0 that a
-- queued plan_and_apply needs while a plan-only slot is free beside it.
local function fill_idle_slots(c, now, pod, ph)
  for _, i in ipairs(fill_order(c)) do
    if (ph['s' .. i] or '') == '' then fill_slot(c, now, pod, tonumber(i)) end
  end
end

-- release vacates a slot and, on an active pod, dispatches queued work to it
-- in the same script (the at-rest invariant: no queued task beside an idle
-- eligible uncordoned slot).
local function release(c, now, pod, slot)
  local st, seq = vacate(pod, slot, now)
  if st == 'active' then fill_slot(c, now, pod, slot, seq) end
end

-- free_slot takes the best idle slot for a type, given its classes
-- (order_of), out of its idle set: the most specific class first, then the
-- oldest pod. take_slot assigns it; a caller that takes a slot assigns it.
local function free_slot(order)
  for _, cls in ipairs(order) do
    local m = redis.call('ZPOPMIN', K .. KEY_IDLE .. cls)[1]
    if m then return m, cls end
  end
  return nil
end

-- take_slot assigns a plan phase to the idle slot m of class cls, which
-- free_slot took. Returns the epoch, pod and slot. pre: see assign.
local function take_slot(c, now, id, ttype, m, cls, pre)
  local pod, slot = string.match(m, '^(.*)#(%d+)$')
  observe('qw:' .. ttype, QW_BOUNDS, 0) -- a slot was free: no wait
  return assign(c, now, id, 'plan', pod, slot, pre), pod, slot
end

-- place assigns a plan phase to the best idle slot. Returns the epoch, pod
-- and slot, or nil.
local function place(c, now, id, ttype)
  local m, cls = free_slot(order_of(c, ttype))
  if m then return take_slot(c, now, id, ttype, m, cls) end
  return nil
end

-- enqueue queues a task's plan phase. pre: see assign.
local function enqueue(c, now, id, ttype, qs, pre)
  redis.call('ZADD', K .. KEY_Q .. ttype, qs, id)
  redis.call('ZADD', K .. KEY_QAT, now, id)
  local fields = {'st', 'queued', 'pod', '', 'slot', '', 'ep', '', 'started', '0', 'upd', now, 'qat', now}
  if pre then for _, v in ipairs(pre.fields) do fields[#fields + 1] = v end end
  redis.call('HSET', tkey(id), unpack(fields))
  if pre then
    redis.call('RPUSH', K .. KEY_H .. id, pre.hist, hist_entry(now, 'queued', ''))
  else
    hist(id, now, 'queued', '')
  end
  emit(c, now, 'task', id, 'st', 'queued')
end

-- place_or_enqueue runs a plan phase now if a slot is free, else queues it.
local function place_or_enqueue(c, now, id, ttype, qs)
  local ep, pod, slot = place(c, now, id, ttype)
  if ep then return ep, pod, slot end
  enqueue(c, now, id, ttype, qs)
  return nil
end

-- decided is the history detail of a person's decision: who, and their note.
local function decided(by, note)
  if note == nil or note == '' then return 'by ' .. by end
  return 'by ' .. by .. ': ' .. note
end

-- finish moves a task to a terminal state. detail, when given, is the
-- history entry's detail instead of the reason (a decision's who and note).
-- ttype, when given, is the task's type (else it is read); extra, when
-- given, are more field/value pairs of the task, written in the same HSET.
local function finish(c, now, id, st, reason, by, detail, ttype, extra)
  local fields = {'st', st, 'reason', reason or '', 'upd', now, 'fin', now}
  if by and by ~= '' then fields[#fields + 1] = 'by'; fields[#fields + 1] = by end
  if extra then for _, v in ipairs(extra) do fields[#fields + 1] = v end end
  redis.call('HSET', tkey(id), unpack(fields))
  redis.call('ZADD', K .. KEY_DONE, now, id)
  local mreason = reason or ''
  if not METRIC_REASONS[mreason] then mreason = 'other' end
  ttype = ttype or redis.call('HGET', tkey(id), 'type') or ''
  redis.call('HINCRBY', K .. KEY_M, 'out:' .. ttype .. ':' .. st .. ':' .. mreason, '1')
  hist(id, now, st, detail or reason)
  emit(c, now, 'task', id, 'st', st, 'reason', reason or '')
end

-- end_reservation ends a reserved task and frees its slot.
local function end_reservation(c, now, id, t, st, reason, by, detail)
  redis.call('ZREM', K .. KEY_RESV, id)
  finish(c, now, id, st, reason, by, detail)
  release(c, now, t.pod, t.slot)
end

-- lose handles a task whose pod died or was removed, per the task state
-- machine: an unstarted phase goes back without spending an attempt; a
-- started plan is requeued only when requeue_started (the pod object is gone:
-- the deletion is the fence) and attempts remain; an apply never runs twice;
-- a reservation is lost. The caller has vacated the task's slot already.
local function lose(c, now, id, requeue_started)
  local t = hgetall(tkey(id))
  if t == nil then return end
  if t.st == 'reserved' then
    redis.call('ZREM', K .. KEY_RESV, id)
    finish(c, now, id, 'failed', 'reservation-lost')
    return true
  end
  if t.st ~= 'running' then return true end
  if t.cx == '1' then
    -- Its cancel was asked for: the loss ends it, nothing runs it again.
    count('run:' .. class_of(c, t.slot), '-1')
    finish(c, now, id, 'cancelled', 'agent-lost', t.cxby)
    return true
  end
  if t.phase == 'apply' then
    count('run:' .. class_of(c, t.slot), '-1')
    finish(c, now, id, 'failed', 'agent-lost')
    return true
  end
  if t.started == '1' and not requeue_started then return false end
  count('run:' .. class_of(c, t.slot), '-1')
  if t.started == '1' and tonumber(t.attempt or '0') >= c.maxatt then
    finish(c, now, id, 'failed', 'agent-lost')
    return true
  end
  hist(id, now, 'requeued', 'from ' .. t.pod .. '#' .. t.slot)
  place_or_enqueue(c, now, id, t.type, tonumber(t.qs))
  return true
end

-- lose_all hands several tasks of one pod to lose, oldest in the queue
-- first, so a requeue never lets a younger task overtake an older one.
local function lose_all(c, now, ids, requeue_started)
  local qs = {}
  for _, id in ipairs(ids) do qs[id] = tonumber(redis.call('HGET', tkey(id), 'qs') or '0') end
  table.sort(ids, function(a, b) return qs[a] < qs[b] end)
  for _, id in ipairs(ids) do lose(c, now, id, requeue_started) end
end

-- drop_idle removes an active pod's idle slots from the idle sets.
local function drop_idle(c, pod, ph)
  for i = 0, c.nslots - 1 do
    if (ph['s' .. i] or '') == '' then
      redis.call('ZREM', K .. KEY_IDLE .. class_of(c, i), member(pod, i))
    end
  end
end

-- set_state moves a pod between lifecycle states, keeping the per-state and
-- idle-pod counters; it does not touch slots.
local function set_state(pod, from, to, busy)
  redis.call('HSET', pkey(pod), 'st', to)
  count('pods:' .. from, '-1')
  count('pods:' .. to, '1')
  if busy == 0 then
    if from == 'active' then count('idlepods', '-1') end
    if to == 'active' then count('idlepods', '1') end
  end
end

-- remove_pod deletes a pod record: its uid is tombstoned, its work handled by
-- the loss policy with the pod object gone.
local function remove_pod(c, now, pod, ph, reason)
  local st = ph.st
  -- The pod's event comes first: the events of its tasks follow from it.
  emit(c, now, 'pod', pod, 'st', 'removed', 'uid', ph.uid, 'reason', reason)
  if st == 'active' then
    drop_idle(c, pod, ph)
    if tonumber(ph.busy) == 0 then count('idlepods', '-1') end
  end
  count('pods:' .. st, '-1')
  redis.call('HSET', pkey(pod), 'st', 'gone')
  local lost = {}
  for i = 0, c.nslots - 1 do
    local s = ph['s' .. i] or ''
    if s ~= '' then
      vacate(pod, i)
      if s ~= '!' then lost[#lost + 1] = s end
    end
  end
  lose_all(c, now, lost, true)
  redis.call('ZADD', K .. KEY_TOMB, now, ph.uid)
  redis.call('DEL', pkey(pod), K .. KEY_INBOX .. pod, K .. KEY_PROC .. pod)
  redis.call('ZREM', K .. KEY_PODS, pod)
  redis.call('ZREM', K .. KEY_HB, pod)
end

-- mark_lost handles a pod whose heartbeat expired while its pod object may
-- still exist: it never gets work again; unstarted phases go back, applies
-- and reservations fail now; started plans wait for the pod object to go.
local function mark_lost(c, now, pod, ph)
  emit(c, now, 'pod', pod, 'st', 'lost', 'uid', ph.uid)
  if ph.st == 'active' then drop_idle(c, pod, ph) end
  set_state(pod, ph.st, 'lost', tonumber(ph.busy))
  local lost = {}
  for i = 0, c.nslots - 1 do
    local s = ph['s' .. i] or ''
    if s ~= '' and s ~= '!' then
      local t = redis.call('HMGET', tkey(s), 'st', 'phase', 'started')
      if t[1] == 'reserved' or t[3] ~= '1' or t[2] == 'apply' then
        vacate(pod, i)
        lost[#lost + 1] = s
      end
    end
  end
  lose_all(c, now, lost, false)
  redis.call('ZREM', K .. KEY_HB, pod)
end

-- changed counts a change that emits no event (N field chg). With the last event it
-- makes the pool's change token (version.lua), which lets the janitor skip
-- the snapshot of a pool at rest: every write that changes what a snapshot
-- shows either emits or calls this. Heartbeats that only move deadlines do
-- neither (an expired one becomes the reaper's event).
local function changed() redis.call('HINCRBY', N, 'chg', '1') end
