// Package faultproxy is a RESP-aware TCP proxy in front of a Redis server
// that loses, delays and cuts Redis traffic on purpose, for tests of what the
// product guarantees when replies go missing.
//
// It reads the client's stream as commands and Redis' stream as replies, so
// it knows which reply answers which command: a rule can let a command run
// and lose exactly its reply (CutAfterForward), hold a command or its reply,
// or drop it. Pipelines keep their order, blocking commands (BLMOVE) may be
// answered much later, pub/sub works in RESP2 and RESP3.
//
//	p := faultproxy.Start(t, srv.Addr())
//	f := p.Add(faultproxy.Rule{Command: "EVALSHA", Match: faultproxy.Arg(1, sha), Times: 1,
//		Action: faultproxy.CutAfterForward})
//	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1})
//	err := rdb.EvalSha(ctx, sha, keys).Err() // fails: the script ran, its reply was lost
//	<-f.Fired(1)
//
// Reply tracking stops on a connection that enters a mode where replies no
// longer answer commands one to one: RESP2 pub/sub, MONITOR, CLIENT REPLY
// OFF|SKIP. There CutAfterForward cuts right after forwarding the command and
// DelayReply does nothing. RESP3 pub/sub is tracked (its messages are pushes).
package faultproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const dialTimeout = 5 * time.Second

// Proxy forwards client connections to an upstream Redis, with faults.
type Proxy struct {
	ln  net.Listener
	log *slog.Logger
	wg  sync.WaitGroup

	mu       sync.Mutex
	upstream string
	faults   []*Fault
	conns    map[*conn]struct{}
	stall    chan struct{} // non-nil while stalled; closed when the stall ends
	down     bool
	closed   bool
	nextID   uint64

	held atomic.Int64 // commands and replies waiting for a stall to end
}

// Option configures a Proxy.
type Option func(*Proxy)

// WithLogger logs connections and faults (at debug level) to l; the
// default is to log nothing.
func WithLogger(l *slog.Logger) Option { return func(p *Proxy) { p.log = l } }

// New starts a proxy listening on 127.0.0.1 (a free port) that forwards to
// upstream: "host:port" or a redis:// URL.
func New(upstream string, opts ...Option) (*Proxy, error) {
	addr, err := hostPort(upstream)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening: %w", err)
	}
	p := &Proxy{ln: ln, log: slog.New(slog.DiscardHandler), upstream: addr, conns: map[*conn]struct{}{}}
	for _, o := range opts {
		o(p)
	}
	p.wg.Go(p.accept)
	return p, nil
}

// Start is New for a test: it fails the test when the proxy cannot start
// and closes the proxy when the test ends.
func Start(t testing.TB, upstream string, opts ...Option) *Proxy {
	t.Helper()
	p, err := New(upstream, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func hostPort(s string) (string, error) {
	if !strings.Contains(s, "://") {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("faultproxy: upstream %q: %w", s, err)
	}
	return u.Host, nil
}

// Addr returns the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns "redis://127.0.0.1:port/0".
func (p *Proxy) URL() string { return "redis://" + p.Addr() + "/0" }

// Upstream returns the address connections are forwarded to.
func (p *Proxy) Upstream() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upstream
}

// SetUpstream forwards new connections to addr ("host:port" or a redis://
// URL) from now on and cuts the current ones, as a fail-over does: clients
// reconnect, to the new server.
func (p *Proxy) SetUpstream(addr string) error {
	a, err := hostPort(addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.upstream = a
	p.mu.Unlock()
	p.log.Debug("faultproxy: upstream changed", "upstream", a)
	p.CutAll()
	return nil
}

// Add arms a rule and returns its Fault (Remove disarms it). Rules are
// tried in the order they were added; a command gets the action of the
// first armed rule it matches.
func (p *Proxy) Add(r Rule) *Fault {
	if r.Action.kind == 0 {
		panic("faultproxy: Rule without an Action")
	}
	f := &Fault{p: p, rule: r}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f)
	return f
}

// Stall stops forwarding in both directions while on: commands and replies
// are held in the proxy, connections stay open, new ones are accepted.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.stall == nil:
		p.stall = make(chan struct{})
	case !on && p.stall != nil:
		close(p.stall)
		p.stall = nil
	}
}

// Clear ends every fault: rules removed, stall and down off. Actions under
// way (a held command or reply) complete.
func (p *Proxy) Clear() {
	p.mu.Lock()
	faults := p.faults
	p.faults = nil
	p.down = false
	if p.stall != nil {
		close(p.stall)
		p.stall = nil
	}
	p.mu.Unlock()
	for _, f := range faults {
		f.mu.Lock()
		f.removed = true
		f.mu.Unlock()
	}
}

// Held returns how many commands and replies are waiting for a stall to
// end, so a test can wait until its command is held.
func (p *Proxy) Held() int { return int(p.held.Load()) }

// Down, while on, closes every connection and closes new ones as soon as
// they are accepted: Redis looks unreachable.
func (p *Proxy) Down(on bool) {
	p.mu.Lock()
	p.down = on
	p.mu.Unlock()
	if on {
		p.CutAll()
	}
}

// CutAll closes every current client connection (and its connection to
// Redis).
func (p *Proxy) CutAll() {
	p.mu.Lock()
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close("cut")
	}
}

// Conns returns the number of client connections being forwarded.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.CutAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Debug("faultproxy: accept", "err", err)
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors: don't spin
			continue
		}
		p.mu.Lock()
		down, upstream := p.down, p.upstream
		p.mu.Unlock()
		if down {
			nc.Close()
			continue
		}
		p.wg.Go(func() { p.serve(nc, upstream) })
	}
}

// serve dials upstream for one client connection and runs its two pumps.
func (p *Proxy) serve(client net.Conn, upstream string) {
	server, err := net.DialTimeout("tcp", upstream, dialTimeout)
	if err != nil {
		p.log.Debug("faultproxy: dialing upstream", "upstream", upstream, "err", err)
		client.Close()
		return
	}
	c := &conn{p: p, client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	// Down, Close or SetUpstream while we dialed: this connection belongs
	// to the old state, and CutAll did not see it.
	if p.down || p.closed || p.upstream != upstream {
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.nextID++
	c.id = p.nextID
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.log.Debug("faultproxy: connection", "conn", c.id, "client", client.RemoteAddr(), "upstream", upstream)
	p.wg.Go(c.commands)
	p.wg.Go(c.replies)
}

// match returns the first armed fault matching cmd, having counted the
// match, or nil.
func (p *Proxy) match(cmd command) *Fault {
	p.mu.Lock()
	faults := slices.Clone(p.faults)
	p.mu.Unlock()
	for _, f := range faults {
		if f.matches(cmd.args) && f.claim() {
			return f
		}
	}
	return nil
}

// gate waits while the proxy is stalled; false when c ended meanwhile.
func (p *Proxy) gate(c *conn) bool {
	for {
		p.mu.Lock()
		stall := p.stall
		p.mu.Unlock()
		if stall == nil {
			return true
		}
		p.held.Add(1)
		select {
		case <-stall:
			p.held.Add(-1)
		case <-c.done:
			p.held.Add(-1)
			return false
		}
	}
}

// conn is one client connection and its connection to Redis. Two pumps:
// commands (client to Redis) and replies (Redis to client). The commands
// pump queues one pending entry per command that gets a reply, before
// forwarding it; the replies pump takes one per reply.
type conn struct {
	p              *Proxy
	id             uint64
	client, server net.Conn
	done           chan struct{}
	closeOnce      sync.Once

	mu      sync.Mutex
	pending []pending

	resp3       bool        // HELLO 3 seen; only the commands pump uses it
	passthrough atomic.Bool // replies no longer answer commands one to one
	raw         atomic.Bool // a replication stream: bytes copied, not parsed
}

type pending struct {
	fault *Fault // nil: no fault on this command
	args  []string
}

func (c *conn) close(why string) {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.server.Close()
		close(c.done)
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
		c.p.log.Debug("faultproxy: connection closed", "conn", c.id, "why", why)
	})
}

// wait holds for d; false when c ended meanwhile.
func (c *conn) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

func (c *conn) commands() {
	in := bufio.NewReader(c.client)
	out := bufio.NewWriter(c.server)
	for {
		cmd, err := readCommand(in)
		if err != nil {
			c.close(fmt.Sprintf("reading from client: %v", err))
			return
		}
		if !c.p.gate(c) {
			return
		}
		f := c.p.match(cmd)
		var act Action
		if f != nil {
			act = f.rule.Action
			c.p.log.Debug("faultproxy: rule matched", "conn", c.id, "command", cmd.name(), "action", act)
		}
		switch act.kind {
		case actDrop:
			// Fired before the close, so a client that saw the close also
			// sees the count.
			f.fire()
			c.close("dropped " + cmd.name())
			return
		case actDelay:
			if out.Flush() != nil {
				c.close("writing to upstream")
				return
			}
			f.fire()
			if !c.wait(act.d) || !c.p.gate(c) {
				return
			}
		}
		tracked := c.classify(cmd)
		if tracked {
			c.mu.Lock()
			c.pending = append(c.pending, pending{fault: f, args: cmd.args})
			c.mu.Unlock()
		}
		if _, err := out.Write(cmd.raw); err != nil {
			c.close(fmt.Sprintf("writing to upstream: %v", err))
			return
		}
		if in.Buffered() == 0 || act.kind == actCutAfterForward {
			if err := out.Flush(); err != nil {
				c.close(fmt.Sprintf("writing to upstream: %v", err))
				return
			}
		}
		if act.kind == actCutAfterForward {
			if !tracked { // no reply to wait for: cut now
				f.fire()
				c.close("cut after forwarding " + cmd.name())
				return
			}
			// Forward nothing after it: the replies pump cuts the
			// connection when Redis answers. Until then, keep reading so
			// a client that gives up closes the connection to Redis too, as
			// it would without the proxy (a blocked command is cancelled).
			_, err := io.Copy(io.Discard, in)
			c.close(fmt.Sprintf("client gone while waiting to cut: %v", err))
			return
		}
	}
}

// classify says whether cmd gets exactly one reply of its own, and notes
// the protocol changes that decide that for later commands.
func (c *conn) classify(cmd command) bool {
	if c.passthrough.Load() {
		return false
	}
	switch cmd.name() {
	case "":
		return false // an empty inline line: Redis answers nothing
	case "HELLO":
		// Assumed to succeed: HELLO 3 fails only on Redis older than 6.
		if len(cmd.args) > 1 {
			c.resp3 = cmd.args[1] == "3"
		}
	case "RESET":
		c.resp3 = false
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
		if c.resp3 {
			return false // answered with pushes, which answer no command
		}
		c.passthrough.Store(true) // RESP2: every message is a plain array
		return false
	case "MONITOR":
		c.passthrough.Store(true)
		return false
	case "SYNC", "PSYNC":
		// A replica's link: after the reply comes an RDB payload (a bulk
		// without its CRLF, or an EOF-marked stream) and then the command
		// stream. Not RESP replies: from here on bytes are only copied.
		c.passthrough.Store(true)
		c.raw.Store(true)
		return false
	case "CLIENT":
		if len(cmd.args) > 2 && strings.EqualFold(cmd.args[1], "REPLY") && !strings.EqualFold(cmd.args[2], "ON") {
			c.passthrough.Store(true)
			return false
		}
	}
	return true
}

func (c *conn) replies() {
	in := bufio.NewReader(c.server)
	out := bufio.NewWriter(c.client)
	var buf []byte
	for {
		if c.raw.Load() {
			c.copyRaw(in, out)
			return
		}
		raw, push, err := readReply(in, buf[:0])
		buf = raw
		if err != nil {
			c.close(fmt.Sprintf("reading from upstream: %v", err))
			return
		}
		var pe pending
		if !push {
			// Entries queued before a switch to passthrough still answer
			// the replies that come first.
			c.mu.Lock()
			if len(c.pending) > 0 {
				pe = c.pending[0]
				c.pending = c.pending[1:]
			}
			c.mu.Unlock()
		}
		if !c.p.gate(c) {
			return
		}
		if f := pe.fault; f != nil {
			switch act := f.rule.Action; act.kind {
			case actCutAfterForward:
				out.Flush() // the replies before it reach the client
				f.fire()
				c.close("cut the reply to " + strings.ToUpper(pe.args[0]))
				return
			case actDelayReply:
				if out.Flush() != nil {
					c.close("writing to client")
					return
				}
				f.fire()
				if !c.wait(act.d) || !c.p.gate(c) {
					return
				}
			}
		}
		if _, err := out.Write(raw); err != nil {
			c.close(fmt.Sprintf("writing to client: %v", err))
			return
		}
		if in.Buffered() == 0 {
			if err := out.Flush(); err != nil {
				c.close(fmt.Sprintf("writing to client: %v", err))
				return
			}
		}
	}
}

// copyRaw forwards upstream bytes as they come (a replication stream),
// honouring stalls between chunks.
func (c *conn) copyRaw(in *bufio.Reader, out *bufio.Writer) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if !c.p.gate(c) {
				return
			}
			if _, werr := out.Write(buf[:n]); werr != nil || out.Flush() != nil {
				c.close("writing to client")
				return
			}
		}
		if err != nil {
			c.close(fmt.Sprintf("reading from upstream: %v", err))
			return
		}
	}
}
