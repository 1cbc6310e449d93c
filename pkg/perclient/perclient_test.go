package perclient

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLimiterBoundsEachClientApart(t *testing.T) {
	l := New(2)
	r1, ok := l.Acquire("a")
	require.True(t, ok)
	_, ok = l.Acquire("a")
	require.True(t, ok)
	_, ok = l.Acquire("a")
	assert.False(t, ok, "a third place for the same client")
	_, ok = l.Acquire("b")
	assert.True(t, ok, "another client has its own places")

	r1()
	r1() // a second release gives nothing back twice
	assert.Equal(t, 1, l.Count("a"))
	_, ok = l.Acquire("a")
	assert.True(t, ok, "a released place is free again")
	_, ok = l.Acquire("a")
	assert.False(t, ok)
}

func TestLimiterForgetsClientsWithoutPlaces(t *testing.T) {
	l := New(1)
	for i := range 100 {
		release, ok := l.Acquire(fmt.Sprint("client-", i))
		require.True(t, ok)
		release()
	}
	assert.Zero(t, l.Clients(), "the map holds only clients with open requests")
}

func TestLimiterNeverGivesMoreThanMaxUnderContention(t *testing.T) {
	l := New(3)
	var mu sync.Mutex
	held, most := 0, 0
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				release, ok := l.Acquire("k")
				if !ok {
					continue
				}
				mu.Lock()
				held++
				most = max(most, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				release()
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, most, 3)
	assert.Zero(t, l.Count("k"))
}
