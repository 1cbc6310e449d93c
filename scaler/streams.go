package main

import (
	"context"
	"crypto/x509"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// streamLimiter bounds the StreamIsActive streams one client holds open.
// Each stream polls Redis every --stream-poll-interval until the client hangs
// up, so without a bound any caller that reaches the port (without mTLS:
// anything in the cluster) could open streams until Redis or the scaler
// gives. KEDA opens one stream per ScaledObject trigger, so the cap must be
// above the number of external-push ScaledObjects one KEDA operator serves.
type streamLimiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newStreamLimiter(max int) *streamLimiter {
	return &streamLimiter{max: max, open: map[string]int{}}
}

// acquire takes a place for client and reports whether there was one; a
// true answer must be paired with release.
func (l *streamLimiter) acquire(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[client] >= l.max {
		return false
	}
	l.open[client]++
	return true
}

func (l *streamLimiter) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[client]--; l.open[client] <= 0 {
		delete(l.open, client) // the map holds only clients with open streams
	}
}

// clientOf names the caller of a gRPC call: the subject of its verified
// client certificate under mTLS (a KEDA operator keeps its identity across
// pod restarts and IPs), otherwise its IP address (the port is not part of
// it: every new connection has another).
func clientOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if chains := info.State.VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
			return "cert:" + subjectOf(chains[0][0])
		}
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String() // a unix socket or bufconn: its name
	}
	return host
}

func subjectOf(c *x509.Certificate) string { return c.Subject.String() }
