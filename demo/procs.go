package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/slotscaler/slotscaler/internal/childproc"
)

// console is the demo's terminal: whole lines from many goroutines and
// child processes, never interleaved within a line.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// Printf writes one line (a newline is added).
func (c *console) Printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format+"\n", args...)
}

// prefixed returns a writer that puts prefix before every line written to
// it. Close writes a last line without newline, if any.
func (c *console) prefixed(prefix string) *lineWriter {
	return &lineWriter{c: c, prefix: prefix}
}

type lineWriter struct {
	c      *console
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: don't hold it forever
		l.emit(l.buf)
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineWriter) emit(line []byte) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	fmt.Fprintf(l.c.w, "%s %s\n", l.prefix, line)
}

func (l *lineWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
	return nil
}

// child is a process the demo started: the scaler, the dashboard or an
// agent. It runs in its own process group, so the terminal's Ctrl-C reaches
// only the demo, which stops its children in order; on Linux it also dies
// with the demo (parent-death signal) if the demo is killed.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *lineWriter
	done chan struct{}
	err  error // after done
}

// baseEnv is what every child gets from the demo's environment; the rest of
// a child's settings are given explicitly.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// startChild starts bin with env; its output goes to the console, each
// line prefixed with [name].
func startChild(con *console, name, bin string, env []string) (*child, error) {
	c := &child{name: name, out: con.prefixed("[" + name + "]"), done: make(chan struct{})}
	c.cmd = exec.Command(bin)
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = sysProcAttr()
	// A grandchild holding the output pipe must not keep Wait forever.
	c.cmd.WaitDelay = 2 * time.Second
	if err := childproc.Start(c.cmd); err != nil { // its parent-death signal fires only when the demo ends
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		_ = c.out.Close()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the child's process group.
func (c *child) signal(sig syscall.Signal) {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
}

// stop sends SIGTERM, waits up to grace (or ctx), then SIGKILLs the group
// and waits for the exit. It reports whether the child needed the SIGKILL.
func (c *child) stop(ctx context.Context, grace time.Duration) (killed bool) {
	c.signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return false
	case <-t.C:
	case <-ctx.Done():
	}
	c.signal(syscall.SIGKILL)
	<-c.done
	return true
}

// exitCode is the child's exit code after done (-1: killed by a signal).
func (c *child) exitCode() int {
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	if c.err != nil {
		return -1
	}
	return 0
}
