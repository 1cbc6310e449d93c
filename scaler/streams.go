package main

import (
	"context"
	"crypto/x509"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

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
