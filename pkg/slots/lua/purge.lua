-- purge: delete a deleting pool's state once it has no pods: finished tasks
-- ARGV[1] at a time (their hashes and histories), then every other key of
-- the pool. The caller calls again while the reply says more is left, so
-- no call is long. A pool already purged answers {0, 0}.
-- KEYS[1] cfg
-- ARGV[1] batch size
-- Returns {tasks deleted by this call, 1 when more is left, else 0}.
local c = load_cfg()
if c == nil then return {0, 0} end
if not c.del then return fail('podstate', 'pool is not being deleted') end
local pods = redis.call('ZCARD', K .. KEY_PODS)
if pods > 0 then return fail('busy', 'pool has ' .. pods .. ' pods') end
local ids = redis.call('ZRANGE', K .. KEY_DONE, 0, tonumber(ARGV[1]) - 1)
if #ids > 0 then
  for _, id in ipairs(ids) do redis.call('DEL', tkey(id), K .. KEY_H .. id) end
  redis.call('ZREM', K .. KEY_DONE, unpack(ids))
  return {#ids, 1}
end
-- Every task is in done by now: a queued one was failed, a running or
-- reserved one needs a pod, and the pool has none.
local keys = {CFG, N, K .. KEY_PODS, K .. KEY_QAT, K .. KEY_HB, K .. KEY_RESV, K .. KEY_DONE, K .. KEY_TOMB, K .. KEY_EV, K .. KEY_M}
for _, t in ipairs(split(c.types)) do keys[#keys + 1] = K .. KEY_Q .. t end
for i = 0, c.ncls - 1 do keys[#keys + 1] = K .. KEY_IDLE .. i end
redis.call('DEL', unpack(keys))
return {0, 0}
