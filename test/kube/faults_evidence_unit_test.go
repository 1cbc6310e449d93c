package kube

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fault run's verdict comes from check(); these cases feed it written
// evidence (executor lines, an audit log, kubelet records) and make sure
// each violation it exists for is reported, and legitimate histories not.
func TestFaultEvidenceFlagsEachViolation(t *testing.T) {
	t0 := time.Now().Add(-time.Hour)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	line := func(kind, task, typ, phase, pod string, slot, pid int, s float64, rc ...int) string {
		l := fmt.Sprintf("%s %s %s %s ep-%s %s %d %d 100 %d", kind, task, typ, phase, task, pod, slot, pid, at(s).UnixNano())
		if len(rc) > 0 {
			l += fmt.Sprintf(" %d", rc[0])
		}
		return l
	}
	audit := func(pod, user string, s float64) string {
		return fmt.Sprintf(`{"stage":"ResponseComplete","verb":"delete","user":{"username":"admin"},"impersonatedUser":{"username":%q},`+
			`"objectRef":{"resource":"pods","namespace":"faults","name":%q},"responseStatus":{"code":200},"requestReceivedTimestamp":%q}`,
			user, pod, at(s).Format(time.RFC3339Nano))
	}
	tests := map[string]struct {
		exec    []string
		audit   []string
		alive   map[string]bool // pod -> an executor was alive at its deletion
		broken  []string        // pods the nemesis broke
		decided map[string]float64
		loss    float64 // when the nemesis flushed Redis (0: never)
		want    string  // a substring of the one violation, or "" for none
	}{
		"a clean history": {
			exec: []string{line("start", "a", "plan", "plan", "p1", 1, 10, 1), line("end", "a", "plan", "plan", "p1", 1, 10, 2, 0),
				line("start", "b", "plan", "plan", "p1", 1, 11, 3), line("end", "b", "plan", "plan", "p1", 1, 11, 4, 0)},
			audit: []string{audit("p1", janitorUser, 5)},
		},
		"an apply started twice": {
			exec: []string{line("start", "pa", "plan_and_apply", "apply", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "apply", "p1", 0, 10, 2, 0),
				line("start", "pa", "plan_and_apply", "apply", "p1", 0, 11, 3), line("end", "pa", "plan_and_apply", "apply", "p1", 0, 11, 4, 0)},
			want: "the apply of task pa started 2 times",
		},
		"two executors in one slot": {
			exec: []string{line("start", "a", "plan", "plan", "p1", 2, 10, 1), line("start", "b", "plan", "plan", "p1", 2, 11, 2),
				line("end", "a", "plan", "plan", "p1", 2, 10, 3, 0), line("end", "b", "plan", "plan", "p1", 2, 11, 4, 0)},
			want: "two executors in pod slot p1#2",
		},
		"a plan running twice at once": {
			exec: []string{line("start", "a", "plan", "plan", "p1", 1, 10, 1), line("start", "a", "plan", "plan", "p2", 1, 11, 2),
				line("end", "a", "plan", "plan", "p1", 1, 10, 3, 0), line("end", "a", "plan", "plan", "p2", 1, 11, 4, 0)},
			want: "two plans of task a",
		},
		"the janitor deleted a pod running an executor": {
			exec:  []string{line("start", "a", "plan", "plan", "p1", 1, 10, 1)},
			audit: []string{audit("p1", janitorUser, 2)},
			alive: map[string]bool{"p1": true},
			want:  "the janitor deleted pod p1",
		},
		"someone else deleted a pod running an executor": {
			exec:  []string{line("start", "a", "plan", "plan", "p1", 1, 10, 1)},
			audit: []string{audit("p1", "", 2)},
			alive: map[string]bool{"p1": true},
		},
		"the janitor deleted a pod whose agent the nemesis broke": {
			exec:   []string{line("start", "a", "plan", "plan", "p1", 1, 10, 1)},
			audit:  []string{audit("p1", janitorUser, 2)},
			alive:  map[string]bool{"p1": true},
			broken: []string{"p1"},
		},
		"the janitor deleted a pod holding a reservation": {
			exec:  []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 0)},
			audit: []string{audit("p1", janitorUser, 4)},
			want:  "slot 0 was reserved for the apply of pa",
		},
		"a reservation ended by a rejection": {
			exec:    []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 0)},
			audit:   []string{audit("p1", janitorUser, 4)},
			decided: map[string]float64{"pa": 3.5},
		},
		"a reservation that expired": {
			exec:  []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 0)},
			audit: []string{audit("p1", janitorUser, 2+faultReservationTTL.Seconds()+0.1)},
		},
		"a deletion just before the earliest expiry": {
			exec:  []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 0)},
			audit: []string{audit("p1", janitorUser, 2+faultReservationTTL.Seconds()-0.1)},
			want:  "slot 0 was reserved for the apply of pa",
		},
		"a store loss during the plan": {
			exec:  []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 0)},
			audit: []string{audit("p1", janitorUser, 4)},
			loss:  1.5,
		},
		"a failed plan reserves nothing": {
			exec:  []string{line("start", "pa", "plan_and_apply", "plan", "p1", 0, 10, 1), line("end", "pa", "plan_and_apply", "plan", "p1", 0, 10, 2, 1)},
			audit: []string{audit("p1", janitorUser, 4)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEvidence(t)
			require.NoError(t, os.WriteFile(e.execLog, []byte(strings.Join(tc.exec, "\n")+"\n"), 0o644))
			require.NoError(t, os.WriteFile(e.auditLog, []byte(strings.Join(tc.audit, "\n")+"\n"), 0o644))
			e.readLocked()
			for pod, alive := range tc.alive {
				rec := deletionRecord{at: at(2)}
				if alive {
					for _, x := range e.order {
						if x.pod == pod {
							rec.alive = append(rec.alive, x)
						}
					}
				}
				e.deletions[pod] = rec
			}
			n := &nemesis{counts: map[string]int{}}
			for _, p := range tc.broken {
				n.breakPodNamed(p)
			}
			if tc.loss > 0 {
				n.events = append(n.events, nemEvent{at: at(tc.loss), kind: "redis-flush"})
			}
			d := &driver{tasks: map[string]*drivenTask{}}
			for task, s := range tc.decided {
				d.tasks[task] = &drivenTask{id: task, decided: at(s)}
			}
			r := e.check(n, d, faultReservationTTL)
			if tc.want == "" {
				assert.Empty(t, r.violations)
				return
			}
			require.Len(t, r.violations, 1, "%v", r.violations)
			assert.Contains(t, r.violations[0], tc.want)
		})
	}
}

// podDeleting records the executors alive at the moment, by their pids.
func TestFaultEvidenceSeesWhichExecutorsAreAlive(t *testing.T) {
	e := newEvidence(t)
	self := fmt.Sprintf("%d", os.Getpid())
	stat, err := os.ReadFile("/proc/self/stat")
	require.NoError(t, err)
	s := string(stat)
	ticks := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[19]
	now := time.Now().UnixNano()
	log := fmt.Sprintf("start a plan plan ep p1 1 %s %s %d\nstart b plan plan ep p1 2 %s 1 %d\n", self, ticks, now, self, now)
	require.NoError(t, os.WriteFile(e.execLog, []byte(log), 0o644))
	e.podDeleting(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1"}})
	rec := e.deletions["p1"]
	require.Len(t, rec.alive, 1, "this process is alive; the same pid with another start time is not")
	assert.Equal(t, "a", rec.alive[0].task)
}
