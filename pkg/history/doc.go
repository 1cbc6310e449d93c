// Package history keeps each pool's recent history in Redis, for the
// dashboard's charts and its history API: desired pods, live, busy, idle,
// cordoned and draining pods, queued tasks by type, reserved slots and the
// oldest queued task's age.
//
// # Who writes
//
// The scaler (the external scaler role, --history-interval, default 10s)
// runs a Recorder. It reads every declared pool already to answer KEDA and
// runs wherever slotscaler runs, static pools included; the janitor does
// not run for static pools and the dashboard is optional. The chart runs
// the scaler with two replicas, so several recorders may write at once:
// the record script keeps the first sample of each interval of a pool and
// refuses the rest, atomically with the write, so each pool has one writer
// per interval without a lock or leader election. A replica that loses
// costs one refused script call per pool.
//
// # Cost
//
// One tick is one pipeline, one round trip per Redis node: the writes of
// the samples read in the previous tick, the pools' counters for the next
// samples (the stats script the scaler runs for KEDA), the pool registry,
// and the slot policies (for the desired count) not read in the last 30 s.
// Per pool and tick that is two O(1) scripts; samples land one tick after
// they were read, stamped with the Redis time of the read. The scaler's
// metrics collector borrows each tick's read of the counters
// (Recorder.LatestStats) rather than run the stats script of every pool
// again on a scrape (pkg/poolmetrics, Options.Stats).
//
// # Layout
//
// Two lists per pool (names.go): every sample for an hour, and one sample
// per 5 minutes for 24 hours, each the mean of the samples recorded in its
// 5 minutes (the oldest queued age: their maximum). The record script
// writes a 5-minute sample when the first sample of the next 5 minutes
// arrives, reading at most 5 minutes of samples. A sample is about 40
// bytes; a pool's history is about 30 KB at the default interval. Both
// lists expire 24 hours after the pool's last sample, so a deleted pool's
// history goes by itself. The keys are outside the pool's own key space,
// so a pool's Redis user (its agents) cannot read or write them.
package history
