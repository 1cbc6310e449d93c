package kube

// The fault-injection run. Real components as in production: a real
// redis-server (AOF on) with a replica, every component reaching it through
// a fault proxy of its own; two `scaler janitor` processes with leader
// election on the real kube-apiserver; the scaler (its reaper); the fake
// kubelet running one real agent process per pod, whose executor is a small
// shell program that logs every start and end to a file outside Redis; a
// driver submitting plans and plan_and_apply with approvals, rejections,
// cancels and replica changes; and a seeded nemesis.
//
// The checks do not trust the store. They read the executors' own log, the
// kubelet's record of which executors were alive when each pod got its
// deletionTimestamp, the API server's audit log of DELETEs (who deleted),
// and the nemesis' and driver's own logs; the store is read only to drive
// the load and, at the end, to see that every task ended.
//
// It lives in the test/kube module (not a module of its own) to share the
// real API server harness and its long first build.
//
//	SLOTSCALER_FAULTS_SEEDS     comma-separated seeds (default: a fixed set, ~2 minutes)
//	SLOTSCALER_FAULTS_DURATION  how long faults are injected per seed (default 35s)
//	SLOTSCALER_FAULTS_DATALOSS  "true"/"false" forces data-loss faults on or off
//	                            (default: on for odd seeds)
//	SLOTSCALER_FAULTS_JANITOR_LOG_LEVEL  the janitors' log level (default warn)
//
// A run with violations keeps the executors' and agents' logs in
// $TMPDIR/slotscaler-faults-<seed> (the path is logged) and prints what the
// agents of the pods named in violations said about heartbeats,
// registration and reservations.
//
// make soak SEED=… DURATION=… runs one seed for longer.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/poolcreds"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// faultSeeds is what `make test` runs: one run without data loss (every
// task must end) and one with every kind of fault.
var faultSeeds = []uint64{20261202, 20261203}

func TestFaults(t *testing.T) {
	seeds := faultSeeds
	if v := os.Getenv("SLOTSCALER_FAULTS_SEEDS"); v != "" {
		seeds = nil
		for _, f := range strings.Split(v, ",") {
			s, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("SLOTSCALER_FAULTS_SEEDS: %q is not a seed: %v", f, err)
			}
			seeds = append(seeds, s)
		}
	}
	dur := 35 * time.Second
	if v := os.Getenv("SLOTSCALER_FAULTS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SLOTSCALER_FAULTS_DURATION: %v", err)
		}
		dur = d
	}
	for _, seed := range seeds {
		dataLoss := seed%2 == 1
		switch os.Getenv("SLOTSCALER_FAULTS_DATALOSS") {
		case "true":
			dataLoss = true
		case "false":
			dataLoss = false
		}
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d, faults for %v, data loss %v (rerun: SLOTSCALER_FAULTS_SEEDS=%d SLOTSCALER_FAULTS_DURATION=%v)",
				seed, dur, dataLoss, seed, dur)
			r := newFaultRun(t, seed, dataLoss)
			r.run(dur)
		})
	}
}

// faultRun is one seeded run.
type faultRun struct {
	t        *testing.T
	seed     uint64
	dataLoss bool
	ctx      context.Context
	cancel   context.CancelFunc
	c        *cluster
	redis    *faultRedis
	janitors *janitorPair
	ns, pool string
	evidence *evidence
	nemesis  *nemesis
	driver   *driver
}

func newFaultRun(t *testing.T, seed uint64, dataLoss bool) *faultRun {
	r := &faultRun{t: t, seed: seed, dataLoss: dataLoss, ns: "faults", pool: "pool"}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	r.evidence = newEvidence(t)
	r.redis = startFaultRedis(t)
	r.c = newClusterWith(t, clusterOptions{redisURL: r.redis.proxies[compDriver].URL(), auditLog: r.evidence.auditLog})
	r.c.kubelet.setOnDeleting(r.evidence.podDeleting)
	r.c.startScalerWith(r.redis.proxies[compScaler].URL())
	r.janitors = startJanitorPair(r.c, r.redis.proxies[compJanitor].URL(), r.redis.proxies[compAgents].URL())
	rng := rand.New(rand.NewPCG(seed, 1))
	r.nemesis = &nemesis{r: r, rng: rand.New(rand.NewPCG(seed, 2)), counts: map[string]int{}}
	r.driver = &driver{r: r, rng: rng, tasks: map[string]*drivenTask{}}
	return r
}

func (r *faultRun) run(dur time.Duration) {
	t := r.t
	r.c.newPool(r.ns, r.pool, 2, faultPool(r.evidence.script, r.evidence.execLog))
	r.c.waitActive(r.ns, r.pool, 2)
	r.evidence.startSampler(r.ctx)

	load, stopLoad := context.WithCancel(r.ctx)
	driverDone := make(chan struct{})
	go func() { defer close(driverDone); r.driver.run(load) }()
	nemesisDone := make(chan struct{})
	go func() { defer close(nemesisDone); r.nemesis.run(load, dur) }()
	<-nemesisDone
	stopLoad()
	<-driverDone
	r.nemesis.heal()
	t.Logf("faults injected: %v", r.nemesis.summary())

	// Faults stopped: every task ends (or, after data loss, is gone), and
	// the pool converges to what was asked.
	r.driver.settle(2 * time.Minute)
	r.c.scaleTo(r.ns, r.pool, 2)
	r.waitConverged(2, time.Minute)
	r.evidence.stop()

	rep := r.evidence.check(r.nemesis, r.driver, faultReservationTTL)
	t.Logf("evidence: %s", rep.summary)
	r.checkPoolCredentials()
	for _, v := range rep.violations {
		t.Errorf("seed %d: %s", r.seed, v)
	}
	if len(rep.violations) > 0 {
		r.keepEvidence(rep.violations)
	}
	if !r.dataLoss {
		for _, v := range r.driver.unfinished {
			t.Errorf("seed %d: task never ended after faults stopped: %s", r.seed, v)
		}
	}
}

// checkPoolCredentials: the run's agents were their pool's Redis user, as
// the chart installs them (the janitors have a pool-credentials key), not
// the shared URL: every live agent pod takes REDIS_URL from the pool's key
// of the janitor's Secret, and that URL names the pool's user with the
// password derived from the key.
func (r *faultRun) checkPoolCredentials() {
	t, ctx := r.t, r.ctx
	pool := slots.PoolID{Namespace: r.ns, Name: r.pool}
	sec, err := r.c.kube.CoreV1().Secrets(r.ns).Get(ctx, poolcreds.DefaultSecretName, metav1.GetOptions{})
	require.NoError(t, err, "the janitor's pool Secret")
	u, err := url.Parse(string(sec.Data[r.pool]))
	require.NoError(t, err)
	key, err := os.ReadFile(r.janitors.keyFile)
	require.NoError(t, err)
	pw, _ := u.User.Password()
	assert.Equal(t, poolcreds.UserName(r.c.prefix, pool), u.User.Username(), "the agents' URL names the pool's user")
	assert.Equal(t, poolcreds.Password(key, r.c.prefix, pool), pw, "with the password derived from the master key")
	pods, err := r.c.kube.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, pods.Items)
	for _, p := range pods.Items {
		for _, e := range p.Spec.Containers[0].Env {
			if e.Name == "REDIS_URL" {
				ref := e.ValueFrom
				if assert.NotNil(t, ref, "pod %s: REDIS_URL is a plain value", p.Name) && assert.NotNil(t, ref.SecretKeyRef, "pod %s", p.Name) {
					assert.Equal(t, poolcreds.DefaultSecretName+"/"+r.pool, ref.SecretKeyRef.Name+"/"+ref.SecretKeyRef.Key, "pod %s", p.Name)
				}
			}
		}
	}
}

// keepEvidence copies the executors' log and the agents' logs out of the
// test's temporary directories (removed when the test ends), so a violation
// can be traced phase by phase afterwards, and prints what the agent of
// each pod a violation names said about its registration, heartbeats and
// reservations: whether it was alive and in touch with Redis when its pod
// was deleted is evidence the store's view of itself cannot give.
func (r *faultRun) keepEvidence(violations []string) {
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("slotscaler-faults-%d", r.seed))
	if err := os.MkdirAll(filepath.Join(keep, "agents"), 0o755); err != nil {
		r.t.Logf("keeping evidence: %v", err)
		return
	}
	if b, err := os.ReadFile(r.evidence.execLog); err != nil {
		r.t.Logf("keeping the executors' log: %v", err)
	} else if err := os.WriteFile(filepath.Join(keep, "executors.log"), b, 0o644); err != nil {
		r.t.Logf("keeping the executors' log: %v", err)
	}
	logs, _ := filepath.Glob(filepath.Join(r.c.kubelet.logDir, "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			err = os.WriteFile(filepath.Join(keep, "agents", filepath.Base(l)), b, 0o644)
		}
		if err != nil {
			r.t.Logf("keeping agent log %s: %v", l, err)
		}
	}
	r.t.Logf("the executors' and agents' logs are kept in %s", keep)

	said := regexp.MustCompile(`(?i)heartbeat|lost|regist|reserv|redis|stop|cordon|drain`)
	for _, l := range logs {
		pod := strings.TrimSuffix(filepath.Base(l), ".log")
		if !slices.ContainsFunc(violations, func(v string) bool { return strings.Contains(v, "pod "+pod+" ") }) {
			continue
		}
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		var lines []string
		for line := range strings.Lines(string(b)) {
			if said.MatchString(line) {
				lines = append(lines, strings.TrimSpace(line))
			}
		}
		for _, line := range lines[max(len(lines)-25, 0):] {
			r.t.Logf("agent of %s: %s", pod, line)
		}
	}
}
