package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slotscaler/slotscaler/internal/testutil"
)

// evidence is what a fault run is judged by, none of it read from the
// store: the executors' log, the kubelet's record of the executors alive
// when each pod got its deletionTimestamp, and the API server's audit log.
type evidence struct {
	t        testing.TB
	script   string // the executor
	execLog  string
	auditLog string

	mu        sync.Mutex
	offset    int64 // of execLog read so far
	partial   []byte
	execs     map[execKey]*execRec
	order     []*execRec
	deletions map[string]deletionRecord // pod name -> when the kubelet saw it deleted
	done      chan struct{}
	stopped   chan struct{}
}

// execKey names one executor process: its pid and start time in clock
// ticks (a pid is reused; the pair is not).
type execKey struct {
	pid   int
	ticks string
}

// execRec is one executor's life from its own log lines.
type execRec struct {
	key                          execKey
	task, typ, phase, epoch, pod string
	slot                         int
	start, end                   time.Time
	ended                        bool
	rc                           int
	lastAlive                    time.Time // last time the sampler saw the process alive
}

func (e *execRec) String() string {
	return fmt.Sprintf("%s %s epoch %s on %s slot %d pid %d", e.task, e.phase, e.epoch, e.pod, e.slot, e.key.pid)
}

// until is when the executor was last known to be running: its end line,
// or the last time it was seen alive.
func (e *execRec) until() time.Time {
	if e.ended {
		return e.end
	}
	if e.lastAlive.After(e.start) {
		return e.lastAlive
	}
	return e.start
}

type deletionRecord struct {
	at    time.Time
	alive []*execRec
}

func newEvidence(t testing.TB) *evidence {
	dir := t.TempDir()
	e := &evidence{t: t, script: filepath.Join(dir, "run-task"), execLog: filepath.Join(dir, "executors.log"),
		auditLog: filepath.Join(dir, "audit.log"), execs: map[execKey]*execRec{}, deletions: map[string]deletionRecord{},
		done: make(chan struct{}), stopped: make(chan struct{})}
	testutil.WriteExecutable(t, e.script, strings.NewReader(faultExecutor))
	if err := os.WriteFile(e.execLog, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	return e
}

// startSampler reads new executor log lines and checks which open
// executors are alive, every 20 ms, until stop.
func (e *evidence) startSampler(ctx context.Context) {
	go func() {
		defer close(e.stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-e.done:
				return
			case <-tick.C:
			}
			e.mu.Lock()
			e.readLocked()
			now := time.Now()
			for _, x := range e.order {
				if !x.ended && processAlive(x.key) {
					x.lastAlive = now
				}
			}
			e.mu.Unlock()
		}
	}()
}

func (e *evidence) stop() {
	close(e.done)
	<-e.stopped
	e.mu.Lock()
	e.readLocked()
	e.mu.Unlock()
}

// readLocked parses the executor log lines written since the last read.
func (e *evidence) readLocked() {
	f, err := os.Open(e.execLog)
	if err != nil {
		e.t.Errorf("reading the executor log: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.Seek(e.offset, 0); err != nil {
		e.t.Errorf("reading the executor log: %v", err)
		return
	}
	var buf bytes.Buffer
	n, _ := buf.ReadFrom(f)
	e.offset += n
	data := append(e.partial, buf.Bytes()...)
	last := bytes.LastIndexByte(data, '\n')
	if last < 0 {
		e.partial = data
		return
	}
	e.partial = append([]byte(nil), data[last+1:]...)
	for _, line := range strings.Split(string(data[:last]), "\n") {
		e.parseLocked(line)
	}
}

// parseLocked reads "start|end task type phase epoch pod slot pid ticks ns [rc]".
func (e *evidence) parseLocked(line string) {
	f := strings.Fields(line)
	if len(f) < 10 {
		e.t.Errorf("executor log: malformed line %q", line)
		return
	}
	pid, _ := strconv.Atoi(f[7])
	slot, _ := strconv.Atoi(f[6])
	ns, _ := strconv.ParseInt(f[9], 10, 64)
	key := execKey{pid: pid, ticks: f[8]}
	switch f[0] {
	case "start":
		x := &execRec{key: key, task: f[1], typ: f[2], phase: f[3], epoch: f[4], pod: f[5], slot: slot, start: time.Unix(0, ns)}
		e.execs[key] = x
		e.order = append(e.order, x)
	case "end":
		x := e.execs[key]
		if x == nil {
			e.t.Errorf("executor log: end without start: %q", line)
			return
		}
		x.ended, x.end = true, time.Unix(0, ns)
		if len(f) > 10 {
			x.rc, _ = strconv.Atoi(f[10])
		}
	default:
		e.t.Errorf("executor log: malformed line %q", line)
	}
}

// processAlive reports whether the process with this pid and start time
// runs (a zombie does not).
func processAlive(k execKey) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", k.pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state), f[19] field 22 (start time)
	return len(f) > 19 && f[0] != "Z" && f[19] == k.ticks
}

// podDeleting runs in the kubelet when a pod gets its deletionTimestamp,
// before it kills the pod's agent: it records which executors of the pod
// are alive at that moment.
func (e *evidence) podDeleting(pod *corev1.Pod) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, seen := e.deletions[pod.Name]; seen {
		return
	}
	e.readLocked()
	rec := deletionRecord{at: time.Now()}
	for _, x := range e.order {
		if x.pod == pod.Name && !x.ended && processAlive(x.key) {
			rec.alive = append(rec.alive, x)
		}
	}
	e.deletions[pod.Name] = rec
}

// auditDelete is one pod DELETE the API server answered, from its audit log.
type auditDelete struct {
	pod, by string
	at      time.Time
	code    int
}

const janitorUser = "system:serviceaccount:" + releaseNamespace + ":" + janitorSA

func (e *evidence) auditDeletes(ns string) []auditDelete {
	f, err := os.Open(e.auditLog)
	if err != nil {
		e.t.Errorf("reading the API server's audit log: %v", err)
		return nil
	}
	defer f.Close()
	var out []auditDelete
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct {
			Stage     string `json:"stage"`
			Verb      string `json:"verb"`
			User      struct{ Username string }
			Imp       *struct{ Username string } `json:"impersonatedUser"`
			ObjectRef struct {
				Resource, Subresource, Namespace, Name string
			} `json:"objectRef"`
			ResponseStatus struct{ Code int } `json:"responseStatus"`
			StageTimestamp time.Time          `json:"stageTimestamp"`
			Received       time.Time          `json:"requestReceivedTimestamp"`
		}
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Errorf("audit log: %v", err)
			continue
		}
		if ev.Stage != "ResponseComplete" || ev.Verb != "delete" || ev.ObjectRef.Resource != "pods" ||
			ev.ObjectRef.Subresource != "" || ev.ObjectRef.Namespace != ns {
			continue
		}
		by := ev.User.Username
		if ev.Imp != nil && ev.Imp.Username != "" {
			by = ev.Imp.Username
		}
		out = append(out, auditDelete{pod: ev.ObjectRef.Name, by: by, at: ev.Received, code: ev.ResponseStatus.Code})
	}
	return out
}

// report is the verdict on a run.
type report struct {
	summary    string
	violations []string
}

// check judges the run: no apply started twice, no two executors at once in
// one pod slot, no plan of a task running twice at once, no pod deleted by
// the janitor while an executor of it was alive or its slot 0 was reserved
// (unless the nemesis itself broke that pod).
func (e *evidence) check(n *nemesis, d *driver, ttl time.Duration) report {
	e.mu.Lock()
	defer e.mu.Unlock()
	var r report
	bad := func(f string, a ...any) { r.violations = append(r.violations, fmt.Sprintf(f, a...)) }

	phases := map[string]int{}
	applies := map[string][]*execRec{}
	bySlot := map[string][]*execRec{}
	plans := map[string][]*execRec{}
	for _, x := range e.order {
		phases[x.phase]++
		switch x.phase {
		case "apply":
			applies[x.task] = append(applies[x.task], x)
		case "plan":
			plans[x.task] = append(plans[x.task], x)
		}
		k := x.pod + "#" + strconv.Itoa(x.slot)
		bySlot[k] = append(bySlot[k], x)
	}
	for task, xs := range applies {
		if len(xs) > 1 {
			bad("the apply of task %s started %d times: %v", task, len(xs), xs)
		}
	}
	overlap := func(what string, xs []*execRec) {
		slices.SortFunc(xs, func(a, b *execRec) int { return a.start.Compare(b.start) })
		for i := 1; i < len(xs); i++ {
			for j := range i {
				if xs[i].start.Before(xs[j].until()) {
					bad("%s: %v started while %v still ran (until %v)", what, xs[i], xs[j], xs[j].until().Format(time.StampMicro))
				}
			}
		}
	}
	for k, xs := range bySlot {
		overlap("two executors in pod slot "+k, xs)
	}
	for task, xs := range plans {
		overlap("two plans of task "+task, xs)
	}

	// Pods the janitor deleted, by the API server's audit.
	deletes := e.auditDeletes("faults")
	byJanitor := 0
	for _, del := range deletes {
		if del.by != janitorUser || (del.code != 200 && del.code != 202) {
			continue
		}
		byJanitor++
		if n.disrupted(del.pod) {
			continue // the nemesis broke this pod (agent killed, frozen, pod deleted): losing its work is the design
		}
		if rec, ok := e.deletions[del.pod]; ok && len(rec.alive) > 0 {
			bad("the janitor deleted pod %s at %s while executors ran there: %v", del.pod, del.at.Format(time.StampMicro), rec.alive)
		}
		// A plan_and_apply whose plan succeeded on the pod reserves slot 0
		// until its apply starts, a decision, expiry or data loss ends it.
		for _, x := range e.order {
			if x.pod != del.pod || x.typ != "plan_and_apply" || x.phase != "plan" || !x.ended || x.rc != 0 {
				continue
			}
			// The deadline is set when the result is recorded, after the
			// end line: the reservation cannot have expired before end+ttl.
			ends := []time.Time{x.end.Add(ttl)}
			for _, a := range applies[x.task] {
				ends = append(ends, a.start)
			}
			if t, ok := d.decidedAt(x.task); ok {
				ends = append(ends, t)
			}
			// A store loss from the plan's start on may have lost the task
			// or its recorded result: the reservation may never have been
			// held (the 30-minute soak's false alarms before this).
			if t, ok := n.storeLossAfter(x.start); ok {
				ends = append(ends, t)
			}
			held := slices.MinFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
			if del.at.After(x.end.Add(time.Second)) && del.at.Before(held) {
				bad("the janitor deleted pod %s at %s while slot 0 was reserved for the apply of %s (plan ended %s)",
					del.pod, del.at.Format(time.StampMicro), x.task, x.end.Format(time.StampMicro))
			}
		}
	}
	r.summary = fmt.Sprintf("%d executors (%v), %d pods deleted by the janitor, %d pod deletions seen by the kubelet, %d tasks driven (%s)",
		len(e.order), phases, byJanitor, len(e.deletions), d.total(), d.summary())
	return r
}
