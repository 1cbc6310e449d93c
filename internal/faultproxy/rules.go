package faultproxy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Action is what a Rule does to a command it matches.
type Action struct {
	kind actionKind
	d    time.Duration
}

type actionKind int

const (
	_ actionKind = iota
	actCutAfterForward
	actDrop
	actDelay
	actDelayReply
)

var (
	// CutAfterForward forwards the command to Redis, waits for its reply and
	// closes the client's connection instead of delivering it: the command
	// ran, its reply is lost. Replies to commands sent before it are
	// delivered first; commands the client pipelined after it are not
	// forwarded. A blocking command is cut when Redis finally answers it.
	CutAfterForward = Action{kind: actCutAfterForward}
	// Drop closes the client's connection without forwarding the command:
	// it never reaches Redis.
	Drop = Action{kind: actDrop}
)

// Delay holds the command for d before forwarding it (and the commands the
// client sent after it on that connection, which keeps their order). Like a
// late packet, it reaches Redis even if the client gave up meanwhile; only
// the proxy cutting the connection (CutAll, Down, SetUpstream, Close)
// discards it.
func Delay(d time.Duration) Action { return Action{kind: actDelay, d: d} }

// DelayReply forwards the command at once and holds its reply for d (and
// the replies after it): Redis runs the command while the client may time
// out waiting. If the client gives up and closes, the reply is discarded.
func DelayReply(d time.Duration) Action { return Action{kind: actDelayReply, d: d} }

func (a Action) String() string {
	switch a.kind {
	case actCutAfterForward:
		return "CutAfterForward"
	case actDrop:
		return "Drop"
	case actDelay:
		return fmt.Sprintf("Delay(%v)", a.d)
	case actDelayReply:
		return fmt.Sprintf("DelayReply(%v)", a.d)
	default:
		return "no action"
	}
}

// Rule says which commands get a fault, and which.
type Rule struct {
	// Command is the command name, case-insensitive ("EVALSHA"); empty
	// matches every command.
	Command string
	// Match, when set, must also accept the command's words: args[0] is the
	// command name as sent, args[1:] its arguments. It runs on the
	// connection's goroutine, outside the proxy's locks.
	Match func(args []string) bool
	// Times, when positive, arms the rule for its first Times matches only.
	Times int
	// Action is done to each matched command.
	Action Action
}

// Arg matches commands whose args[i] (args[0] is the name) equals v.
func Arg(i int, v string) func(args []string) bool {
	return func(args []string) bool { return i < len(args) && args[i] == v }
}

// ArgContains matches commands with an argument (not the name) containing s.
func ArgContains(s string) func(args []string) bool {
	return func(args []string) bool {
		return len(args) > 1 && slices.ContainsFunc(args[1:], func(a string) bool { return strings.Contains(a, s) })
	}
}

// Fault is a Rule added to a Proxy.
type Fault struct {
	p    *Proxy
	rule Rule

	mu      sync.Mutex
	matched int
	acted   int
	removed bool
	waiters []waiter
}

type waiter struct {
	n  int
	ch chan struct{}
}

// Remove disarms the fault. An action already under way (a held command or
// reply) completes.
func (f *Fault) Remove() {
	f.mu.Lock()
	f.removed = true
	f.mu.Unlock()
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	f.p.faults = slices.DeleteFunc(f.p.faults, func(g *Fault) bool { return g == f })
}

// Matched returns how many commands the rule has matched (and so taken
// action on).
func (f *Fault) Matched() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.matched
}

// Acted returns how many of the rule's actions have taken effect (see Fired).
func (f *Fault) Acted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acted
}

// Armed reports whether the rule still matches commands: it was not removed
// and, with Times set, has matched fewer than Times.
func (f *Fault) Armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armedLocked()
}

// Fired returns a channel closed once the rule's actions have taken effect
// n times, so a test can wait for a fault instead of sleeping. An action
// takes effect when:
//   - CutAfterForward: Redis answered the command and the proxy is closing
//     the client's connection without the reply (the command ran);
//   - Drop: the proxy is closing the client's connection (the command never
//     reached Redis);
//   - Delay: the command is being held (it has not reached Redis);
//   - DelayReply: Redis answered and the reply is being held (the command
//     ran; the client has not seen the reply).
func (f *Fault) Fired(n int) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	if f.acted >= n {
		close(ch)
		return ch
	}
	f.waiters = append(f.waiters, waiter{n, ch})
	return ch
}

func (f *Fault) armedLocked() bool {
	return !f.removed && (f.rule.Times <= 0 || f.matched < f.rule.Times)
}

// claim counts a match if the rule is still armed. Two connections racing
// for the last of Times matches: exactly one wins.
func (f *Fault) claim() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armedLocked() {
		return false
	}
	f.matched++
	return true
}

func (f *Fault) fire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acted++
	f.waiters = slices.DeleteFunc(f.waiters, func(w waiter) bool {
		if w.n <= f.acted {
			close(w.ch)
			return true
		}
		return false
	})
}

func (f *Fault) matches(args []string) bool {
	if len(args) == 0 {
		return false
	}
	if f.rule.Command != "" && !strings.EqualFold(args[0], f.rule.Command) {
		return false
	}
	return f.rule.Match == nil || f.rule.Match(args)
}
