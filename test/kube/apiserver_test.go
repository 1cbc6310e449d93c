package kube

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/rest"
	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
)

// startEtcd runs an embedded etcd on free loopback ports for the test's lifetime.
//
// A port found free is closed before etcd binds it, so another process (the
// parallel tests' API servers, the kernel's ephemeral ports) can take it in
// between: etcd cannot be handed a listener, so a bind that loses that race is
// retried on new ports instead of failing the test.
func startEtcd(t testing.TB) string {
	t.Helper()
	const attempts = 5
	for i := 1; ; i++ {
		e, clientURL, err := tryStartEtcd(t)
		if err == nil {
			t.Cleanup(e.Close)
			select {
			case <-e.Server.ReadyNotify():
			case <-time.After(60 * time.Second):
				t.Fatal("etcd did not become ready")
			}
			return clientURL
		}
		if i == attempts || !addrInUse(err) {
			t.Fatalf("starting etcd (attempt %d of %d): %v", i, attempts, err)
		}
		t.Logf("starting etcd: %v; retrying on other ports", err)
	}
}

func tryStartEtcd(t testing.TB) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	clientURL := freeURL(t)
	peerURL := freeURL(t)
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	return e, clientURL.String(), err
}

// addrInUse reports a lost race for a port. etcd does not always keep the
// error chain, so the message is checked too.
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// auditFlags make the API server log every pod DELETE (who, which pod,
// when, with what answer) to path, one JSON event per line, written before
// the request is answered: the evidence of who deleted what.
func auditFlags(t testing.TB, path string) []string {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "audit-policy.yaml")
	err := os.WriteFile(policy, []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [delete, create]
  resources: [{group: "", resources: [pods, pods/eviction]}]
- level: None
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--audit-policy-file=" + policy, "--audit-log-path=" + path,
		"--audit-log-mode=blocking", "--audit-log-format=json", "--audit-log-maxbackup=0"}
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.URL{Scheme: "http", Host: addr}
}

// startAPIServer runs a real kube-apiserver (RBAC on) backed by an embedded etcd
// and returns the admin client config.
func startAPIServer(t testing.TB, flags ...string) *rest.Config {
	t.Helper()
	etcdURL := startEtcd(t)
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = []string{etcdURL}
	server := apiservertesting.StartTestServerOrDie(t, nil, append([]string{
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
	}, flags...), storage)
	t.Cleanup(server.TearDownFn)
	cfg := rest.CopyConfig(server.ClientConfig)
	cfg.QPS, cfg.Burst = 500, 1000
	return cfg
}
