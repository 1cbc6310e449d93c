package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/perclient"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Metadata keys a ScaledObject's external trigger may set.
const (
	metaPool      = "pool"           // required: the AgentPool's name (namespace comes from the ScaledObject)
	metaWarmPods  = "warmPods"       // idle pods to keep while the pool is active (default 0)
	metaNudge     = "nudgeTolerance" // "true" where the HPA's tolerance cannot be set to 0; what the janitor finds on the HPA wins (request.nudging)
	metaTolerance = "tolerance"      // the HPA's tolerance the nudge works around (default 0.1)
)

// poolReader is what the scaler needs from the slot store.
type poolReader interface {
	Stats(ctx context.Context, pools ...slots.PoolID) ([]slots.PoolStats, error)
	Pool(ctx context.Context, id slots.PoolID) (slots.PoolConfig, string, error)
}

// handler implements KEDA's external scaler protocol for slotscaler pools.
type handler struct {
	pb.UnimplementedExternalScalerServer
	store      poolReader
	log        *slog.Logger
	metrics    *metrics
	nudge      bool          // default for metaNudge
	streamPoll time.Duration // how often StreamIsActive re-reads a pool
	configs    *slots.ConfigCache
	// streams bounds the StreamIsActive streams one client holds open:
	// each polls Redis every streamPoll until the client hangs up. KEDA
	// opens one per external-push ScaledObject trigger. nil: unbounded
	// (tests that do not care).
	streams *perclient.Limiter
	// redisTimeout bounds each read, well inside KEDA's own call timeout, so
	// an unreachable Redis is reported as Unavailable rather than a timeout.
	redisTimeout time.Duration
	// answers holds each pool's last answer, so "desired pods" is logged
	// when it changes rather than on every poll.
	answers lastAnswers
}

// answer is what the "desired pods" log line is about.
type answer struct {
	reported, desired, unschedulable int
	binding                          string
}

// lastAnswers remembers the last answer per pool. Like the per-pool
// gauges, an entry outlives its pool: a few words per pool ever asked for.
type lastAnswers struct {
	mu   sync.Mutex
	last map[slots.PoolID]answer
}

// changed records a and reports whether it differs from the pool's last.
func (l *lastAnswers) changed(p slots.PoolID, a answer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.last[p]; ok && old == a {
		return false
	}
	if l.last == nil {
		l.last = map[slots.PoolID]answer{}
	}
	l.last[p] = a
	return true
}

// request is a ScaledObjectRef's metadata, parsed and validated.
type request struct {
	pool      slots.PoolID
	warm      int
	nudge     bool
	tolerance float64
}

func (h *handler) parse(ref *pb.ScaledObjectRef) (request, error) {
	if ref == nil {
		return request{}, status.Error(codes.InvalidArgument, "missing scaledObjectRef")
	}
	md := ref.GetScalerMetadata()
	name := strings.TrimSpace(md[metaPool])
	if name == "" {
		return request{}, status.Errorf(codes.InvalidArgument, "metadata %q is required: the AgentPool's name", metaPool)
	}
	r := request{pool: slots.PoolID{Namespace: ref.GetNamespace(), Name: name}, nudge: h.nudge, tolerance: capacity.DefaultTolerance}
	if err := r.pool.Validate(); err != nil {
		return request{}, status.Errorf(codes.InvalidArgument, "metadata %q / scaledObject namespace: %v", metaPool, err)
	}
	if v, ok := md[metaWarmPods]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return request{}, status.Errorf(codes.InvalidArgument, "metadata %q = %q: want a whole number ≥ 0", metaWarmPods, v)
		}
		r.warm = n
	}
	if v, ok := md[metaNudge]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return request{}, status.Errorf(codes.InvalidArgument, "metadata %q = %q: want true or false", metaNudge, v)
		}
		r.nudge = b
	}
	if v, ok := md[metaTolerance]; ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || capacity.CheckTolerance(f) != nil {
			return request{}, status.Errorf(codes.InvalidArgument, "metadata %q = %q: want a number ≥ 0", metaTolerance, v)
		}
		r.tolerance = f
	}
	return r, nil
}

// nudging says whether to nudge a scale-up past the HPA's tolerance band,
// and past which band, given what the janitor found on the pool's HPA (read
// with the pool's counters). The finding wins over the trigger's
// nudgeTolerance and --nudge-tolerance, both ways: it is what the HPA in
// front of the pool does, where the trigger says what was assumed when it
// was written (the chart's triggers always set it, from keda.hpaTolerance).
// An HPA with its own non-zero tolerance is nudged past that one; an HPA
// without one applies the cluster's, which the janitor cannot see: the
// trigger's tolerance (default 0.1, kube-controller-manager's default)
// stands for it. Without a finding (no janitor watching HPAs, no HPA
// targeting the pool, a static pool) the trigger and the flag decide.
func (r request) nudging(hpa slots.HPATolerance) (bool, float64) {
	switch {
	case !hpa.Known:
		return r.nudge, r.tolerance
	case hpa.Set:
		return hpa.Nudge(), hpa.Value
	}
	return true, r.tolerance
}

// metricName is the pool's metric: valid as a Kubernetes path segment and
// unique per pool (KEDA prefixes it with the trigger index).
func metricName(p slots.PoolID) string {
	return "slotscaler-" + p.Namespace + "-" + p.Name
}

// storeError maps store errors to gRPC codes: KEDA must see an error, never
// a zero, when the answer is unknown.
func storeError(ctx context.Context, op string, p slots.PoolID, err error) error {
	kind := slots.Classify(err)
	switch {
	case errors.Is(err, slots.ErrPoolNotFound):
		return status.Errorf(codes.NotFound, "%s: pool %s is not declared in the slot store", op, p)
	case errors.Is(err, slots.ErrInvalidPool):
		return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
	case kind == slots.KindCanceled:
		return status.Errorf(codes.Canceled, "%s: pool %s: %v", op, p, err)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		// The caller's deadline (KEDA's), not our own Redis timeout.
		return status.Errorf(codes.DeadlineExceeded, "%s: pool %s: %v", op, p, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.Unavailable, "%s: reading pool %s: redis did not answer in time: %v", op, p, err)
	default:
		// Unavailable, and also what the store cannot explain: KEDA keeps
		// the last replica count and asks again, the right answer to both.
		return status.Errorf(codes.Unavailable, "%s: reading pool %s (%s): %v", op, p, kind, err)
	}
}

// evaluate reads one pool (one round trip; its config is cached) and runs
// the capacity model.
func (h *handler) evaluate(ctx context.Context, r request) (capacity.Result, slots.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, h.redisTimeout)
	defer cancel()
	cfg, err := h.configs.Get(ctx, r.pool)
	if err != nil {
		return capacity.Result{}, slots.Stats{}, err
	}
	res, err := h.store.Stats(ctx, r.pool)
	if err != nil {
		return capacity.Result{}, slots.Stats{}, err
	}
	if res[0].Err != nil {
		return capacity.Result{}, slots.Stats{}, res[0].Err
	}
	st := res[0].Stats
	out, err := capacity.Desired(slots.CapacityInput(cfg, st, r.warm))
	if err != nil {
		return capacity.Result{}, st, fmt.Errorf("capacity of pool %s: %w", r.pool, err)
	}
	return out, st, nil
}

// GetMetricSpec: one metric per pool, an AverageValue target of 1 pod, so
// the HPA's replicas equal the desired count.
func (h *handler) GetMetricSpec(_ context.Context, ref *pb.ScaledObjectRef) (*pb.GetMetricSpecResponse, error) {
	r, err := h.parse(ref)
	if err != nil {
		return nil, err
	}
	return &pb.GetMetricSpecResponse{MetricSpecs: []*pb.MetricSpec{{
		MetricName:      metricName(r.pool),
		TargetSize:      1,
		TargetSizeFloat: 1,
	}}}, nil
}

// GetMetrics reports the pool's desired pod count.
func (h *handler) GetMetrics(ctx context.Context, req *pb.GetMetricsRequest) (*pb.GetMetricsResponse, error) {
	r, err := h.parse(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	if name := req.GetMetricName(); name != "" && name != metricName(r.pool) {
		return nil, status.Errorf(codes.InvalidArgument, "metric %q is not this pool's (want %q)", name, metricName(r.pool))
	}
	res, st, err := h.evaluate(ctx, r)
	if err != nil {
		return nil, storeError(ctx, "GetMetrics", r.pool, err)
	}
	desired := res.Desired
	if nudge, tolerance := r.nudging(st.HPATolerance); nudge {
		desired = capacity.NudgeForTolerance(st.LivePods(), res.Desired, 0, tolerance)
	}
	h.metrics.observePool(r.pool, desired, st, res.Why)
	if h.answers.changed(r.pool, answer{reported: desired, desired: res.Desired, unschedulable: res.Why.Unschedulable, binding: res.Why.Binding()}) {
		h.log.Info("desired pods", "pool", r.pool, "desired", res.Desired, "reported", desired, "binding", res.Why.Binding(),
			"why", res.Why.String(), "live", st.LivePods(), "busy", st.BusyPods, "unschedulable", res.Unschedulable,
			"hpaTolerance", st.HPATolerance.String())
	}
	return &pb.GetMetricsResponse{MetricValues: []*pb.MetricValue{{
		MetricName:       metricName(r.pool),
		MetricValue:      int64(desired),
		MetricValueFloat: float64(desired),
	}}}, nil
}

// IsActive is true while the pool has running, reserved or queued work.
func (h *handler) IsActive(ctx context.Context, ref *pb.ScaledObjectRef) (*pb.IsActiveResponse, error) {
	r, err := h.parse(ref)
	if err != nil {
		return nil, err
	}
	res, _, err := h.evaluate(ctx, r)
	if err != nil {
		return nil, storeError(ctx, "IsActive", r.pool, err)
	}
	return &pb.IsActiveResponse{Result: res.Active}, nil
}

// StreamIsActive (external-push) sends the pool's activity at once and
// again whenever it changes, polling every streamPoll; it ends cleanly when
// the stream's context ends. A store error ends the stream with that error
// and KEDA reconnects with backoff.
func (h *handler) StreamIsActive(ref *pb.ScaledObjectRef, stream pb.ExternalScaler_StreamIsActiveServer) error {
	r, err := h.parse(ref)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	if h.streams != nil {
		client := clientOf(ctx)
		release, ok := h.streams.Acquire(client)
		if !ok {
			h.log.Warn("refused a StreamIsActive stream: the client holds the most allowed", "client", client, "pool", r.pool, "max", h.streams.Max())
			return status.Errorf(codes.ResourceExhausted, "this client already holds %d StreamIsActive streams (--max-streams-per-client)", h.streams.Max())
		}
		defer release()
	}
	ticker := time.NewTicker(h.streamPoll)
	defer ticker.Stop()
	sent, last := false, false
	for {
		res, _, err := h.evaluate(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return storeError(ctx, "StreamIsActive", r.pool, err)
		}
		if !sent || res.Active != last {
			if err := stream.Send(&pb.IsActiveResponse{Result: res.Active}); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("sending activity of pool %s: %w", r.pool, err)
			}
			sent, last = true, res.Active
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
