-- remove_pod: the pod object is gone (or, in static pools, declared dead):
-- tombstone its uid so a late registration or heartbeat is refused, and hand
-- its work to the loss policy (plans requeued, applies and reservations failed).
-- KEYS[1] cfg
-- ARGV[1] pod, ARGV[2] uid ("" for any), ARGV[3] reason
local c = load_cfg()
if c == nil then return fail('nopool') end
local pod, uid = ARGV[1], ARGV[2]
local ph, code, why = load_pod(pod, uid, true)
-- Removing a removed incarnation again (a retry) succeeds.
if code == 'tombstoned' then return 'removed' end
if ph == nil then return fail(code, why) end
remove_pod(c, now_ms(), pod, ph, ARGV[3])
return 'removed'
