package slots

import (
	"context"
	"encoding/json"
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
}

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

type rawPod struct {
	Name    string `json:"name"`
	UID     string `json:"uid"`
	St      string `json:"st"`
	Seq     int64  `json:"seq"`
	Created int64  `json:"created"`
	Reg     int64  `json:"reg"`
	CBy     string `json:"cby"`
	Idle    int64  `json:"idle"`
	HB      int64  `json:"hb"`
	Tasks   int    `json:"tasks"`
	Slots   []struct {
		I       int    `json:"i"`
		Task    string `json:"task"`
		Type    string `json:"type"`
		St      string `json:"st"`
		Phase   string `json:"phase"`
		Ep      string `json:"ep"`
		Started bool   `json:"started"`
		Attempt int    `json:"attempt"`
		Since   int64  `json:"since"`
		Cx      bool   `json:"cx"`
		Rdl     int64  `json:"rdl"`
	} `json:"slots"`
}

// Snapshot reads a whole pool atomically in one script. It is O(pods +
// queued): meant for dashboards and tests, not for the scaler's hot path.
func (s *Store) Snapshot(ctx context.Context, pool PoolID) (Snapshot, error) {
	if err := pool.Validate(); err != nil {
		return Snapshot{}, err
	}
	res, err := s.run(ctx, "snapshot", pool, SnapshotQueueList)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot of pool %s: %w", pool, err)
	}
	arr, _ := res.([]any)
	if len(arr) != 6 {
		return Snapshot{}, fmt.Errorf("snapshot of pool %s: unexpected reply", pool)
	}
	snap := Snapshot{Pool: pool, At: time.UnixMilli(asInt(arr[0])), Generation: asString(arr[3])}
	if ms := asInt(arr[4]); ms > 0 {
		snap.Declared = time.UnixMilli(ms)
	}
	for _, pj := range toStrings(arr[1]) {
		var rp rawPod
		if err := json.Unmarshal([]byte(pj), &rp); err != nil {
			return Snapshot{}, fmt.Errorf("snapshot of pool %s: decoding pod: %w", pool, err)
		}
		p := PodSnapshot{Name: rp.Name, UID: rp.UID, State: PodState(rp.St), CordonedBy: CordonOwner(rp.CBy), Seq: rp.Seq,
			Created: msTime(strconv.FormatInt(rp.Created, 10)), Registered: msTime(strconv.FormatInt(rp.Reg, 10)),
			LastBusy:          msTime(strconv.FormatInt(rp.Idle, 10)),
			HeartbeatDeadline: msTime(strconv.FormatInt(rp.HB, 10)), TasksStarted: rp.Tasks}
		for _, rs := range rp.Slots {
			ss := SlotSnapshot{Index: rs.I, Task: rs.Task, Type: TaskType(rs.Type), Phase: Phase(rs.Phase), Epoch: rs.Ep,
				Attempt: rs.Attempt, CancelRequested: rs.Cx, Since: msTime(strconv.FormatInt(rs.Since, 10)),
				ReservedUntil: msTime(strconv.FormatInt(rs.Rdl, 10))}
			switch {
			case rs.Task == "":
				ss.State = SlotIdle
			case rs.Task == "!":
				ss.State, ss.Task = SlotOrphan, ""
			case rs.St == string(StateReserved):
				ss.State = SlotReserved
			case rs.Started:
				ss.State = SlotRunning
			default:
				ss.State = SlotAssigned
			}
			p.Slots = append(p.Slots, ss)
		}
		snap.Pods = append(snap.Pods, p)
	}
	for _, q := range toStrings(arr[2]) {
		parts := strings.SplitN(q, "|", 3)
		if len(parts) != 3 {
			continue
		}
		snap.Queue = append(snap.Queue, QueuedTask{ID: parts[0], Type: TaskType(parts[1]), QueuedAt: msTime(parts[2])})
	}
	counts, _ := arr[5].([]any)
	for i := 0; i+1 < len(counts); i += 2 {
		if n := asInt(counts[i+1]); n > 0 {
			if snap.Queued == nil {
				snap.Queued = map[TaskType]int{}
			}
			snap.Queued[TaskType(asString(counts[i]))] = int(n)
		}
	}
	return snap, nil
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
