package slots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SlotState is what a slot is doing, as shown to people.
type SlotState string

const (
	SlotIdle     SlotState = "idle"
	SlotAssigned SlotState = "assigned" // in the agent's inbox, not started
	SlotRunning  SlotState = "running"
	SlotReserved SlotState = "reserved"
	SlotOrphan   SlotState = "orphan" // busy with work Redis lost (after data loss)
)

// Snapshot is every pod, slot and queued task of a pool at one instant.
type Snapshot struct {
	Pool PoolID
	At   time.Time
	Pods []PodSnapshot
	// Queue lists the first SnapshotQueueList queued tasks in dispatch
	// order; Queued counts every queued task by type (types with none
	// left out).
	Queue  []QueuedTask
	Queued map[TaskType]int
	// Generation is the pool's current generation in Redis, and Declared
	// when that generation was declared (Redis TIME). A pod object older
	// than Declared predates everything this Redis knows of the pool: Redis
	// lost its data (or the pool was deleted and declared again), and that
	// pod's agent may still run work it will re-register with.
	Generation string
	Declared   time.Time
	// Changes is the pool's change token when the snapshot began (see
	// Version): a later Version with the same Generation and Changes
	// means nothing the snapshot shows has changed since, heartbeat
	// deadlines aside.
	Changes string
}

// Version is a pool's change token, read in O(1): every change of what a
// Snapshot shows (pods registered, removed, lost, cordoned, drained; slots
// taken and freed; tasks queued, started, reserved, ended; the pool
// declared) emits an event or counts as a change without one (lib.lua
// changed), and a new generation (Redis lost the pool) changes Generation.
// Heartbeats that only move deadlines are no change: an expired one is
// the reaper's event. The janitor skips its snapshot of a pool at rest
// with it.
type Version struct {
	At         time.Time // Redis's clock
	Generation string
	Changes    string // "<last event>.<chg>"
}

// Version reads a pool's change token (one script call, O(1)).
func (s *Store) Version(ctx context.Context, pool PoolID) (Version, error) {
	res, err := s.run(ctx, "version", pool)
	if err != nil {
		return Version{}, fmt.Errorf("version of pool %s: %w", pool, err)
	}
	arr, _ := res.([]any)
	if len(arr) != 4 {
		return Version{}, fmt.Errorf("version of pool %s: unexpected reply", pool)
	}
	return Version{At: time.UnixMilli(asInt(arr[0])), Generation: asString(arr[1]),
		Changes: changes(arr[2], arr[3])}, nil
}

func changes(event, chg any) string { return asString(event) + "." + asString(chg) }

// SnapshotPageReads bounds the reads of one snapshot script: Redis runs
// nothing else meanwhile. A pod costs 2 (its record, its heartbeat), each
// task it holds 1 more, a queued task listed 1, so a page is 30 idle pods
// or 12 pods of three busy slots, some 0.3 ms (BenchmarkSlowestScript),
// however big the pool. (The first page lists the queue: SnapshotQueueList
// reads, so it holds one pod.)
const SnapshotPageReads = 60

// SnapshotQueueList bounds the queued tasks a Snapshot lists: the
// snapshot is one script, and Redis runs nothing else meanwhile, so a
// queue of 10,000 must not cost 10,000 reads (the counts are whole).
const SnapshotQueueList = 100

// QueuedTotal sums the queue over types.
func (s Snapshot) QueuedTotal() int {
	n := 0
	for _, v := range s.Queued {
		n += v
	}
	return n
}

// PodSnapshot is one pod and its slots.
type PodSnapshot struct {
	Name  string
	UID   string
	State PodState
	// CordonedBy says who cordoned a cordoned pod (or, for an expected
	// record of a stopping pod, who will own its cordon).
	CordonedBy CordonOwner
	Seq        int64
	Created    time.Time
	Registered time.Time
	// LastBusy is when the pod's last busy slot became idle (zero if it
	// never ran work): the janitor's idleFor counts from IdleSince.
	LastBusy          time.Time
	HeartbeatDeadline time.Time
	// TasksStarted counts the tasks this pod started: claims of a plan
	// phase (an apply belongs to its plan's task, on the same pod, and is
	// not counted again; a plan requeued elsewhere counts there too). The
	// janitor recycles a pod after spec.recycle.afterTasks. A record
	// rebuilt after Redis lost its data starts again at 0.
	TasksStarted int
	Slots        []SlotSnapshot
}

// Busy reports whether any slot holds work.
func (p PodSnapshot) Busy() bool {
	for _, s := range p.Slots {
		if s.State != SlotIdle {
			return true
		}
	}
	return false
}

// IdleSince is when the pod last became idle: when its last busy slot
// freed, or when it registered (or was created) if it never ran work.
func (p PodSnapshot) IdleSince() time.Time {
	for _, t := range []time.Time{p.LastBusy, p.Registered} {
		if !t.IsZero() {
			return t
		}
	}
	return p.Created
}

// SlotSnapshot is one slot.
type SlotSnapshot struct {
	Index           int
	State           SlotState
	Task            string
	Type            TaskType
	Phase           Phase
	Epoch           string
	Attempt         int
	Since           time.Time
	CancelRequested bool
	ReservedUntil   time.Time
}

// QueuedTask is one waiting task.
type QueuedTask struct {
	ID       string
	Type     TaskType
	QueuedAt time.Time
}

// Snapshot reads a whole pool, a page of pods per script call (in the
// order the pods were first recorded), the pool-level part (queue, counts,
// generation, change token) with the first page. It is O(pods + queued)
// in all, but no one call holds Redis for long.
//
// The pages are read at different moments, so the snapshot is not one
// instant: a pod may be shown as it was a few pages ago. That is safe for
// its readers: the dashboard shows it, and the janitor acts on a pod only
// through scripts that check the pod's state again atomically (the drain,
// its deletion's fence, refuses a pod with a busy or reserved slot; cordon,
// uncordon and remove check the state and the uid), so a stale page can
// delay an action, never make a wrong one happen. A single-call snapshot
// was already stale by the time it was acted on. What a decision reads
// across pods comes whole from one call: the generation and its birth (the
// data-loss hold) and the counts are the first page's, and a generation
// change between pages (Redis lost the pool meanwhile) starts the
// snapshot over, so no snapshot mixes pods of two generations. A pod
// recorded again under its name between pages (a new incarnation, a higher
// seq) shows once, as the later record.
func (s *Store) Snapshot(ctx context.Context, pool PoolID) (Snapshot, error) {
	if err := pool.Validate(); err != nil {
		return Snapshot{}, err
	}
	for range 3 {
		snap, again, err := s.snapshot(ctx, pool)
		if err != nil || !again {
			return snap, err
		}
	}
	return Snapshot{}, fmt.Errorf("snapshot of pool %s: its generation kept changing while it was read", pool)
}

// snapshot reads every page once; again reports a generation change
// between pages.
func (s *Store) snapshot(ctx context.Context, pool PoolID) (snap Snapshot, again bool, err error) {
	seen := map[string]int{} // pod name -> index in snap.Pods
	cursor := ""
	for page := 0; ; page++ {
		limit := SnapshotQueueList
		if page > 0 {
			limit = 0
		}
		res, err := s.run(ctx, "snapshot", pool, limit, cursor, SnapshotPageReads)
		if err != nil {
			return Snapshot{}, false, fmt.Errorf("snapshot of pool %s: %w", pool, err)
		}
		arr, _ := res.([]any)
		if len(arr) != 9 {
			return Snapshot{}, false, fmt.Errorf("snapshot of pool %s: unexpected reply", pool)
		}
		if page == 0 {
			snap = Snapshot{Pool: pool, At: time.UnixMilli(asInt(arr[0])), Generation: asString(arr[3]),
				Changes: changes(arr[7], arr[8])}
			if ms := asInt(arr[4]); ms > 0 {
				snap.Declared = time.UnixMilli(ms)
			}
			snap.readQueue(arr[2], arr[5])
		} else if asString(arr[3]) != snap.Generation {
			return Snapshot{}, true, nil
		}
		rows, _ := arr[1].([]any)
		for _, row := range rows {
			p, err := decodePod(row)
			if err != nil {
				return Snapshot{}, false, fmt.Errorf("snapshot of pool %s: %w", pool, err)
			}
			if i, ok := seen[p.Name]; ok {
				snap.Pods[i] = p
				continue
			}
			seen[p.Name] = len(snap.Pods)
			snap.Pods = append(snap.Pods, p)
		}
		if cursor = asString(arr[6]); cursor == "" {
			return snap, false, nil
		}
	}
}

// decodePod reads one pod of a snapshot page (snapshot.lua says how).
func decodePod(v any) (PodSnapshot, error) {
	f := toStrings(v)
	const podFields, taskFields = 10, 9
	if len(f) < podFields {
		return PodSnapshot{}, fmt.Errorf("malformed pod record %q", f)
	}
	seq, _ := strconv.ParseInt(f[3], 10, 64)
	tasks, _ := strconv.Atoi(f[8])
	p := PodSnapshot{Name: f[0], UID: f[1], State: PodState(f[2]), Seq: seq, Created: msTime(f[4]), Registered: msTime(f[5]),
		CordonedBy: CordonOwner(f[6]), LastBusy: msTime(f[7]), TasksStarted: tasks, HeartbeatDeadline: msTime(f[9])}
	for i := podFields; i < len(f); {
		ss := SlotSnapshot{Index: len(p.Slots), Task: f[i]}
		i++
		switch ss.Task {
		case "":
			ss.State = SlotIdle
		case "!":
			ss.State, ss.Task = SlotOrphan, ""
		default:
			if i+taskFields > len(f) {
				return PodSnapshot{}, fmt.Errorf("malformed pod record %q", f)
			}
			t := f[i : i+taskFields]
			i += taskFields
			ss.Type, ss.Phase, ss.Epoch = TaskType(t[0]), Phase(t[2]), t[3]
			ss.Attempt, _ = strconv.Atoi(t[5])
			ss.Since, ss.CancelRequested, ss.ReservedUntil = msTime(t[6]), t[7] == "1", msTime(t[8])
			switch {
			case t[1] == string(StateReserved):
				ss.State = SlotReserved
			case t[4] == "1":
				ss.State = SlotRunning
			default:
				ss.State = SlotAssigned
			}
		}
		p.Slots = append(p.Slots, ss)
	}
	return p, nil
}

// readQueue fills the queue list and the counts of the first page.
func (snap *Snapshot) readQueue(list, counts any) {
	for _, q := range toStrings(list) {
		parts := strings.SplitN(q, "|", 3)
		if len(parts) != 3 {
			continue
		}
		snap.Queue = append(snap.Queue, QueuedTask{ID: parts[0], Type: TaskType(parts[1]), QueuedAt: msTime(parts[2])})
	}
	c, _ := counts.([]any)
	for i := 0; i+1 < len(c); i += 2 {
		if n := asInt(c[i+1]); n > 0 {
			if snap.Queued == nil {
				snap.Queued = map[TaskType]int{}
			}
			snap.Queued[TaskType(asString(c[i]))] = int(n)
		}
	}
}

// Event is one state change in a pool's event stream.
type Event struct {
	Cursor  string // resume after this event
	At      time.Time
	Kind    string // "task", "pod", "reaper", "pool" (its deletion began)
	Subject string // task id or pod name
	Fields  map[string]string
}

// EventPage is a batch of events after a cursor.
type EventPage struct {
	Events []Event
	// Next is the cursor to pass next time (unchanged when nothing is new).
	Next string
	// Gap is true when events after the given cursor were dropped by the
	// stream's cap (or Redis lost its data): the consumer missed something
	// and should re-read state (Snapshot) before following again.
	Gap bool
}

// Events returns up to limit events after cursor ("" for the oldest kept).
// Cursors are "<generation>:<sequence>", so a cursor from before Redis lost
// its data is recognised as a gap.
func (s *Store) Events(ctx context.Context, pool PoolID, cursor string, limit int) (EventPage, error) {
	if err := pool.Validate(); err != nil {
		return EventPage{}, err
	}
	if limit <= 0 || limit > 10000 {
		return EventPage{}, fmt.Errorf("events of pool %s: limit %d must be 1-10000", pool, limit)
	}
	var after uint64
	var curGen string
	if cursor != "" {
		g, seq, ok := strings.Cut(cursor, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil {
			return EventPage{}, fmt.Errorf("events of pool %s: malformed cursor %q", pool, cursor)
		}
		curGen, after = g, n
	}
	base := s.base(pool)
	pipe := s.rdb.Pipeline()
	genCmd := pipe.HGet(ctx, base+keyCfg, cfgGeneration)
	firstCmd := pipe.XRangeN(ctx, base+keyEvents, "-", "+", 1)
	start := "-"
	if cursor != "" {
		start = "(0-" + strconv.FormatUint(after, 10)
	}
	pageCmd := pipe.XRangeN(ctx, base+keyEvents, start, "+", int64(limit))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return EventPage{}, fmt.Errorf("reading events of pool %s: %w", pool, err)
	}
	gen, err := genCmd.Result()
	if errors.Is(err, redis.Nil) {
		return EventPage{}, fmt.Errorf("%w: %s", ErrPoolNotFound, pool)
	}
	page := EventPage{Next: cursor}
	msgs := pageCmd.Val()
	if cursor != "" && curGen != gen {
		// Another generation: everything before is gone; start over.
		page.Gap = true
		msgs, err = s.rdb.XRangeN(ctx, base+keyEvents, "-", "+", int64(limit)).Result()
		if err != nil {
			return EventPage{}, fmt.Errorf("reading events of pool %s: %w", pool, err)
		}
		after = 0
	} else if cursor != "" {
		if first := firstCmd.Val(); len(first) > 0 && seqOf(first[0].ID) > after+1 {
			page.Gap = true
		}
	}
	for _, m := range msgs {
		seq := seqOf(m.ID)
		e := Event{Cursor: gen + ":" + strconv.FormatUint(seq, 10), Fields: map[string]string{}}
		for k, v := range m.Values {
			sv, _ := v.(string)
			switch k {
			case "at":
				e.At = msTime(sv)
			default:
				e.Fields[k] = sv
			}
		}
		for _, k := range []string{"task", "pod", "reaper", "pool"} {
			if v, ok := e.Fields[k]; ok {
				e.Kind, e.Subject = k, v
				delete(e.Fields, k)
				break
			}
		}
		page.Events = append(page.Events, e)
		page.Next = e.Cursor
	}
	if page.Next == "" {
		page.Next = gen + ":0"
	}
	return page, nil
}

func seqOf(id string) uint64 {
	_, seq, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseUint(seq, 10, 64)
	return n
}

// EventStreamKey is the Redis key of a pool's event stream, the stream
// Events reads. Its entries' ids are "0-<sequence>" (lib.lua's emit). The
// notifier (pkg/notify) follows it with consumer groups of its own: the
// groups live in the stream, so they go with it when the pool is purged.
func (s *Store) EventStreamKey(pool PoolID) string { return s.base(pool) + keyEvents }

// Prefix is the installation's key prefix (DefaultPrefix when none was given).
func (s *Store) Prefix() string { return s.prefix }
