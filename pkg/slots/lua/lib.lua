-- lib.lua: helpers shared by every script; the store prepends it to each one,
-- after the names it shares with Go (KEY_* key suffixes, CF_* config fields,
-- generated from names.go): scripts use those names, never the literals, so
-- each name is defined once.
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
--   K.ev             stream events, ids "0-<n>" from the evseq counter
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

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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

-- load_cfg returns the parsed pool config, or nil when the pool is not
-- declared. Scripts read the config through these Lua fields only, so a
-- config field's name lives in the CF_* names alone.
local function load_cfg()
  local h = hgetall(CFG)
  if h == nil then return nil end
  local c = {
    raw = h,                          -- every field, for order_of
    gen = h[CF_GEN],
    managed = h[CF_MANAGED],
    types = h[CF_TYPES],
    evcap = h[CF_EVCAP],
    nslots = tonumber(h[CF_NSLOTS]),
    sc = split(h[CF_SC]),             -- class index (string) of each slot
    fill = split(h[CF_FILL]),         -- slot indexes, most specific class first
    ncls = tonumber(h[CF_NCLS]),
    ctypes = {},                      -- class -> types
    hbto = tonumber(h[CF_HBTO]),
    rttl = tonumber(h[CF_RTTL]),
    maxatt = tonumber(h[CF_MAXATT]),
    qlim = tonumber(h[CF_QLIM]),
    qage = tonumber(h[CF_QAGE]),
    ret = tonumber(h[CF_RET]),
    retn = tonumber(h[CF_RETN]),
    del = h[CF_DEL],                  -- set while the pool is being deleted (delete_pool)
  }
  for i = 0, c.ncls - 1 do c.ctypes[tostring(i)] = split(h[CF_CT .. i]) end
  return c
end

local function order_of(c, ttype) return split(c.raw[CF_ORD .. ttype]) end
local function pkey(pod) return K .. KEY_POD .. pod end
local function tkey(id) return K .. KEY_T .. id end
local function member(pod, slot) return pod .. '#' .. slot end
local function class_of(c, slot) return c.sc[tonumber(slot) + 1] end

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
  local seq = redis.call('HINCRBY', N, 'evseq', 1)
  redis.call('XADD', K .. KEY_EV, 'MAXLEN', '~', c.evcap, '0-' .. seq, 'at', now, ...)
end

local function hist(id, now, st, detail)
  redis.call('RPUSH', K .. KEY_H .. id, now .. '|' .. st .. '|' .. (detail or ''))
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
  redis.call('HINCRBY', K .. KEY_M, name .. ':' .. b, 1)
  redis.call('HINCRBY', K .. KEY_M, name .. ':s', ms)
end

-- occupy marks a slot as held by val (a task id or "!" for orphan work) and
-- keeps the busy/idle pod counters.
local function occupy(pod, slot, val)
  local pk = pkey(pod)
  redis.call('HSET', pk, 's' .. slot, val)
  if redis.call('HINCRBY', pk, 'busy', 1) == 1 then
    count('busy', 1)
    if redis.call('HGET', pk, 'st') == 'active' then count('idlepods', -1) end
  end
end

-- vacate clears a slot (the caller decides whether it gets new work) and
-- returns the pod's state.
local function vacate(pod, slot)
  local pk = pkey(pod)
  redis.call('HSET', pk, 's' .. slot, '')
  local st = redis.call('HGET', pk, 'st')
  if redis.call('HINCRBY', pk, 'busy', -1) == 0 then
    count('busy', -1)
    if st == 'active' then count('idlepods', 1) end
    -- The janitor's idleFor counts from here.
    redis.call('HSET', pk, 'idle', now_ms())
  end
  return st
end

-- assign puts a task phase into a slot whose idle entry the caller removed.
local function assign(c, now, id, phase, pod, slot)
  local ep = c.gen .. '-' .. redis.call('HINCRBY', N, 'seq', 1)
  redis.call('HSET', tkey(id), 'st', 'running', 'phase', phase, 'pod', pod, 'slot', slot,
    'ep', ep, 'started', '0', 'upd', now)
  occupy(pod, slot, id)
  count('run:' .. class_of(c, slot), 1)
  redis.call('RPUSH', K .. KEY_INBOX .. pod, 'a|' .. id .. '|' .. ep)
  hist(id, now, 'assigned', phase .. ' ' .. pod .. '#' .. slot .. ' epoch ' .. ep)
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
  for _, t in ipairs(c.ctypes[cls]) do
    local r = redis.call('ZRANGE', K .. KEY_Q .. t, 0, 0, 'WITHSCORES')
    if r[1] and (best_score == nil or tonumber(r[2]) < best_score) then
      best, best_type, best_score = r[1], t, tonumber(r[2])
    end
  end
  return best, best_type
end

-- fill_slot gives an idle slot of an active pod the oldest queued work it may
-- run, or files it as idle. Every path that frees a slot ends here.
local function fill_slot(c, now, pod, slot)
  local cls = class_of(c, slot)
  local id, ttype = next_queued(c, cls)
  if id then
    local qat = redis.call('ZSCORE', K .. KEY_QAT, id)
    dequeue(id, ttype)
    observe('qw:' .. ttype, QW_BOUNDS, now - (tonumber(qat) or now))
    assign(c, now, id, 'plan', pod, slot)
    return true
  end
  redis.call('ZADD', K .. KEY_IDLE .. cls, redis.call('HGET', pkey(pod), 'seq'), member(pod, slot))
  return false
end

-- fill_idle_slots gives each idle slot of an active pod queued work, the
-- most specific slots first, so a plan does not take a slot 0 that a
-- queued plan_and_apply needs while a plan-only slot is free beside it.
local function fill_idle_slots(c, now, pod, ph)
  for _, i in ipairs(c.fill) do
    if (ph['s' .. i] or '') == '' then fill_slot(c, now, pod, tonumber(i)) end
  end
end

-- release vacates a slot and, on an active pod, dispatches queued work to it
-- in the same script (the at-rest invariant: no queued task beside an idle
-- eligible uncordoned slot).
local function release(c, now, pod, slot)
  local st = vacate(pod, slot)
  if st == 'active' then fill_slot(c, now, pod, slot) end
end

-- place assigns a plan phase to the best idle slot: the most specific class
-- first, then the oldest pod. Returns the epoch, pod and slot, or nil.
local function place(c, now, id, ttype)
  for _, cls in ipairs(order_of(c, ttype)) do
    local m = redis.call('ZRANGE', K .. KEY_IDLE .. cls, 0, 0)[1]
    if m then
      redis.call('ZREM', K .. KEY_IDLE .. cls, m)
      local pod, slot = string.match(m, '^(.*)#(%d+)$')
      observe('qw:' .. ttype, QW_BOUNDS, 0) -- a slot was free: no wait
      return assign(c, now, id, 'plan', pod, slot), pod, slot
    end
  end
  return nil
end

local function enqueue(c, now, id, ttype, qs)
  redis.call('ZADD', K .. KEY_Q .. ttype, qs, id)
  redis.call('ZADD', K .. KEY_QAT, now, id)
  redis.call('HSET', tkey(id), 'st', 'queued', 'pod', '', 'slot', '', 'ep', '', 'started', '0',
    'upd', now, 'qat', now)
  hist(id, now, 'queued', '')
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
local function finish(c, now, id, st, reason, by, detail)
  redis.call('HSET', tkey(id), 'st', st, 'reason', reason or '', 'upd', now, 'fin', now)
  if by and by ~= '' then redis.call('HSET', tkey(id), 'by', by) end
  redis.call('ZADD', K .. KEY_DONE, now, id)
  local mreason = reason or ''
  if not METRIC_REASONS[mreason] then mreason = 'other' end
  redis.call('HINCRBY', K .. KEY_M, 'out:' .. (redis.call('HGET', tkey(id), 'type') or '') .. ':' .. st .. ':' .. mreason, 1)
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
    count('run:' .. class_of(c, t.slot), -1)
    finish(c, now, id, 'cancelled', 'agent-lost', t.cxby)
    return true
  end
  if t.phase == 'apply' then
    count('run:' .. class_of(c, t.slot), -1)
    finish(c, now, id, 'failed', 'agent-lost')
    return true
  end
  if t.started == '1' and not requeue_started then return false end
  count('run:' .. class_of(c, t.slot), -1)
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
      redis.call('ZREM', K .. KEY_IDLE .. c.sc[i + 1], member(pod, i))
    end
  end
end

-- set_state moves a pod between lifecycle states, keeping the per-state and
-- idle-pod counters; it does not touch slots.
local function set_state(pod, from, to, busy)
  redis.call('HSET', pkey(pod), 'st', to)
  count('pods:' .. from, -1)
  count('pods:' .. to, 1)
  if busy == 0 then
    if from == 'active' then count('idlepods', -1) end
    if to == 'active' then count('idlepods', 1) end
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
    if tonumber(ph.busy) == 0 then count('idlepods', -1) end
  end
  count('pods:' .. st, -1)
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

-- changed counts a change that emits no event (N field chg). With evseq it
-- makes the pool's change token (version.lua), which lets the janitor skip
-- the snapshot of a pool at rest: every write that changes what a snapshot
-- shows either emits or calls this. Heartbeats that only move deadlines do
-- neither (an expired one becomes the reaper's event).
local function changed() redis.call('HINCRBY', N, 'chg', 1) end
