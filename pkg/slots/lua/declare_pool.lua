-- declare_pool: create or update a pool's config.
-- KEYS[1] cfg
-- ARGV[1] generation to use when the pool has none (random, from the caller)
-- ARGV[2] policy signature
-- ARGV[3] n, the number of field/value pairs after it that make the slot
-- policy; ARGV[4..3+2n] those pairs; ARGV[4+2n..] every other field/value pair
-- Returns {generation, pending}. The slot policy cannot change while the pool
-- has pods (idle sets and counters are kept per slot class): the old policy
-- is then kept, pending says why ("" when nothing is pending), and every
-- other field is applied all the same, so one refused change never holds
-- back the rest. The caller declares again to apply the policy once the pool
-- has no pods. A new generation records when it was born (gat, Redis TIME):
-- pods older than it predate everything this Redis knows of the pool (data
-- loss).
local old = redis.call('HMGET', CFG, CF_SIG, CF_GEN)
local gen = old[2] or ARGV[1]
if not old[2] then redis.call('HSET', CFG, CF_GAT, now_ms()) end
local change = old[1] and old[1] ~= ARGV[2]
local pending = ''
if change then
  local pods = redis.call('ZCARD', K .. KEY_PODS)
  if pods > 0 then pending = 'pool has ' .. pods .. ' pods' end
end
local npol = tonumber(ARGV[3])
local args = {CF_GEN, gen}
if pending == '' then
  if change then
    -- A new policy may have other classes: drop the old class fields.
    local raw = redis.call('HKEYS', CFG)
    for _, f in ipairs(raw) do
      if string.sub(f, 1, #CF_CT) == CF_CT or string.sub(f, 1, #CF_ORD) == CF_ORD then redis.call('HDEL', CFG, f) end
    end
  end
  args[#args + 1] = CF_SIG
  args[#args + 1] = ARGV[2]
  for i = 4, 3 + 2 * npol do args[#args + 1] = ARGV[i] end
end
for i = 4 + 2 * npol, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', CFG, unpack(args))
changed()
return {gen, pending}
