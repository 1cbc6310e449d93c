package main

import "time"

// Profile is what the demo runs: its pools, their synthetic load and the
// timings of the parts it stands in for (KEDA, the HPA, the kubelet).
type Profile struct {
	Pools []PoolProfile

	// SyncInterval is the janitor's --sync-interval.
	SyncInterval time.Duration
	// PollInterval is how often KEDA asks the scaler (pollingInterval) and
	// the HPA recomputes (its sync period); 15 s each in a cluster.
	PollInterval time.Duration
	// Cooldown is KEDA's cooldownPeriod: inactive this long, a pool with
	// minReplicaCount 0 goes to zero (the chart: 300 s).
	Cooldown time.Duration
	// DownWindow is the HPA's scale-down stabilization window (Kubernetes'
	// default: 300 s).
	DownWindow time.Duration
	// HistoryInterval is the scaler's --history-interval: short, so the
	// pool pages' charts fill up while the demo runs.
	HistoryInterval time.Duration
	// StatusEvery is how often the status lines are printed.
	StatusEvery time.Duration
	// StopGrace caps SIGTERM → SIGKILL for an agent, both when its pod is
	// deleted (the pod's grace is longer) and when the demo stops.
	StopGrace time.Duration

	// Pool settings (AgentPool spec and agent settings).
	IdleFor           time.Duration
	HeartbeatTimeout  time.Duration
	HeartbeatInterval time.Duration
	PhaseTimeout      time.Duration
	ReservationTTL    time.Duration

	// Tasks: every phase sleeps a random time in [TaskMin, TaskMax] (the
	// agent's builtin:sleep executor); a reserved plan_and_apply is approved
	// (or, with RejectRatio, rejected) after [ApproveMin, ApproveMax].
	TaskMin, TaskMax       time.Duration
	ApproveMin, ApproveMax time.Duration
	RejectRatio            float64
}

// PoolProfile is one demo pool and its load.
type PoolProfile struct {
	Namespace, Name string
	MinReplicas     int32 // KEDA minReplicaCount
	MaxReplicas     int32 // KEDA maxReplicaCount
	// Nudge: the cluster cannot set the HPA's tolerance, so the HPA keeps
	// its default 10 % band and the trigger sets nudgeTolerance "true".
	// Otherwise behavior.scaleUp.tolerance is 0, as the chart sets it.
	Nudge bool

	// Load repeats: Offset after start, Busy long at Rate tasks per second
	// (ApplyRatio of them plan_and_apply), then Quiet long.
	Offset, Busy, Quiet time.Duration
	Rate                float64
	ApplyRatio          float64
}

// Cycle is the length of one busy + quiet period.
func (p PoolProfile) Cycle() time.Duration { return p.Busy + p.Quiet }

// defaultProfile tells its story within a minute: pool-a gets busy at once,
// scales up, and is back down (then at zero) within a minute; pool-b starts
// a little later with lighter load and the 10 % band.
func defaultProfile() Profile {
	return Profile{
		Pools: []PoolProfile{
			{Namespace: "team-a", Name: "pool-a", MinReplicas: 0, MaxReplicas: 8,
				Offset: 0, Busy: 25 * time.Second, Quiet: 50 * time.Second, Rate: 1.5, ApplyRatio: 0.3},
			{Namespace: "team-b", Name: "pool-b", MinReplicas: 0, MaxReplicas: 6, Nudge: true,
				Offset: 10 * time.Second, Busy: 20 * time.Second, Quiet: 55 * time.Second, Rate: 1.0, ApplyRatio: 0.3},
		},
		SyncInterval:      time.Second,
		PollInterval:      time.Second,
		Cooldown:          15 * time.Second,
		DownWindow:        10 * time.Second,
		HistoryInterval:   2 * time.Second,
		StatusEvery:       5 * time.Second,
		StopGrace:         10 * time.Second,
		IdleFor:           5 * time.Second,
		HeartbeatTimeout:  6 * time.Second,
		HeartbeatInterval: time.Second,
		PhaseTimeout:      time.Minute,
		ReservationTTL:    15 * time.Minute, // the approval that waits for you
		TaskMin:           2 * time.Second,
		TaskMax:           8 * time.Second,
		ApproveMin:        time.Second,
		ApproveMax:        3 * time.Second,
		RejectRatio:       0.1,
	}
}
