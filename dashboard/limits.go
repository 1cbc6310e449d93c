package main

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/httprate"
)

// authWindow is the window of the failed-authentication limit.
const authWindow = time.Minute

// failureLimiter bounds failed logins and bearer checks per client IP, so a
// token cannot be guessed at line rate. Only failures count; a client over
// the limit is refused before its credential is even checked (else each
// refused guess would still say whether it was right), until the window
// has slid past its failures. Counts are per replica, in memory.
type failureLimiter struct {
	limit int
	rl    *httprate.RateLimiter
}

func newFailureLimiter(perMinute int) *failureLimiter {
	return &failureLimiter{limit: perMinute, rl: httprate.NewRateLimiter(perMinute, authWindow)}
}

// blocked reports whether the client has used up its failures; when it has,
// it answers 429 with Retry-After through refuse.
func (l *failureLimiter) blocked(w http.ResponseWriter, r *http.Request, refuse func(w http.ResponseWriter, r *http.Request)) bool {
	_, rate, err := l.rl.Status(clientIP(r))
	if err != nil || int(math.Round(rate)) < l.limit {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(authWindow.Seconds())))
	refuse(w, r)
	return true
}

// failed counts one failure of the client.
func (l *failureLimiter) failed(r *http.Request) {
	// OnLimit only counts (it refuses nothing here: blocked decides); the
	// headers it sets go to a throwaway header map.
	l.rl.OnLimit(discardHeaders{}, r, clientIP(r))
}

// discardHeaders is a ResponseWriter whose headers nobody reads.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header         { return http.Header{} }
func (discardHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (discardHeaders) WriteHeader(int)             {}

// loginPostsPerMinute bounds every POST /login of a client IP, right or
// wrong: each good one writes a session to Redis.
const loginPostsPerMinute = 30

// streamKey is who a stream counts against: the token's name when the
// request authenticated (so one token cannot fan out over many addresses),
// else the client IP.
func streamKey(r *http.Request) string {
	if id := identityOf(r.Context()); id != nil {
		return id.Kind + ":" + id.Name
	}
	return "ip:" + clientIP(r)
}

// Defaults of the flags, for servers built without run (tests).
const (
	defaultAuthFailuresPerMinute = 10
	defaultMaxStreamsPerClient   = 32
)

// sseWriteTimeout bounds one write of a stream (an SSE event, an events
// answer): a client that stops reading is dropped after it.
const sseWriteTimeout = 30 * time.Second
