package history

import (
	"fmt"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A pool's history is two Redis lists, its keys defined here and only here:
//
//	<prefix>:history:v1:{<namespace>/<name>}:fine    every sample, oldest first, Layout.FineRetention long
//	<prefix>:history:v1:{<namespace>/<name>}:coarse  one mean sample per Layout.CoarseInterval, Layout.CoarseRetention long
//
// The pool's hash tag puts both on the node of the pool's own keys, so the
// record script may touch both. They are outside "<prefix>:v1:{ns/name}:*",
// the only keys a pool's agents may use (slots.PoolACL): agents can neither
// read nor forge their pool's history; the control plane's user
// ("~<prefix>:*") has them.
const (
	keySpace  = "history:v1"
	keyFine   = "fine"
	keyCoarse = "coarse"
)

// poolKeys are one pool's two lists.
type poolKeys struct{ fine, coarse string }

func keysOf(prefix string, p slots.PoolID) poolKeys {
	base := prefix + ":" + keySpace + ":{" + p.String() + "}:"
	return poolKeys{fine: base + keyFine, coarse: base + keyCoarse}
}

// Layout is how long history is kept, at which resolutions. Readers and
// the recorder must agree on it; DefaultLayout is what every binary uses.
type Layout struct {
	// FineRetention: every recorded sample is kept this long (the "1h"
	// window).
	FineRetention time.Duration
	// CoarseInterval: older history is one sample per this interval, the
	// mean of the samples recorded in it (the oldest queued age: their
	// maximum).
	CoarseInterval time.Duration
	// CoarseRetention: coarse samples are kept this long (the "24h" window).
	CoarseRetention time.Duration
}

// DefaultLayout keeps an hour of every sample and 24 hours of 5-minute means.
var DefaultLayout = Layout{FineRetention: time.Hour, CoarseInterval: 5 * time.Minute, CoarseRetention: 24 * time.Hour}

// Validate checks that the resolutions nest: a coarse bucket is built from
// fine samples still kept, and coarse history reaches back at least as far.
func (l Layout) Validate() error {
	switch {
	case l.CoarseInterval <= 0:
		return fmt.Errorf("history layout: coarse interval %v must be positive", l.CoarseInterval)
	case l.FineRetention < l.CoarseInterval:
		return fmt.Errorf("history layout: fine retention %v is shorter than a coarse interval %v", l.FineRetention, l.CoarseInterval)
	case l.CoarseRetention < l.FineRetention:
		return fmt.Errorf("history layout: coarse retention %v is shorter than fine retention %v", l.CoarseRetention, l.FineRetention)
	}
	return nil
}

// fineCap bounds the fine list for a recorder writing every interval.
func (l Layout) fineCap(interval time.Duration) int64 {
	return int64((l.FineRetention+interval-1)/interval) + 1
}

func (l Layout) coarseCap() int64 {
	return int64((l.CoarseRetention+l.CoarseInterval-1)/l.CoarseInterval) + 1
}

// ttl is how long a pool's history outlives its last sample (a deleted
// pool's history goes away by itself).
func (l Layout) ttl() time.Duration { return l.CoarseRetention + l.CoarseInterval }

// Window is a span of history to read: "1h" (every sample, the fine list)
// or "24h" (coarse means).
type Window string

const (
	Hour Window = "1h"
	Day  Window = "24h"
)

// ParseWindow reads a window's name; "" is Hour.
func ParseWindow(s string) (Window, error) {
	switch Window(s) {
	case "", Hour:
		return Hour, nil
	case Day:
		return Day, nil
	}
	return "", fmt.Errorf("%w: %q (want %s or %s)", ErrInvalidWindow, s, Hour, Day)
}

// Span is how far back the window reaches under the layout.
func (l Layout) Span(w Window) time.Duration {
	if w == Day {
		return l.CoarseRetention
	}
	return l.FineRetention
}
