// Package perclient bounds how many long-lived requests (gRPC streams,
// server-sent event streams, long polls) one client holds open at once.
// Each such request pins a goroutine, a connection and usually a Redis
// poller until the client hangs up, so without a bound per client one
// caller could hold the server's resources alone.
package perclient

import "sync"

// Limiter counts open requests per client key. The zero value is not
// usable: make one with New.
type Limiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int // only keys with open requests: the map does not grow
}

// New bounds every client to max open requests at once.
func New(max int) *Limiter {
	return &Limiter{max: max, open: map[string]int{}}
}

// Max is the bound per client.
func (l *Limiter) Max() int { return l.max }

// Acquire takes a place for key. When ok, release gives it back; calling
// release more than once gives it back once.
func (l *Limiter) Acquire(key string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] >= l.max {
		return nil, false
	}
	l.open[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.open[key]--; l.open[key] <= 0 {
				delete(l.open, key)
			}
		})
	}, true
}

// Count is how many places key holds.
func (l *Limiter) Count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[key]
}

// Clients is how many keys hold places.
func (l *Limiter) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}
