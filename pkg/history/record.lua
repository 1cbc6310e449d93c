-- record: append one sample to a pool's history, at most one per interval,
-- and write the coarse sample of a coarse interval once it is complete.
-- Constant work per call: the coarse sample reads at most one coarse
-- interval's worth of the newest fine samples.
--
-- KEYS[1] the fine list, KEYS[2] the coarse list (names.go)
-- ARGV[1] the sample (sample.go's encoding; its first token is its time, Unix ms)
-- ARGV[2] the recording interval (ms)
-- ARGV[3] the fine list's cap (samples; it may hold a tenth more)
-- ARGV[4] the coarse interval (ms)
-- ARGV[5] the coarse list's cap (samples)
-- ARGV[6] the lists' time to live (ms): a deleted pool's history expires
-- ARGV[7] how a coarse sample combines each field: one letter per field,
--         'm' the mean (two decimals), 'x' the maximum
-- Returns 1 when the sample was written, 0 when its interval already has
-- one (another recorder's, or a clock that went back): one writer per
-- pool per interval, whatever the number of recorders.

local fine, coarse = KEYS[1], KEYS[2]
local sample = ARGV[1]
local step, fine_cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local cstep, coarse_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, agg = tonumber(ARGV[6]), ARGV[7]
local nf = string.len(agg)

local function time_of(s) return tonumber(string.match(s, '^(%d+)')) end
local function tokens(s)
  local t = {}
  for w in string.gmatch(s, '%S+') do t[#t + 1] = w end
  return t
end
local function r2(x) return tostring(math.floor(x * 100 + 0.5) / 100) end

local t = time_of(sample)
if not t then return redis.error_reply('history: sample without a time') end

local last = redis.call('LINDEX', fine, -1)
-- The list's time to live is set when it starts and renewed with every
-- coarse sample, not with every sample: each call inside a script costs.
local renew = not last
if last then
  local lt = time_of(last) or 0
  if math.floor(lt / step) >= math.floor(t / step) then return 0 end
  local cb = math.floor(lt / cstep)
  if cb < math.floor(t / cstep) then
    -- The newest sample's coarse interval is over: its mean goes to the
    -- coarse list. Written once: later samples of this call's interval
    -- are refused above, and later intervals see a newer last sample.
    local recent = redis.call('LRANGE', fine, -(math.ceil(cstep / step) + 1), -1)
    local acc, n, qsum, qorder = {}, 0, {}, {}
    for _, s in ipairs(recent) do
      local tk = tokens(s)
      if math.floor((tonumber(tk[1]) or 0) / cstep) == cb then
        n = n + 1
        local j = 2
        for i = 1, nf do
          local v = 0
          if tk[j] and not string.find(tk[j], ':', 1, true) then
            v = tonumber(tk[j]) or 0
            j = j + 1
          end
          if string.sub(agg, i, i) == 'x' then
            if acc[i] == nil or v > acc[i] then acc[i] = v end
          else
            acc[i] = (acc[i] or 0) + v
          end
        end
        for k = j, #tk do
          local ty, v = string.match(tk[k], '^(.+):([^:]+)$')
          if ty then
            if not qsum[ty] then qsum[ty] = 0; qorder[#qorder + 1] = ty end
            qsum[ty] = qsum[ty] + (tonumber(v) or 0)
          end
        end
      end
    end
    local out = { string.format('%.0f', cb * cstep) }
    for i = 1, nf do
      if string.sub(agg, i, i) == 'x' then
        out[#out + 1] = tostring(acc[i])
      else
        out[#out + 1] = r2(acc[i] / n)
      end
    end
    for _, ty in ipairs(qorder) do out[#out + 1] = ty .. ':' .. r2(qsum[ty] / n) end
    redis.call('RPUSH', coarse, table.concat(out, ' '))
    redis.call('LTRIM', coarse, -coarse_cap, -1)
    redis.call('PEXPIRE', coarse, ttl)
    renew = true
  end
end
-- The fine list grows up to a tenth past its cap and is then cut back to
-- it: one trim per that many samples, not one per sample.
if redis.call('RPUSH', fine, sample) > fine_cap + math.floor(fine_cap / 10) then
  redis.call('LTRIM', fine, -fine_cap, -1)
end
if renew then redis.call('PEXPIRE', fine, ttl) end
return 1
