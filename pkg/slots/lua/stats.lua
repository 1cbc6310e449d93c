-- stats: a pool's counters, O(1): everything the scaler needs per call.
-- KEYS[1] cfg
-- Returns a flat field/value list.
-- Only three config fields: this runs for every pool on every scaler poll.
-- The third, what the janitor found on the pool's HPA, is returned under
-- its own name (absent when unknown): the scaler decides its nudge from it.
local c = redis.call('HMGET', CFG, CF_NCLS, CF_TYPES, CF_HPATOL)
if not c[1] then return fail('nopool') end
local out = redis.call('HGETALL', N)
local function add(k, v) out[#out + 1] = k; out[#out + 1] = tostring(v) end
for i = 0, tonumber(c[1]) - 1 do add('idle:' .. i, redis.call('ZCARD', K .. KEY_IDLE .. i)) end
for _, t in ipairs(split(c[2])) do add('queued:' .. t, redis.call('ZCARD', K .. KEY_Q .. t)) end
add('reserved', redis.call('ZCARD', K .. KEY_RESV))
add('pods', redis.call('ZCARD', K .. KEY_PODS))
local oldest = redis.call('ZRANGE', K .. KEY_QAT, 0, 0, 'WITHSCORES')
if oldest[2] then add('oldest_queued', oldest[2]) end
add('now', now_ms())
if c[3] and c[3] ~= '' then add(CF_HPATOL, c[3]) end
return out
