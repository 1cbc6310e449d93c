package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/slotscaler/slotscaler/internal/hpa"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/capacity"
)

// The replica maths of the HPA controller (Kubernetes v1.37) for one
// External metric with an AverageValue target, which is what KEDA makes of
// an external scaler: hpa.ExternalPerPodReplicas (the replica calculator's
// GetExternalPerPodMetricReplicas), then the scale-down stabilization window
// and the min/max clamp of normalizeDesiredReplicasWithBehaviors. Left out:
// the scale-up/down rate policies (by default at most 4 pods or 100 % more
// per 15 s), which only slow a demo down.

// recommendation is one past HPA recommendation (the stabilization window
// looks at them).
type recommendation struct {
	Replicas int32
	At       time.Time
}

// hpaInput is what one HPA sync sees.
type hpaInput struct {
	// SpecReplicas is the /scale's spec.replicas (the HPA's "current");
	// StatusReplicas its status.replicas, which the per-pod average divides
	// by (the janitor's live, non-surplus pods).
	SpecReplicas, StatusReplicas int32
	// MetricMilli is the metric's value, TargetMilli the AverageValue
	// target, both in milli-units as the HPA reads them.
	MetricMilli, TargetMilli int64
	Min, Max                 int32
	// ToleranceUp and ToleranceDown are the band around a usage ratio of 1
	// inside which the HPA keeps the replicas (both 0.1 by default;
	// behavior.scaleUp.tolerance sets the first).
	ToleranceUp, ToleranceDown float64
	// DownWindow is the scale-down stabilization window; History the
	// recommendations of earlier syncs.
	DownWindow time.Duration
	History    []recommendation
	Now        time.Time
}

// hpaReplicas is one HPA sync: the replicas it writes to /scale (equal to
// SpecReplicas when it changes nothing) and the history to pass next time.
func hpaReplicas(in hpaInput) (int32, []recommendation) {
	switch {
	case in.SpecReplicas == 0:
		// Scaling is disabled at zero: KEDA activates the target.
		return 0, in.History
	case in.SpecReplicas > in.Max:
		return in.Max, in.History
	case in.SpecReplicas < in.Min:
		return in.Min, in.History
	}
	proposal := hpa.ExternalPerPodReplicas(in.StatusReplicas, in.MetricMilli, in.TargetMilli,
		hpa.Tolerance{Up: in.ToleranceUp, Down: in.ToleranceDown})

	// stabilizeRecommendationWithBehaviors: the first sync records the
	// current replicas; a scale-down goes no lower than the highest
	// recommendation within the window (scale-up window 0: no limit).
	history := in.History
	if len(history) == 0 {
		history = []recommendation{{in.SpecReplicas, in.Now}}
	}
	up, down := proposal, proposal
	cutoff := in.Now.Add(-in.DownWindow)
	kept := history[:0:0]
	for _, r := range history {
		if r.At.After(cutoff) {
			down = max(down, r.Replicas)
			kept = append(kept, r)
		}
	}
	kept = append(kept, recommendation{proposal, in.Now})
	desired := in.SpecReplicas
	if desired < up {
		desired = up
	}
	if desired > down {
		desired = down
	}
	return min(max(desired, in.Min), in.Max), kept
}

// autoscaler plays KEDA and the HPA for one pool: it asks the scaler over
// KEDA's external scaler protocol, scales from and to zero as KEDA does
// (activation, cooldownPeriod), and in between applies the HPA's replica
// maths; it writes spec.replicas like the HPA's /scale update.
type autoscaler struct {
	pool   PoolProfile
	client pb.ExternalScalerClient
	dyn    dynamic.Interface
	prof   Profile
	con    *console
	log    *slog.Logger

	ref        *pb.ScaledObjectRef
	metricName string
	target     int64 // milli
	lastActive time.Time
	history    []recommendation

	mu         sync.Mutex
	lastMetric int64 // -1: unknown
	lastErr    string
}

func newAutoscaler(pool PoolProfile, client pb.ExternalScalerClient, dyn dynamic.Interface, prof Profile, con *console, log *slog.Logger) *autoscaler {
	md := map[string]string{"pool": pool.Name, "nudgeTolerance": strconv.FormatBool(pool.Nudge)}
	return &autoscaler{pool: pool, client: client, dyn: dyn, prof: prof, con: con,
		log: log.With("component", "keda-hpa", "pool", pool.Namespace+"/"+pool.Name),
		ref: &pb.ScaledObjectRef{Name: pool.Name, Namespace: pool.Namespace, ScalerMetadata: md}, lastMetric: -1}
}

// tolerances are the HPA's band: behavior.scaleUp.tolerance 0 where the
// cluster supports it, else the default 10 % (and the scaler nudges).
func (a *autoscaler) tolerances() (up, down float64) {
	if a.pool.Nudge {
		return capacity.DefaultTolerance, capacity.DefaultTolerance
	}
	return 0, capacity.DefaultTolerance
}

// metric is the scaler's last answer (-1 before the first).
func (a *autoscaler) metric() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastMetric
}

func (a *autoscaler) run(ctx context.Context) error {
	a.lastActive = time.Now()
	t := time.NewTicker(a.prof.PollInterval)
	defer t.Stop()
	for {
		if err := a.tick(ctx); err != nil && ctx.Err() == nil {
			a.mu.Lock()
			repeated := a.lastErr == err.Error()
			a.lastErr = err.Error()
			a.mu.Unlock()
			if !repeated {
				a.log.Warn("KEDA/HPA step failed: replicas unchanged", "err", err)
			}
		} else if err == nil {
			a.mu.Lock()
			a.lastErr = ""
			a.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *autoscaler) tick(ctx context.Context) error {
	if a.target == 0 {
		spec, err := a.client.GetMetricSpec(ctx, a.ref)
		if err != nil {
			return fmt.Errorf("GetMetricSpec: %w", err)
		}
		if len(spec.GetMetricSpecs()) != 1 || spec.GetMetricSpecs()[0].GetTargetSizeFloat() <= 0 {
			return fmt.Errorf("GetMetricSpec: want one metric with a positive target, got %v", spec.GetMetricSpecs())
		}
		a.metricName = spec.GetMetricSpecs()[0].GetMetricName()
		a.target = int64(math.Round(spec.GetMetricSpecs()[0].GetTargetSizeFloat() * 1000))
	}
	specReplicas, statusReplicas, err := a.replicas(ctx)
	if err != nil {
		return err
	}
	act, err := a.client.IsActive(ctx, a.ref)
	if err != nil {
		return fmt.Errorf("IsActive: %w", err)
	}
	now := time.Now()
	if act.GetResult() {
		a.lastActive = now
	}
	var want int32
	var why string
	switch {
	case specReplicas == 0 && act.GetResult():
		want, why = max(1, a.pool.MinReplicas), "KEDA: active, scaling from zero"
	case specReplicas == 0:
		return nil
	case !act.GetResult() && a.pool.MinReplicas == 0 && now.Sub(a.lastActive) >= a.prof.Cooldown:
		want, why = 0, fmt.Sprintf("KEDA: inactive for the %v cooldown, scaling to zero", a.prof.Cooldown)
		a.history = nil
	default:
		m, err := a.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: a.ref, MetricName: a.metricName})
		if err != nil {
			return fmt.Errorf("GetMetrics: %w", err)
		}
		if len(m.GetMetricValues()) != 1 {
			return fmt.Errorf("GetMetrics: want one value, got %d", len(m.GetMetricValues()))
		}
		// KEDA's metrics adapter hands the HPA a milli-quantity.
		usage := int64(math.Round(m.GetMetricValues()[0].GetMetricValueFloat() * 1000))
		a.mu.Lock()
		a.lastMetric = usage / 1000
		a.mu.Unlock()
		up, down := a.tolerances()
		want, a.history = hpaReplicas(hpaInput{
			SpecReplicas: specReplicas, StatusReplicas: statusReplicas,
			MetricMilli: usage, TargetMilli: a.target,
			Min: max(1, a.pool.MinReplicas), Max: a.pool.MaxReplicas,
			ToleranceUp: up, ToleranceDown: down,
			DownWindow: a.prof.DownWindow, History: a.history, Now: now,
		})
		why = fmt.Sprintf("HPA: metric %s over %d pods", milliString(usage), statusReplicas)
	}
	if want == specReplicas {
		return nil
	}
	if err := a.scaleTo(ctx, want); err != nil {
		return err
	}
	a.con.Printf("%s  %-14s replicas %d → %d  (%s)", clock(now), a.pool.Namespace+"/"+a.pool.Name, specReplicas, want, why)
	return nil
}

func milliString(m int64) string {
	if m%1000 == 0 {
		return strconv.FormatInt(m/1000, 10)
	}
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}

// replicas reads the pool's /scale: spec.replicas and status.replicas.
func (a *autoscaler) replicas(ctx context.Context) (spec, status int32, err error) {
	u, err := a.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(a.pool.Namespace).Get(ctx, a.pool.Name, metav1.GetOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("reading the AgentPool's scale: %w", err)
	}
	sp, _, err := unstructured.NestedInt64(u.Object, "spec", "replicas")
	if err != nil {
		return 0, 0, fmt.Errorf("spec.replicas: %w", err)
	}
	st, _, err := unstructured.NestedInt64(u.Object, "status", "replicas")
	if err != nil {
		return 0, 0, fmt.Errorf("status.replicas: %w", err)
	}
	return int32(sp), int32(st), nil
}

// scaleTo writes spec.replicas, retrying conflicts with the janitor's
// status updates as the HPA does.
func (a *autoscaler) scaleTo(ctx context.Context, n int32) error {
	res := a.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(a.pool.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := res.Get(ctx, a.pool.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := unstructured.SetNestedField(u.Object, int64(n), "spec", "replicas"); err != nil {
			return err
		}
		_, err = res.Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("scaling to %d: %w", n, err)
	}
	return err
}

func clock(t time.Time) string { return t.Format("15:04:05") }
