package janitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a now func the test moves by hand.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

func TestExpectations(t *testing.T) {
	const pool, other = "team/pool-a", "team/pool-b"
	for name, tc := range map[string]struct {
		steps func(e *expectations, clock *fakeClock)
		want  bool // Satisfied(pool) at the end
	}{
		"a pool never seen is satisfied": {
			steps: func(*expectations, *fakeClock) {},
			want:  true,
		},
		"outstanding creations are not satisfied": {
			steps: func(e *expectations, _ *fakeClock) { e.ExpectCreations(pool, 3) },
			want:  false,
		},
		"some creations observed is not enough": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 3)
				e.CreationObserved(pool)
				e.CreationObserved(pool)
			},
			want: false,
		},
		"every creation observed is satisfied": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 2)
				e.ExpectCreations(pool, 1)
				for range 3 {
					e.CreationObserved(pool)
				}
			},
			want: true,
		},
		"extra observed creations do not pay for later ones": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.CreationObserved(pool)
				e.CreationObserved(pool) // e.g. a pod someone else created
				e.ExpectCreations(pool, 1)
			},
			want: false,
		},
		"outstanding deletion is not satisfied": {
			steps: func(e *expectations, _ *fakeClock) { e.ExpectDeletion(pool, "uid-1") },
			want:  false,
		},
		"deletion of another pod observed is not enough": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectDeletion(pool, "uid-1")
				e.DeletionObserved(pool, "uid-2")
			},
			want: false,
		},
		"every deletion observed is satisfied": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectDeletion(pool, "uid-1")
				e.ExpectDeletion(pool, "uid-2")
				e.ExpectDeletion(pool, "uid-1") // the same pod twice counts once
				e.DeletionObserved(pool, "uid-2")
				e.DeletionObserved(pool, "uid-1")
			},
			want: true,
		},
		"creations observed but a deletion outstanding is not satisfied": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.ExpectDeletion(pool, "uid-1")
				e.CreationObserved(pool)
			},
			want: false,
		},
		"observations for an unknown pool change nothing": {
			steps: func(e *expectations, _ *fakeClock) {
				e.CreationObserved(pool)
				e.DeletionObserved(pool, "uid-1")
			},
			want: true,
		},
		"another pool's expectations do not hold this one": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(other, 1)
				e.ExpectDeletion(other, "uid-1")
			},
			want: true,
		},
		"observations for another pool do not satisfy this one": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.ExpectDeletion(pool, "uid-1")
				e.CreationObserved(other)
				e.DeletionObserved(other, "uid-1")
			},
			want: false,
		},
		"not satisfied up to the TTL": {
			steps: func(e *expectations, c *fakeClock) {
				e.ExpectCreations(pool, 1)
				c.advance(expectationsTTL)
			},
			want: false,
		},
		"satisfied once the TTL has passed": {
			steps: func(e *expectations, c *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.ExpectDeletion(pool, "uid-1")
				c.advance(expectationsTTL + time.Nanosecond)
			},
			want: true,
		},
		"the TTL counts from the first outstanding expectation": {
			steps: func(e *expectations, c *fakeClock) {
				e.ExpectCreations(pool, 1)
				c.advance(4 * time.Minute)
				e.ExpectDeletion(pool, "uid-1")
				c.advance(time.Minute + time.Nanosecond)
			},
			want: true,
		},
		"the TTL restarts after the pool was satisfied": {
			steps: func(e *expectations, c *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.CreationObserved(pool)
				c.advance(10 * time.Minute)
				e.ExpectCreations(pool, 1)
				c.advance(time.Minute)
			},
			want: false,
		},
		"expectations made after a TTL expiry are waited for again": {
			steps: func(e *expectations, c *fakeClock) {
				e.ExpectCreations(pool, 1)
				c.advance(expectationsTTL + time.Second)
				require.True(t, e.Satisfied(pool))
				e.ExpectDeletion(pool, "uid-1")
			},
			want: false,
		},
		"forget drops a pool's expectations": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 2)
				e.ExpectDeletion(pool, "uid-1")
				e.Forget(pool)
			},
			want: true,
		},
		"forgetting another pool keeps this one's": {
			steps: func(e *expectations, _ *fakeClock) {
				e.ExpectCreations(pool, 1)
				e.ExpectCreations(other, 1)
				e.Forget(other)
			},
			want: false,
		},
		"forgetting a pool never seen is harmless": {
			steps: func(e *expectations, _ *fakeClock) { e.Forget(pool) },
			want:  true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			e := newExpectations(clock.Now)
			tc.steps(e, clock)
			require.Equal(t, tc.want, e.Satisfied(pool))
		})
	}
}

func TestExpectationsOtherPoolUnaffectedByTTLExpiry(t *testing.T) {
	clock := &fakeClock{now: t0}
	e := newExpectations(clock.Now)
	e.ExpectCreations("a", 1)
	clock.advance(expectationsTTL)
	e.ExpectCreations("b", 1)
	clock.advance(time.Second)
	require.True(t, e.Satisfied("a"), "a waited longer than the TTL")
	require.False(t, e.Satisfied("b"), "b has waited a second")
}
