package kube

import (
	"cmp"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	corev1 "k8s.io/api/core/v1"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
)

// janitorPair is two `scaler janitor` processes with leader election, each
// restartable under the same identity.
type janitorPair struct {
	c                  *cluster
	kubeconfig         string
	redisURL, agentURL string
	// keyFile is the pool-credentials master key: agents run as their
	// pool's Redis user, as the chart installs them, so every Redis
	// restart, failover and data loss also takes their users away until
	// the janitor's next pass sets them again.
	keyFile string

	mu    sync.Mutex
	procs map[string]*exec.Cmd // identity -> running process (nil: down)
}

func startJanitorPair(c *cluster, redisURL, agentURL string) *janitorPair {
	j := &janitorPair{c: c, kubeconfig: c.kubeconfig(), redisURL: redisURL, agentURL: agentURL, procs: map[string]*exec.Cmd{},
		keyFile: filepath.Join(c.t.TempDir(), "pool-credentials-key")}
	require.NoError(c.t, os.WriteFile(j.keyFile, []byte(rand.Text()+rand.Text()), 0o600))
	for _, id := range []string{"janitor-1", "janitor-2"} {
		j.start(id)
	}
	c.t.Cleanup(func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		for id, p := range j.procs {
			if p != nil {
				_ = p.Process.Kill()
				_ = p.Wait()
				j.procs[id] = nil
			}
		}
	})
	return j
}

func (j *janitorPair) start(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.procs[id] != nil {
		return
	}
	cmd := exec.Command(scalerBin, "janitor")
	cmd.Env = append(os.Environ(), "REDIS_URL="+j.redisURL, "KEY_PREFIX="+j.c.prefix, "KUBECONFIG="+j.kubeconfig,
		"AGENT_REDIS_URL="+j.agentURL, "SYNC_INTERVAL=300ms", "LISTEN_ADDRESS="+testutil.FreeAddr(j.c.t), "LOG_LEVEL="+cmp.Or(os.Getenv("SLOTSCALER_FAULTS_JANITOR_LOG_LEVEL"), "warn"),
		"LEADER_ELECT=true", "LEADER_ELECT_NAMESPACE="+releaseNamespace, "LEADER_ELECT_IDENTITY="+id,
		"LEADER_ELECT_LEASE_DURATION=2s", "REAP_INTERVAL=200ms", "REDIS_TIMEOUT=1s", "POOL_CREDENTIALS_KEY_FILE="+j.keyFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		j.c.t.Errorf("starting %s: %v", id, err)
		return
	}
	j.procs[id] = cmd
}

// leader returns the identity holding the lease ("" if none can be read).
func (j *janitorPair) leader() string {
	l, err := j.c.kube.CoordinationV1().Leases(releaseNamespace).Get(j.c.ctx, "slotscaler-janitor", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// kill SIGKILLs a janitor and waits for it; false if it was not running.
func (j *janitorPair) kill(id string) bool {
	j.mu.Lock()
	p := j.procs[id]
	j.procs[id] = nil
	j.mu.Unlock()
	if p == nil {
		return false
	}
	_ = p.Process.Signal(syscall.SIGKILL)
	_ = p.Wait()
	return true
}

// restartAll starts whichever janitor is down.
func (j *janitorPair) restartAll() {
	for _, id := range []string{"janitor-1", "janitor-2"} {
		j.start(id)
	}
}

// faultReservationTTL is short so reservations also end by expiry.
const faultReservationTTL = 4 * time.Second

// faultExecutor logs each start and end of a phase to $FAULT_LOG, one line
// each, written with a single append (atomic for lines this short): the
// task, type, phase, epoch, pod, slot, the executor's pid and its start
// time in clock ticks (so a pid reused later is not mistaken for it), the
// time in nanoseconds, and at the end the exit code. SIGTERM (cancel) is
// trapped so a stopped executor still logs its end; only a SIGKILL (its
// agent died) leaves a start without an end. The payload is seconds to
// sleep, or "fail".
const faultExecutor = `#!/bin/sh
p=$(cat)
st=$(cut -d" " -f22 /proc/$$/stat)
id="$TASK_ID $TASK_TYPE $TASK_PHASE $TASK_EPOCH $POD_NAME $SLOT $$ $st"
fin() { echo "end $id $(date +%s%N) $1" >> "$FAULT_LOG"; }
echo "start $id $(date +%s%N)" >> "$FAULT_LOG"
trap 'fin 143; exit 143' TERM
case "$p" in
fail) rc=1 ;;
*) sleep "$p" & wait $!; rc=$? ;;
esac
fin $rc
exit $rc
`

// faultPool is the pool of a fault run: short heartbeat timeout and
// reservation TTL, agents that give up on Redis quickly.
func faultPool(script, execLog string) func(*v1alpha1.AgentPool) {
	return func(ap *v1alpha1.AgentPool) {
		ap.Spec.ReservationTTL = &metav1.Duration{Duration: faultReservationTTL}
		ap.Spec.MaxAttempts = ptr.To[int32](5)
		ap.Spec.MaxDeletionsPerMinute = ptr.To[int32](600)
		c := &ap.Spec.Template.Spec.Containers[0]
		env := []corev1.EnvVar{
			{Name: "EXECUTOR", Value: "/bin/sh " + script},
			{Name: "EXECUTOR_ENV", Value: "FAULT_LOG"},
			{Name: "FAULT_LOG", Value: execLog},
			{Name: "REDIS_TIMEOUT", Value: "700ms"},
		}
		for _, e := range c.Env {
			if e.Name != "EXECUTOR" && e.Name != "EXECUTOR_ENV" && e.Name != "GATE_DIR" {
				env = append(env, e)
			}
		}
		c.Env = env
	}
}
