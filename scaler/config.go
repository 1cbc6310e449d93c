package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/history"
)

// Config is every setting of the scaler; each flag has an environment twin
// (--redis-url / REDIS_URL).
type Config struct {
	config.Common
	ListenAddress    string
	HealthAddress    string
	MetricsAddress   string
	TLSCertFile      string
	TLSKeyFile       string
	TLSClientCAFile  string
	NudgeTolerance   bool
	StreamPoll       time.Duration
	MaxStreams       int
	ConfigCacheTTL   time.Duration
	RedisTimeout     time.Duration
	ReapInterval     time.Duration
	HistoryInterval  time.Duration
	ShutdownTimeout  time.Duration
	NotifyConfig     string
	Notify           bool
	NotifyAgentPools bool
	Kubeconfig       string
}

func parseConfig(args []string, lookup func(string) (string, bool)) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("scaler", flag.ContinueOnError)
	fs.StringVar(&c.ListenAddress, "listen-address", ":9090", "gRPC address KEDA calls (the external scaler)")
	fs.StringVar(&c.HealthAddress, "health-address", ":9091", "plaintext gRPC health address (services liveness, readiness), for probes when the main port uses TLS")
	fs.StringVar(&c.MetricsAddress, "metrics-address", ":8081", "HTTP address of /metrics")
	c.Common.Register(fs, "slot store Redis: redis://, rediss://, redis+cluster://, redis+sentinel://; empty runs an embedded in-memory Redis (local use only)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "server certificate (PEM) for the gRPC port; enables TLS")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "server private key (PEM)")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca-file", "", "CA (PEM) that client certificates must chain to; enables mTLS (KEDA's TriggerAuthentication tlsClientCert)")
	fs.BoolVar(&c.NudgeTolerance, "nudge-tolerance", false, "default for the nudgeTolerance trigger metadata: nudge scale-ups inside the HPA's tolerance band (for clusters that cannot set behavior.scaleUp.tolerance)")
	fs.DurationVar(&c.StreamPoll, "stream-poll-interval", 500*time.Millisecond, "how often StreamIsActive re-reads a pool")
	fs.IntVar(&c.MaxStreams, "max-streams-per-client", 1000, "StreamIsActive streams one client (its mTLS certificate's subject, else its IP) may hold open; KEDA holds one per external-push ScaledObject")
	fs.DurationVar(&c.ConfigCacheTTL, "config-cache-ttl", 30*time.Second, "how long a pool's slot policy is cached")
	fs.DurationVar(&c.RedisTimeout, "redis-timeout", time.Second, "bound on the Redis reads of one KEDA call (KEDA's own timeout is 3s by default)")
	fs.DurationVar(&c.ReapInterval, "reap-interval", time.Second, "how often to expire heartbeats, reservations and queue ages of every pool (0: off, e.g. when the janitor reaps); several reapers may run at once")
	fs.DurationVar(&c.HistoryInterval, "history-interval", history.DefaultInterval, "how often to record every pool's history (desired, live, busy and idle pods, the queue) for the dashboard's charts, kept 1h as recorded and 24h as 5-minute means (0: off); several scalers may record at once, each pool keeps one sample per interval")
	fs.StringVar(&c.NotifyConfig, "notify-config", "", "notifier config file (YAML: webhooks with pool globs, URL and signing secret from files or variables); empty: no webhooks")
	fs.BoolVar(&c.Notify, "notify", true, "deliver the webhooks of --notify-config and --notify-agentpools; replicas share the work through Redis consumer groups (false: another scaler deployment delivers)")
	fs.BoolVar(&c.NotifyAgentPools, "notify-agentpools", false, "also deliver the webhooks AgentPools declare (spec.notifications, copied into Redis by the janitor); reads their Secrets in each pool's namespace (needs get on secrets there)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file for --notify-agentpools; empty: the in-cluster service account")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take before connections are cut")
	if err := config.Parse(fs, args, lookup); err != nil {
		return Config{}, err
	}
	return c, c.validate()
}

func (c Config) validate() error {
	errs := []error{c.Common.Validate()}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, errors.New("--tls-client-ca-file needs --tls-cert-file and --tls-key-file"))
	}
	if c.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("--max-streams-per-client %d: want at least 1", c.MaxStreams))
	}
	if c.StreamPoll < 10*time.Millisecond || c.StreamPoll > time.Second {
		errs = append(errs, fmt.Errorf("--stream-poll-interval %v: want 10ms-1s (KEDA expects activity within a second)", c.StreamPoll))
	}
	if c.ConfigCacheTTL < 0 {
		errs = append(errs, fmt.Errorf("--config-cache-ttl %v must not be negative", c.ConfigCacheTTL))
	}
	if c.RedisTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--redis-timeout %v must be positive", c.RedisTimeout))
	}
	if c.ReapInterval < 0 {
		errs = append(errs, fmt.Errorf("--reap-interval %v must not be negative", c.ReapInterval))
	}
	if c.HistoryInterval != 0 && (c.HistoryInterval < time.Second || c.HistoryInterval > history.DefaultLayout.CoarseInterval) {
		errs = append(errs, fmt.Errorf("--history-interval %v: want 0 (off) or 1s-%v", c.HistoryInterval, history.DefaultLayout.CoarseInterval))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %v must be positive", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// tlsConfig loads the server's TLS settings; nil when TLS is off.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS key pair: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCAFile != "" {
		pem, err := os.ReadFile(c.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s holds no PEM certificate", c.TLSClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
