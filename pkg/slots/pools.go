package slots

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cfgPolicy is the config field holding the slot policy as JSON, for Pool to
// read back. Unlike the fields of names.go no script reads it: declare_pool.lua
// stores it with the other policy fields it is given.
const cfgPolicy = "policy"

// Declaration is what DeclarePool did.
type Declaration struct {
	// Generation is the pool's generation: a random value set when the pool
	// is first declared, so epochs stay unique if Redis loses its data and
	// the pool is declared again.
	Generation string
	// PolicyPending: the slot policy asked for differs from the pool's and
	// was not applied, because the pool has pods (idle sets and counters
	// are kept per slot class); PendingReason says how many. Every other
	// setting was applied. Declaring again applies the policy once the pool
	// has no pods.
	PolicyPending bool
	PendingReason string
}

// DeclarePool creates or updates a pool. The slot policy of a pool that has
// pods cannot change: DeclarePool then applies every other setting, keeps
// the old policy, and returns the Declaration (PolicyPending) with an error
// wrapping ErrPolicyChange, so a caller that only checks the error does not
// take the change for done.
func (s *Store) DeclarePool(ctx context.Context, id PoolID, cfg PoolConfig) (Declaration, error) {
	if err := id.Validate(); err != nil {
		return Declaration{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Declaration{}, fmt.Errorf("pool %s: %w", id, err)
	}
	classes, slotClass := cfg.Policy.Classes()
	policy, err := json.Marshal(cfg.Policy.Slots)
	if err != nil {
		return Declaration{}, fmt.Errorf("encoding slot policy: %w", err)
	}
	sc := make([]string, len(slotClass))
	for i, c := range slotClass {
		sc[i] = strconv.Itoa(c)
	}
	managed := "0"
	if cfg.Managed {
		managed = "1"
	}
	var types []string
	// The slot policy's fields, applied only when the policy may change
	// (declare_pool.lua), then the rest.
	pol := []any{
		cfgPolicy, string(policy),
		cfgNSlots, len(cfg.Policy.Slots),
		cfgSlotClasses, strings.Join(sc, ","),
		cfgNClasses, len(classes),
	}
	for i, c := range classes {
		ts := make([]string, len(c.Types))
		for j, t := range c.Types {
			ts[j] = string(t)
		}
		pol = append(pol, cfgClassTypes+strconv.Itoa(i), strings.Join(ts, ","))
	}
	for _, t := range TaskTypes {
		order := allocationOrder(classes, t)
		if len(order) == 0 {
			continue
		}
		types = append(types, string(t))
		os := make([]string, len(order))
		for i, o := range order {
			os[i] = strconv.Itoa(o)
		}
		pol = append(pol, cfgOrder+string(t), strings.Join(os, ","))
	}
	pol = append(pol, cfgTypes, strings.Join(types, ","), cfgFill, strings.Join(fillOrder(classes, slotClass), ","))
	args := append([]any{newGeneration(), string(policy), len(pol) / 2}, pol...)
	args = append(args,
		cfgManaged, managed,
		cfgHBTimeout, cfg.HeartbeatTimeout.Milliseconds(),
		cfgResvTTL, cfg.ReservationTTL.Milliseconds(),
		cfgMaxAttempts, cfg.MaxAttempts,
		cfgQueueLimit, cfg.QueueLimit,
		cfgMaxQueueAge, cfg.MaxQueueAge.Milliseconds(),
		cfgRetention, cfg.Retention.Milliseconds(),
		cfgRetentionN, cfg.RetentionCount,
		cfgEventCap, cfg.EventCap,
		cfgHPATolerance, cfg.HPATolerance.encode(),
	)
	res, err := s.run(ctx, "declare_pool", id, args...)
	if err != nil {
		return Declaration{}, fmt.Errorf("declaring pool %s: %w", id, err)
	}
	reply, _ := res.([]any)
	if len(reply) != 2 {
		return Declaration{}, fmt.Errorf("declaring pool %s: unexpected reply %v", id, res)
	}
	d := Declaration{Generation: asString(reply[0]), PendingReason: asString(reply[1])}
	d.PolicyPending = d.PendingReason != ""
	// The registry is a separate key (another cluster slot): added after the
	// config, so a listed pool always has one. A failure here is retried by
	// declaring again.
	if err := s.rdb.SAdd(ctx, s.poolsKey(), id.String()).Err(); err != nil {
		return Declaration{}, fmt.Errorf("registering pool %s: %w", id, err)
	}
	// A Redis that lost its data lost the data-model version too, which a
	// pool's agents may read but not write (PoolACL): the declaring control
	// plane writes it again, or they would wait for it forever.
	if err := s.checkVersion(ctx); err != nil {
		return Declaration{}, fmt.Errorf("declaring pool %s: %w", id, err)
	}
	if d.PolicyPending {
		// Debug: a controller declares again on every pass while a change
		// is pending, and reports it itself.
		s.log.Debug("pool declared; slot policy change pending", "pool", id, "generation", d.Generation, "why", d.PendingReason)
		return d, fmt.Errorf("pool %s: %w (%s): every other setting was applied; the old slot policy stays until the pool has no pods",
			id, ErrPolicyChange, d.PendingReason)
	}
	s.log.Info("pool declared", "pool", id, "generation", d.Generation, "slots", len(cfg.Policy.Slots), "managed", cfg.Managed)
	return d, nil
}

// Pools lists every declared pool, sorted.
func (s *Store) Pools(ctx context.Context) ([]PoolID, error) {
	names, err := s.rdb.SMembers(ctx, s.poolsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	return s.parsePoolIDs(names), nil
}

// Pool returns a pool's config and generation.
func (s *Store) Pool(ctx context.Context, id PoolID) (PoolConfig, string, error) {
	if err := id.Validate(); err != nil {
		return PoolConfig{}, "", err
	}
	h, err := s.rdb.HGetAll(ctx, s.cfgKey(id)).Result()
	if err != nil {
		return PoolConfig{}, "", fmt.Errorf("reading pool %s: %w", id, err)
	}
	return parsePoolConfig(id, h)
}

// parsePoolConfig reads a pool's config hash (Pool, QueuePoolConfig).
func parsePoolConfig(id PoolID, h map[string]string) (PoolConfig, string, error) {
	if len(h) == 0 {
		return PoolConfig{}, "", fmt.Errorf("%w: %s", ErrPoolNotFound, id)
	}
	var cfg PoolConfig
	if err := json.Unmarshal([]byte(h[cfgPolicy]), &cfg.Policy.Slots); err != nil {
		return PoolConfig{}, "", fmt.Errorf("decoding slot policy of pool %s: %w", id, err)
	}
	ms := func(f string) time.Duration {
		v, _ := strconv.ParseInt(h[f], 10, 64)
		return time.Duration(v) * time.Millisecond
	}
	num := func(f string) int { v, _ := strconv.Atoi(h[f]); return v }
	cfg.Managed = h[cfgManaged] == "1"
	cfg.HeartbeatTimeout = ms(cfgHBTimeout)
	cfg.ReservationTTL = ms(cfgResvTTL)
	cfg.MaxAttempts = num(cfgMaxAttempts)
	cfg.QueueLimit = num(cfgQueueLimit)
	cfg.MaxQueueAge = ms(cfgMaxQueueAge)
	cfg.Retention = ms(cfgRetention)
	cfg.RetentionCount = num(cfgRetentionN)
	cfg.EventCap = num(cfgEventCap)
	cfg.HPATolerance = parseHPATolerance(h[cfgHPATolerance])
	return cfg, h[cfgGeneration], nil
}

// fillOrder lists slot indexes with the most specific class (fewest task
// types) first: the order in which a pod's idle slots take queued work.
func fillOrder(classes []Class, slotClass []int) []string {
	idx := make([]int, len(slotClass))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		return len(classes[slotClass[a]].Types) - len(classes[slotClass[b]].Types)
	})
	out := make([]string, len(idx))
	for i, v := range idx {
		out[i] = strconv.Itoa(v)
	}
	return out
}
