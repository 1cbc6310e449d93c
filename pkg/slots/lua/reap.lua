-- reap: expire, in bounded batches, heartbeats, reservations and queued tasks
-- past their deadlines, and drop finished tasks past retention. If the reaper
-- itself did not run for longer than ARGV[2] (an outage: Redis unreachable,
-- no reaper running), nobody could heartbeat or approve either, so deadlines
-- get one heartbeat timeout of grace before anything expires.
-- KEYS[1] cfg
-- ARGV[1] batch size, ARGV[2] max gap between runs (ms)
-- Returns {heartbeats, reservations, queued, retained, grace (1/0)}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local batch, max_gap = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(now_ms()) -- compared below
local last = tonumber(redis.call('HGET', N, 'reap_last') or '')
local grace = tonumber(redis.call('HGET', N, 'grace') or '0')
if last and now - last > max_gap then
  grace = now + c.hbto
  redis.call('HSET', N, 'grace', grace)
  emit(c, now, 'reaper', 'gap', 'ms', now - last, 'grace_until', grace)
end
redis.call('HSET', N, 'reap_last', now)
local hbs, resv, queued, retained = 0, 0, 0, 0
if now >= grace then
  for _, pod in ipairs(redis.call('ZRANGEBYSCORE', K .. KEY_HB, '-inf', now, 'LIMIT', 0, batch)) do
    local ph = hgetall(pkey(pod))
    if ph == nil then
      redis.call('ZREM', K .. KEY_HB, pod)
    elseif c.managed == '1' then
      mark_lost(c, now, pod, ph)
    else
      -- Static pools have no pod object to fence on: the expiry is the fence.
      remove_pod(c, now, pod, ph, 'heartbeat-expired')
    end
    hbs = hbs + 1
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K .. KEY_RESV, '-inf', now, 'LIMIT', 0, batch)) do
    local t = hgetall(tkey(id))
    if t and t.st == 'reserved' then
      end_reservation(c, now, id, t, 'expired', 'reservation-ttl')
    else
      redis.call('ZREM', K .. KEY_RESV, id)
    end
    resv = resv + 1
  end
  if c.qage > 0 then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', K .. KEY_QAT, '-inf', now - c.qage, 'LIMIT', 0, batch)) do
      local ttype = redis.call('HGET', tkey(id), 'type')
      if ttype then dequeue(id, ttype) else redis.call('ZREM', K .. KEY_QAT, id) end
      finish(c, now, id, 'expired', 'queue-age')
      queued = queued + 1
    end
  end
end
local function forget(ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', tkey(id), K .. KEY_H .. id)
    redis.call('ZREM', K .. KEY_DONE, id)
    retained = retained + 1
  end
end
forget(redis.call('ZRANGEBYSCORE', K .. KEY_DONE, '-inf', now - c.ret, 'LIMIT', 0, batch))
local excess = redis.call('ZCARD', K .. KEY_DONE) - c.retn
if excess > 0 then forget(redis.call('ZRANGE', K .. KEY_DONE, 0, math.min(excess, batch) - 1)) end
redis.call('ZREMRANGEBYSCORE', K .. KEY_TOMB, '-inf', now - c.ret)
local g = 0
if now < grace then g = 1 end
return {hbs, resv, queued, retained, g}
