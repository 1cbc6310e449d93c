-- version: the pool's change token, in O(1). Every change a snapshot shows
-- emits an event (the last event's number) or counts in chg (lib.lua changed); a new
-- generation (Redis lost the pool, or it was declared again) changes gen.
-- The janitor compares the token with its last full pass's and skips the
-- snapshot when nothing changed (pkg/janitor rest.go).
-- KEYS[1] cfg
-- Returns {now, generation, last event, chg}.
local gen = redis.call('HGET', CFG, CF_GEN)
if not gen then return fail('nopool') end
return {now_ms(), gen, last_event(), redis.call('HGET', N, 'chg') or '0'}
