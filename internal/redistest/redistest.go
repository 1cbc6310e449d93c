// Package redistest gives tests real redis-server instances.
//
// Standalone and ClusterAddrs return servers shared by every test in the test
// binary (and, under scripts/test.sh, by every test binary of the run): isolate
// keys with Prefix and never FLUSHALL/FLUSHDB/CONFIG SET them. Tests that stop,
// kill, restart or reconfigure Redis use a private server from Start.
//
// Servers started here are killed when the test binary exits, even on panic or
// os.Exit (see spawn).
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/slotscaler/slotscaler/internal/childproc"
)

const (
	envURL          = "SLOTSCALER_TEST_REDIS_URL"
	envClusterAddrs = "SLOTSCALER_TEST_REDIS_CLUSTER_ADDRS"

	readyTimeout = 10 * time.Second
	startTries   = 5 // a "free" port can be taken between our probe and redis' bind
	notFoundMsg  = "%s not found: run `make test` (it installs it) or apt-get install redis-server"
)

// Standalone returns a redis:// URL of a shared standalone redis-server for this test binary:
// SLOTSCALER_TEST_REDIS_URL when set (scripts/test.sh sets it), otherwise one redis-server
// this package starts once per test binary (sync.Once) on a free loopback port.
func Standalone(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(envURL); u != "" {
		return u
	}
	shared.standaloneOnce.Do(func() {
		var s *Server
		if s, shared.standaloneErr = startShared(config{}, "standalone"); s != nil {
			shared.standaloneURL = s.URL()
		}
	})
	if shared.standaloneErr != nil {
		t.Fatalf("redistest: shared standalone redis: %v", shared.standaloneErr)
	}
	return shared.standaloneURL
}

// ClusterAddrs returns the addresses of a shared three-node Redis Cluster: SLOTSCALER_TEST_REDIS_CLUSTER_ADDRS
// when set, otherwise a cluster this package starts once per test binary (3 redis-server processes + redis-cli --cluster create, waits for cluster_state:ok).
func ClusterAddrs(t testing.TB) []string {
	t.Helper()
	if v := os.Getenv(envClusterAddrs); v != "" {
		var addrs []string
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		return addrs
	}
	shared.clusterOnce.Do(func() { shared.clusterAddrs, shared.clusterErr = startCluster() })
	if shared.clusterErr != nil {
		t.Fatalf("redistest: shared redis cluster: %v", shared.clusterErr)
	}
	return append([]string(nil), shared.clusterAddrs...) // callers may modify their copy
}

var shared struct {
	standaloneOnce sync.Once
	standaloneURL  string
	standaloneErr  error

	clusterOnce  sync.Once
	clusterAddrs []string
	clusterErr   error
}

// Server is a redis-server process owned by one test.
type Server struct {
	cfg  config
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

type config struct {
	appendOnly bool
	extraArgs  []string // cluster settings for cluster nodes
	replicaOf  string   // "host port" of the primary, for a replica
}

// Option configures a server started by Start.
type Option func(*config)

// WithAppendOnly turns on the AOF with appendfsync always, so data written
// before Kill or Stop is there again after Restart.
func WithAppendOnly() Option { return func(c *config) { c.appendOnly = true } }

// WithReplicaOf makes the server a replica of primary.
func WithReplicaOf(primary *Server) Option {
	return func(c *config) { c.replicaOf = "127.0.0.1 " + strconv.Itoa(primary.port) }
}

// Start starts a private redis-server for one test (for tests that stop, kill or restart Redis)
// and stops it in t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir() // registered before our cleanup, so removed after the server is dead
	s, err := startNew(cfg, dir)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { s.signalAndWait(syscall.SIGKILL) })
	return s
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns "redis://127.0.0.1:port/0".
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop shuts the server down gracefully (SIGTERM) and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.signalAndWait(syscall.SIGTERM); err != nil {
		t.Fatalf("redistest: stop %s: %v", s.Addr(), err)
	}
}

// Kill kills the server (SIGKILL, like a crash) and waits for it to exit.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if err := s.signalAndWait(syscall.SIGKILL); err != nil {
		t.Fatalf("redistest: kill %s: %v", s.Addr(), err)
	}
}

// Restart starts the server again on the same port with the same data dir
// (stopping it first if it still runs). Data survives only with WithAppendOnly.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart on port %d: %v", s.port, err)
	}
}

// Wipe kills the server, deletes everything in its data directory (the AOF
// included) and starts it again on the same port, empty: Redis lost its data.
func (s *Server) Wipe(t testing.TB) {
	t.Helper()
	s.Kill(t)
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatalf("redistest: wipe %s: %v", s.Addr(), err)
	}
	for _, e := range entries {
		if e.Name() == "redis.log" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			t.Fatalf("redistest: wipe %s: %v", s.Addr(), err)
		}
	}
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart after wipe on port %d: %v", s.port, err)
	}
}

// Prefix returns a key prefix unique to this test (e.g. "t" + 10 random hex chars), so tests can share one server safely.
// All prefixes have the same length, so none is a prefix of another.
func Prefix(t testing.TB) string {
	t.Helper()
	for {
		b := make([]byte, 5)
		if _, err := rand.Read(b); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		p := "t" + hex.EncodeToString(b)
		if _, dup := issuedPrefixes.LoadOrStore(p, true); !dup {
			return p
		}
	}
}

var issuedPrefixes sync.Map

// startShared starts a server for the whole test binary. Its dir cannot be
// removed at exit (there is no hook for that), so it carries our pid and
// dirs of dead test binaries are swept on the next run.
func startShared(cfg config, name string) (*Server, error) {
	sweepStaleDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-%s-", sharedDirPrefix, os.Getpid(), name))
	if err != nil {
		return nil, err
	}
	return startNew(cfg, dir)
}

const sharedDirPrefix = "slotscaler-redistest-"

func sweepStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), sharedDirPrefix+"*"))
	for _, m := range matches {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(m), sharedDirPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err == nil && pid != os.Getpid() && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(m)
		}
	}
}

// startNew starts a server in dir on a free port, retrying with another port
// when the one it picked was taken meanwhile.
func startNew(cfg config, dir string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf(notFoundMsg, "redis-server")
	}
	var err error
	for range startTries {
		s := &Server{cfg: cfg, dir: dir}
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if len(cfg.extraArgs) > 0 { // cluster node: needs a free bus port too
			bus, perr := freePort()
			if perr != nil {
				return nil, perr
			}
			s.cfg.extraArgs = append(append([]string(nil), cfg.extraArgs...), "--cluster-port", strconv.Itoa(bus))
		}
		os.Remove(s.logPath()) // so the check below sees only this attempt's log
		if err = s.start(); err == nil {
			return s, nil
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server on s.port and s.dir and waits until it answers PING.
func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "", // stdout, which is redis.log (also catches config errors printed before logging starts)
	}
	if s.cfg.appendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.cfg.extraArgs...)
	if s.cfg.replicaOf != "" {
		args = append(args, "--replicaof", s.cfg.replicaOf)
	}

	logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile // *os.File: no copying goroutines needed
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL, // die with the test binary, even on panic or os.Exit
		Setpgid:   true,            // own group: Ctrl-C reaches only the test binary, and Kill also hits AOF-rewrite children
	}
	if err := childproc.Start(cmd); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	if err := waitReady(s.Addr(), done); err != nil {
		s.signalAndWait(syscall.SIGKILL)
		return fmt.Errorf("redis-server on %s: %w\n--- tail of %s ---\n%s", s.Addr(), err, s.logPath(), s.logTail())
	}
	return nil
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// signalAndWait signals the server's process (its whole group for SIGKILL)
// and waits for it to exit; a no-op when it is not running.
func (s *Server) signalAndWait(sig syscall.Signal) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	pid := cmd.Process.Pid
	if sig == syscall.SIGKILL {
		syscall.Kill(-pid, sig)
	} else {
		syscall.Kill(pid, sig)
	}
	select {
	case <-done:
		return nil
	case <-time.After(readyTimeout):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("did not exit within %v after %v; killed it\n%s", readyTimeout, sig, s.logTail())
	}
}

// waitReady polls addr with PING until it answers PONG, the process exits
// (done closed) or readyTimeout passes.
func waitReady(addr string, done <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		select {
		case <-done:
			return errors.New("exited during startup")
		default:
		}
		reply, err := command(addr, "PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", reply) // e.g. LOADING while the AOF is read
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %w", readyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command sends one RESP command on a fresh connection and returns a simple
// string or bulk string reply; an error reply is returned as an error.
func command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(req.Bytes()); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}

// startCluster starts three cluster-enabled nodes, joins them with
// redis-cli --cluster create (3 masters, no replicas) and waits until every
// node reports a healthy cluster that knows all three nodes.
func startCluster() ([]string, error) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf(notFoundMsg, bin)
		}
	}
	cfg := config{extraArgs: []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "5000",
	}}
	var addrs []string
	for i := range 3 {
		s, err := startShared(cfg, "cluster"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, s.Addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}

	deadline := time.Now().Add(readyTimeout)
	for _, a := range addrs {
		for {
			info, err := command(a, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_slots_ok:16384") &&
				strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("cluster node %s not ok within %v: %v\n%s", a, readyTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return addrs, nil
}
