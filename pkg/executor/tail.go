package executor

import (
	"fmt"
	"sync"
)

// Tail keeps the last max bytes written to it. It is safe for concurrent use.
type Tail struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

// NewTail returns a Tail keeping at most max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

// Write keeps the end of p; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		t.dropped += int64(len(t.buf) + len(p) - t.max)
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	// Compact when twice the bound: amortised O(1) per byte.
	if len(t.buf) > 2*t.max {
		cut := len(t.buf) - t.max
		t.dropped += int64(cut)
		t.buf = append(t.buf[:0], t.buf[cut:]...)
	}
	return n, nil
}

// Bytes returns at most max bytes: the end of what was written, after a
// one-line marker saying how much was dropped when it did not all fit, and
// followed by note (kept whole when it fits at all).
func (t *Tail) Bytes(note string) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(note) > t.max {
		note = note[len(note)-t.max:]
	}
	budget := t.max - len(note)
	body, dropped := t.buf, t.dropped
	if len(body) > budget {
		dropped += int64(len(body) - budget)
		body = body[len(body)-budget:]
	}
	var marker string
	for dropped > 0 {
		// Make room for the marker; its length grows with the count, so
		// this settles in a round or two.
		m := fmt.Sprintf("[slotscaler: %d earlier bytes of output dropped]\n", dropped)
		over := len(m) + len(body) - budget
		if over <= 0 {
			marker = m
			break
		}
		if over > len(body) {
			break // no room for a marker at all
		}
		body = body[over:]
		dropped += int64(over)
	}
	out := make([]byte, 0, len(marker)+len(body)+len(note))
	out = append(out, marker...)
	out = append(out, body...)
	return append(out, note...)
}
