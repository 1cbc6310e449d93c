package kube

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfig writes a kubeconfig that acts as the chart's janitor
// ServiceAccount (impersonation), for the janitor binary.
func (c *cluster) kubeconfig() string {
	c.t.Helper()
	cfg := clientcmdapi.NewConfig()
	tls := c.admin.TLSClientConfig
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.admin.Host,
		CertificateAuthorityData: tls.CAData, CertificateAuthority: tls.CAFile, TLSServerName: tls.ServerName}
	cfg.AuthInfos["janitor"] = &clientcmdapi.AuthInfo{
		Token: c.admin.BearerToken, TokenFile: c.admin.BearerTokenFile,
		ClientCertificateData: tls.CertData, ClientCertificate: tls.CertFile,
		ClientKeyData: tls.KeyData, ClientKey: tls.KeyFile,
		Impersonate: "system:serviceaccount:" + releaseNamespace + ":" + janitorSA,
	}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "janitor"}
	cfg.CurrentContext = "test"
	path := filepath.Join(c.t.TempDir(), "kubeconfig")
	require.NoError(c.t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// startJanitorBinary runs `scaler janitor` as a process.
func (c *cluster) startJanitorBinary(identity, kubeconfig string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(scalerBin, "janitor")
	cmd.Env = append(os.Environ(), "REDIS_URL="+c.redis, "KEY_PREFIX="+c.prefix, "KUBECONFIG="+kubeconfig,
		"AGENT_REDIS_URL="+c.redis, "SYNC_INTERVAL=200ms", "LISTEN_ADDRESS="+testutil.FreeAddr(c.t), "LOG_LEVEL=warn",
		"LEADER_ELECT=true", "LEADER_ELECT_NAMESPACE="+releaseNamespace, "LEADER_ELECT_IDENTITY="+identity,
		"LEADER_ELECT_LEASE_DURATION=2s", "REAP_INTERVAL=200ms")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(c.t, cmd.Start())
	c.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// Two `scaler janitor` processes with leader election: one acts; when it is
// killed the other takes over; neither hand-over nor the pair ever create
// more pods than asked for.
func TestJanitorBinaryLeaderElection(t *testing.T) {
	c := newCluster(t)
	kc := c.kubeconfig()
	c.newPool("ns", "p", 3)
	procs := map[string]*exec.Cmd{"j1": c.startJanitorBinary("j1", kc), "j2": c.startJanitorBinary("j2", kc)}
	c.waitActive("ns", "p", 3)

	var leader string
	require.Eventually(t, func() bool {
		l, err := c.kube.CoordinationV1().Leases(releaseNamespace).Get(c.ctx, "slotscaler-janitor", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		leader = *l.Spec.HolderIdentity
		return procs[leader] != nil
	}, 30*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second) // more passes by both processes
	require.Len(t, c.livePods("ns", "p"), 3, "two janitors, one acting: no extra pods")

	require.NoError(t, procs[leader].Process.Signal(syscall.SIGKILL))
	_ = procs[leader].Wait()
	c.scaleTo("ns", "p", 5)
	c.waitActive("ns", "p", 5)
	l, err := c.kube.CoordinationV1().Leases(releaseNamespace).Get(c.ctx, "slotscaler-janitor", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, leader, *l.Spec.HolderIdentity, "the follower took over")
	time.Sleep(time.Second)
	require.Len(t, c.livePods("ns", "p"), 5)

	// The survivor stops cleanly on SIGTERM.
	for id, p := range procs {
		if id == leader {
			continue
		}
		require.NoError(t, p.Process.Signal(syscall.SIGTERM))
		require.NoError(t, p.Wait(), "janitor exits 0 on SIGTERM")
	}
	c.audit.check(t)
}
