-- declare_pool: create or update a pool's config.
-- KEYS[1] cfg
-- ARGV[1] generation to use when the pool has none (random, from the caller)
-- ARGV[2] policy signature; ARGV[3..] config field/value pairs
-- Returns the pool's generation. Refuses to change the slot policy while the
-- pool has pods: idle sets and counters are kept per slot class. A new
-- generation records when it was born (gat, Redis TIME): pods older than it
-- predate everything this Redis knows of the pool (data loss).
local old = redis.call('HMGET', CFG, 'sig', 'gen')
if old[1] and old[1] ~= ARGV[2] and redis.call('ZCARD', K .. 'pods') > 0 then
  return fail('policy', 'pool has ' .. redis.call('ZCARD', K .. 'pods') .. ' pods')
end
local gen = old[2] or ARGV[1]
if not old[2] then redis.call('HSET', CFG, 'gat', now_ms()) end
if old[1] and old[1] ~= ARGV[2] then
  -- A new policy may have other classes: drop the old class fields.
  local raw = redis.call('HKEYS', CFG)
  for _, f in ipairs(raw) do
    if string.sub(f, 1, 2) == 'ct' or string.sub(f, 1, 4) == 'ord_' then redis.call('HDEL', CFG, f) end
  end
end
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', CFG, 'gen', gen, 'sig', ARGV[2], unpack(args))
return gen
