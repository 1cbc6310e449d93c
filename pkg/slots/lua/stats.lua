-- stats: a pool's counters, O(1): everything the scaler needs per call.
-- KEYS[1] cfg
-- Returns a flat field/value list.
-- Only two config fields: this runs for every pool on every scaler poll.
local c = redis.call('HMGET', CFG, 'ncls', 'types')
if not c[1] then return fail('nopool') end
local out = redis.call('HGETALL', N)
local function add(k, v) out[#out + 1] = k; out[#out + 1] = tostring(v) end
for i = 0, tonumber(c[1]) - 1 do add('idle:' .. i, redis.call('ZCARD', K .. 'idle:' .. i)) end
for _, t in ipairs(split(c[2])) do add('queued:' .. t, redis.call('ZCARD', K .. 'q:' .. t)) end
add('reserved', redis.call('ZCARD', K .. 'resv'))
add('pods', redis.call('ZCARD', K .. 'pods'))
local oldest = redis.call('ZRANGE', K .. 'qat', 0, 0, 'WITHSCORES')
if oldest[2] then add('oldest_queued', oldest[2]) end
add('now', now_ms())
return out
