package janitor

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// expectationsTTL bounds how long a pool waits for the informer to show its
// own creates and deletes (the ReplicaSet controller uses 5 minutes): a watch
// event lost for good must not stall a pool forever.
const expectationsTTL = 5 * time.Minute

// expectations records, per pool, the creates and deletes the controller
// made that its informer has not shown yet. While any are outstanding the
// pod cache is behind the controller's own actions, and acting on it could
// create or delete too many — so a pool is not acted on until they are seen.
type expectations struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string]*expected
}

type expected struct {
	adds    int
	deletes map[types.UID]bool
	since   time.Time
}

func newExpectations(now func() time.Time) *expectations {
	return &expectations{now: now, m: map[string]*expected{}}
}

func (e *expectations) get(key string) *expected {
	x, ok := e.m[key]
	if !ok {
		x = &expected{deletes: map[types.UID]bool{}}
		e.m[key] = x
	}
	if x.adds <= 0 && len(x.deletes) == 0 {
		x.since = e.now()
	}
	return x
}

// ExpectCreations records n creates about to be made.
func (e *expectations) ExpectCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).adds += n
}

// CreationObserved records a create seen by the informer, or one that failed.
func (e *expectations) CreationObserved(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok && x.adds > 0 {
		x.adds--
	}
}

// ExpectDeletion records a pod about to be deleted.
func (e *expectations) ExpectDeletion(key string, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).deletes[uid] = true
}

// DeletionObserved records a delete seen by the informer (or a pod marked
// for deletion), or one that failed.
func (e *expectations) DeletionObserved(key string, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		delete(x.deletes, uid)
	}
}

// Satisfied reports whether the pool's cache has caught up with the
// controller's own actions (or waited expectationsTTL for it).
func (e *expectations) Satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok || (x.adds <= 0 && len(x.deletes) == 0) {
		return true
	}
	if e.now().Sub(x.since) > expectationsTTL {
		delete(e.m, key)
		return true
	}
	return false
}

// Forget drops a pool's expectations (the pool was deleted).
func (e *expectations) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
