package testutil

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// StartScaler runs the scaler binary bin with env added to the test's
// environment, on free loopback ports, and returns its gRPC address once it
// accepts connections. At cleanup it gets SIGINT and must exit 0 within
// twenty seconds, twice its shutdown timeout (a graceful stop is part of
// what the tests check).
func StartScaler(t testing.TB, bin string, env ...string) string {
	t.Helper()
	addr := FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), append([]string{
		"LISTEN_ADDRESS=" + addr, "HEALTH_ADDRESS=" + FreeAddr(t), "METRICS_ADDRESS=" + FreeAddr(t),
	}, env...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the scaler: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the scaler did not exit 0 on SIGINT: %v", err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("the scaler did not stop within 20s of SIGINT (its shutdown timeout is 10s)")
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scaler does not accept connections on %s: %v", addr, err)
		}
	}
}
