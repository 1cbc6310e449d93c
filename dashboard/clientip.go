package main

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

type clientIPKey struct{}

// clientIPs finds the client's address for rate limits, stream caps and
// logs. Forwarding headers are anyone's to write, so they are read only
// when the TCP peer is a trusted proxy; chi's middleware.RealIP trusts them
// from every peer, which lets a client pick its own address and escape
// every per-IP bound.
type clientIPs struct {
	trusted []netip.Prefix
}

func (c clientIPs) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// of returns the client address of r: the TCP peer, or, when the peer is a
// trusted proxy, the nearest untrusted hop of X-Forwarded-For (read from
// the right: the left part is whatever the client sent), else X-Real-IP.
func (c clientIPs) of(r *http.Request) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !c.isTrusted(peer) {
		return peer
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		client := peer
		for i := len(hops) - 1; i >= 0; i-- {
			a := parseAddr(strings.TrimSpace(hops[i]))
			if !a.IsValid() {
				break // garbage: keep the last hop a trusted proxy vouched for
			}
			client = a
			if !c.isTrusted(a) {
				break
			}
		}
		return client
	}
	if a := parseAddr(strings.TrimSpace(r.Header.Get("X-Real-IP"))); a.IsValid() {
		return a
	}
	return peer
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port"; invalid yields the zero Addr.
func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// middleware records the client address in the request's context.
func (c clientIPs) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientIPKey{}, c.of(r))))
	})
}

// clientIP is the request's client address as a string ("unknown" when the
// peer address did not parse, so such clients share one bucket).
func clientIP(r *http.Request) string {
	if a, ok := r.Context().Value(clientIPKey{}).(netip.Addr); ok && a.IsValid() {
		return a.String()
	}
	if a := parseAddr(r.RemoteAddr); a.IsValid() {
		return a.String()
	}
	return "unknown"
}
