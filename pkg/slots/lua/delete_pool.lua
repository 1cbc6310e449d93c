-- delete_pool: the pool's AgentPool is being deleted. The first call marks
-- the pool deleting (CF_DEL, Redis time): from then on submit refuses new
-- tasks. Every call fails up to ARGV[1] queued tasks with pool-deleted, so a
-- long queue is ended in bounded scripts. Running phases go on and
-- reservations may still be decided (an approved apply runs): the janitor
-- removes each pod once it is idle, and ends what is left when the deletion
-- times out (abandon).
-- KEYS[1] cfg
-- ARGV[1] batch size
-- Returns {queued tasks failed by this call, queued left, pods, busy pods,
-- deleting since (ms)}.
local c = load_cfg()
if c == nil then return fail('nopool') end
local now = now_ms()
local since = tonumber(c.del)
if not since then
  since = now
  redis.call('HSET', CFG, CF_DEL, now)
  emit(c, now, 'pool', 'deleting')
end
local batch, n = tonumber(ARGV[1]), 0
for _, t in ipairs(split(c.types)) do
  if n >= batch then break end
  for _, id in ipairs(redis.call('ZRANGE', K .. KEY_Q .. t, 0, batch - n - 1)) do
    dequeue(id, t)
    finish(c, now, id, 'failed', 'pool-deleted')
    n = n + 1
  end
end
local left = 0
for _, t in ipairs(split(c.types)) do left = left + redis.call('ZCARD', K .. KEY_Q .. t) end
return {n, left, redis.call('ZCARD', K .. KEY_PODS), tonumber(redis.call('HGET', N, 'busy') or '0'), since}
