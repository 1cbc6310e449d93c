package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slotscaler/slotscaler/pkg/executor"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Why a phase's executor was stopped (context.Cause of its context).
var (
	errCancelRequested = errors.New("cancel requested")
	errFenced          = errors.New("pod incarnation fenced")
)

// hooks let tests watch and steer the agent; all optional.
type hooks struct {
	// beforeTake is called by the inbox reader before each Take.
	beforeTake func(ctx context.Context)
	// recorded is called once a phase's result is recorded.
	recorded func(phaseTiming)
}

// agent is one pod's worker: it registers, heartbeats, takes work from the
// pod's inbox with one reader, runs an executor per phase and records each
// result until Redis has it.
type agent struct {
	cfg      Config
	log      *slog.Logger
	storeLog *slog.Logger
	runner   executor.Runner
	ws       *workspaces // each task's private directory (workspace.go); nil in unit tests
	baseEnv  []string
	m        *metrics
	hooks    hooks

	conn    *redisconn.Conn
	store   *slots.Store
	uid     string
	managed bool

	// work carries every Redis call and loop; it ends on a fatal error or
	// when the agent is done, never on SIGTERM (a stopping agent still
	// heartbeats and records results).
	work     context.Context
	stopWork context.CancelFunc
	// fence is every phase's parent: a fatal error cancels it with
	// errFenced, which kills every executor, started or starting.
	fence      context.Context
	fenceCause context.CancelCauseFunc

	mu           sync.Mutex
	phases       map[slots.TaskRef]*phase
	reservations map[string]string // task → epoch of the plan that reserved slot 0 for its apply
	// applied holds the tasks whose apply this agent started. An apply
	// runs in the slot of the pod that ran its plan, so only this agent
	// could ever run it: a second apply assignment for the same task (the
	// store lost the first one's claim or approval in a failover and
	// someone approved again) is refused here, whatever the store says.
	applied  map[string]bool
	slotSems map[int]chan struct{} // one executor per slot (acquireSlot)
	taskSems map[string]*taskSem   // one executor per task (acquireSlot)
	podState slots.PodState
	// reportSeq numbers heartbeat reports (HeartbeatNumbered). It starts
	// from the clock in microseconds so it also grows across restarts of an
	// agent that keeps its uid (a static pool with a fixed POD_UID).
	reportSeq int64

	registered atomic.Bool
	stopping   atomic.Bool
	cordoned   chan struct{} // closed once the stop-time cordon is recorded
	fatalOnce  sync.Once
	fatalErr   error
	fatalCh    chan struct{}
	phaseWG    sync.WaitGroup
}

func newAgent(cfg Config, log, storeLog *slog.Logger, runner executor.Runner, baseEnv []string, m *metrics, h hooks) *agent {
	a := &agent{
		cfg: cfg, log: log, storeLog: storeLog, runner: runner, baseEnv: baseEnv, m: m, hooks: h,
		phases:       map[slots.TaskRef]*phase{},
		reservations: map[string]string{},
		applied:      map[string]bool{},
		slotSems:     map[int]chan struct{}{},
		taskSems:     map[string]*taskSem{},
		cordoned:     make(chan struct{}),
		fatalCh:      make(chan struct{}),
	}
	a.work, a.stopWork = context.WithCancel(context.Background())
	a.fence, a.fenceCause = context.WithCancelCause(context.Background())
	return a
}

// run is the agent's life: connect, register, work until sig ends, then
// stop gracefully. It returns nil after a clean stop, or the error that
// ended it (a fenced pod, a registration that never succeeded).
func (a *agent) run(sig context.Context) error {
	defer a.stopWork()
	defer func() {
		if a.conn != nil {
			a.conn.Close()
		}
	}()
	if err := a.connect(sig); err != nil {
		if sig.Err() != nil {
			return nil // stopped before it ever registered: nothing to clean up
		}
		return err
	}
	if err := a.register(sig, nil); err != nil {
		if sig.Err() != nil {
			return nil
		}
		return err
	}
	a.registered.Store(true)

	var loops sync.WaitGroup
	hbStop := make(chan struct{})
	readerDone := make(chan struct{})
	loops.Add(2)
	go func() { defer loops.Done(); a.heartbeatLoop(hbStop) }()
	go func() { defer loops.Done(); defer close(readerDone); a.readLoop() }()

	select {
	case <-sig.Done():
		a.log.Info("stopping: cordoning, handing back unstarted work, releasing reservations, finishing running phases")
		a.stopping.Store(true)
		if a.cordon() {
			close(a.cordoned)
		}
		select {
		case <-readerDone:
		case <-a.fatalCh:
		}
	case <-a.fatalCh:
	}
	if a.isFatal() {
		a.stopWork()
		a.phaseWG.Wait()
		close(hbStop)
		loops.Wait()
		return a.fatalErr
	}
	// The reader saw nothing running, nothing to record and an empty inbox.
	a.phaseWG.Wait()
	close(hbStop)
	loops.Wait()
	if !a.managed {
		a.removeSelf()
	}
	a.log.Info("stopped")
	return nil
}

func (a *agent) isFatal() bool {
	select {
	case <-a.fatalCh:
		return true
	default:
		return false
	}
}

// fatal ends the agent: its executors are killed and it exits non-zero.
func (a *agent) fatal(err error) {
	a.fatalOnce.Do(func() {
		a.fatalErr = err
		a.log.Error("stopping at once: killing executors without recording their results", "err", err)
		close(a.fatalCh)
		a.fenceCause(errFenced)
	})
}

// fenced reports errors that mean this pod incarnation may do no more work.
func fenced(err error) bool {
	return errors.Is(err, slots.ErrTombstoned) || errors.Is(err, slots.ErrPodLost) || errors.Is(err, slots.ErrPodConflict)
}

// refused reports whether a failed store call was answered for good: a
// retry gets the same no. ErrPoolNotFound is a refusal the agent waits out
// instead, as it waits for Redis itself: after Redis lost its data the pool
// is back once the janitor declares it again.
func refused(err error) bool {
	return slots.IsRefusal(err) && !errors.Is(err, slots.ErrPoolNotFound)
}

// permanentError marks a start-up failure that waiting will not fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// connect opens Redis and the store and reads the pool's config, retrying
// for --register-timeout while Redis or the pool is not there yet.
func (a *agent) connect(sig context.Context) error {
	r := retrier{log: a.log, op: "connect", warn: "slot store not ready; retrying", attrs: []any{"for", a.cfg.RegisterTimeout}}
	permanent := func(err error) bool { var perm permanentError; return errors.As(err, &perm) }
	err := r.do(sig, time.Now().Add(a.cfg.RegisterTimeout), permanent, func() error { return a.tryConnect(sig) })
	var perm permanentError
	var late lateError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &perm):
		return perm.error
	case errors.As(err, &late):
		return fmt.Errorf("gave up after --register-timeout %v: %w", a.cfg.RegisterTimeout, late.last)
	}
	return err
}

func (a *agent) tryConnect(sig context.Context) error {
	ctx, cancel := context.WithTimeout(sig, a.cfg.RedisTimeout)
	defer cancel()
	if a.conn == nil {
		conn, err := redisconn.Open(ctx, a.cfg.RedisURL, a.log)
		if err != nil {
			return err
		}
		a.conn = conn
	}
	if a.store == nil {
		store, err := slots.New(ctx, a.conn.Client, a.cfg.Redis.StoreOptions(a.storeLog))
		if err != nil {
			if errors.Is(err, slots.ErrIncompatible) {
				return permanentError{fmt.Errorf("opening slot store: %w", err)}
			}
			return fmt.Errorf("opening slot store: %w", err)
		}
		a.store = store
	}
	pcfg, _, err := a.store.Pool(ctx, a.cfg.Pool)
	if err != nil {
		return err
	}
	if err := checkHeartbeat(a.cfg.HeartbeatInterval, a.cfg.Pool, pcfg); err != nil {
		return permanentError{err}
	}
	a.managed = pcfg.Managed
	a.uid = a.cfg.PodUID
	if a.uid == "" {
		if a.managed {
			return permanentError{fmt.Errorf("missing --pod-uid (env POD_UID): pool %s is managed, its agents register against the UID the janitor expects", a.cfg.Pool)}
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		a.uid = "gen-" + hex.EncodeToString(b[:])
	}
	a.log.Info("pool found", "managed", a.managed, "heartbeat_timeout", pcfg.HeartbeatTimeout,
		"heartbeat_interval", a.cfg.HeartbeatInterval, "slots", len(pcfg.Policy.Slots), "uid", a.uid, "executor", a.runner.String())
	return nil
}

// register registers the pod (again, with orphan slots, after Redis lost
// its record), retrying for --register-timeout while the janitor's expected
// record, the pool or Redis is missing.
func (a *agent) register(ctx context.Context, orphans []int) error {
	r := retrier{log: a.log, op: "register", warn: "registration refused for now; retrying", attrs: []any{"for", a.cfg.RegisterTimeout}}
	// The janitor may not have recorded the pod as expected yet, or not
	// removed the incarnation this one replaces: both clear up. A
	// tombstone, like every other refusal, is for good.
	final := func(err error) bool {
		return refused(err) && !errors.Is(err, slots.ErrNotExpected) && !errors.Is(err, slots.ErrPodConflict)
	}
	var st slots.PodState
	err := r.do(ctx, time.Now().Add(a.cfg.RegisterTimeout), final, func() error {
		return a.storeCall(ctx, func(ctx context.Context) (err error) {
			register := a.store.RegisterPod
			if a.stopping.Load() {
				// Re-registering after data loss while stopping: straight into
				// our own cordon, so no new work arrives that SIGKILL would end.
				register = a.store.RegisterStoppingPod
			}
			st, err = register(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, orphans...)
			return err
		})
	})
	var late lateError
	switch {
	case err == nil:
		a.setPodState(st)
		a.log.Info("registered", "uid", a.uid, "state", st, "orphan_slots", orphans)
		return nil
	case errors.As(err, &late):
		return fmt.Errorf("registering: gave up after --register-timeout %v: %w", a.cfg.RegisterTimeout, late.last)
	}
	return fmt.Errorf("registering: %w", err)
}

func (a *agent) setPodState(st slots.PodState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.podState != st && a.podState != "" {
		a.log.Info("pod state changed", "from", a.podState, "to", st)
	}
	a.podState = st
}

// ready says whether /readyz answers 200, and why not.
func (a *agent) ready() (bool, string) {
	switch {
	case a.isFatal():
		return false, "fenced"
	case a.stopping.Load():
		return false, "stopping"
	case !a.registered.Load():
		return false, "not registered"
	}
	a.mu.Lock()
	st := a.podState
	a.mu.Unlock()
	if st != slots.PodActive {
		return false, "pod is " + string(st)
	}
	return true, "ready"
}
