package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
)

// Config is every setting of the dashboard; each flag has an environment
// twin (--redis-url / REDIS_URL).
type Config struct {
	config.Common
	ListenAddress   string
	MetricsAddress  string
	APITokens       tokens
	ReadAuth        bool
	MaxPayload      int
	PollInterval    time.Duration
	LiveInterval    time.Duration
	ShutdownTimeout time.Duration
	// Session cookies of the pages' login (read auth).
	SecureCookie       bool
	SessionLifetime    time.Duration
	SessionIdleTimeout time.Duration
	// Abuse bounds, per client IP (or token name for streams).
	TrustedProxies        cidrs
	AuthFailuresPerMinute int
	MaxStreamsPerClient   int
	// APITokensFile holds scoped tokens (tokens.go says the format).
	APITokensFile string
	// SeparateApproverPools: in these pools the submitter of a task may
	// not approve it.
	SeparateApproverPools poolGlobs
	// OIDC sign-in of the pages (oidc.go); off without an issuer.
	OIDC oidcSettings
}

// oidcSettings configure the pages' sign-in with an OpenID provider.
type oidcSettings struct {
	Issuer           string
	ClientID         string
	ClientSecret     string
	ClientSecretFile string
	RedirectURL      string
	GroupsClaim      string
	ProviderName     string
	// Scopes asked for besides openid (Dex wants "groups" for the groups
	// claim; some providers refuse scopes they do not know).
	Scopes string
	// ProviderLogout: signing out also ends the provider's session.
	ProviderLogout bool
}

func (o oidcSettings) enabled() bool { return o.Issuer != "" }

// cidrs is a comma-separated list of networks (a bare address is a /32 or /128).
type cidrs []netip.Prefix

func (c cidrs) String() string {
	parts := make([]string, 0, len(c))
	for _, p := range c {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, ",")
}

// Set parses "10.0.0.0/8,192.168.1.7".
func (c *cidrs) Set(s string) error {
	var out cidrs
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return fmt.Errorf("trusted proxies: %q is neither an address nor a CIDR", part)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return fmt.Errorf("trusted proxies: %q is not a CIDR (want e.g. 10.0.0.0/8)", part)
		}
		out = append(out, p.Masked())
	}
	*c = out
	return nil
}

// tokens maps a token's name to its secret. String never shows a secret, so
// the flag's value can be printed and logged.
type tokens map[string]string

func (t tokens) String() string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n+"=<redacted>")
	}
	return strings.Join(names, ",")
}

// Set parses "name=token,name2=token2".
func (t *tokens) Set(s string) error {
	m := tokens{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, secret, ok := strings.Cut(part, "=")
		name, secret = strings.TrimSpace(name), strings.TrimSpace(secret)
		if !ok || name == "" || secret == "" {
			// The entry may hold a secret: name its position, not its text.
			return errors.New("api tokens: want name=token pairs separated by commas")
		}
		if _, dup := m[name]; dup {
			return fmt.Errorf("api tokens: name %q given twice", name)
		}
		m[name] = secret
	}
	*t = m
	return nil
}

func parseConfig(args []string, lookup func(string) (string, bool)) (Config, error) {
	return parseConfigWith(args, lookup, nil)
}

// parseConfigWith parses with usage output to out (nil: stderr).
func parseConfigWith(args []string, lookup func(string) (string, bool), out io.Writer) (Config, error) {
	c := Config{APITokens: tokens{}}
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	if out != nil {
		fs.SetOutput(out)
	}
	fs.StringVar(&c.ListenAddress, "listen-address", ":8080", "HTTP address of the dashboard, the JSON API, /healthz and /readyz")
	fs.StringVar(&c.MetricsAddress, "metrics-address", ":8082", "HTTP address of /metrics (Prometheus); empty turns it off")
	c.Common.Register(fs, "slot store Redis: redis://, rediss://, redis+cluster://, redis+sentinel://; empty runs an embedded in-memory Redis (local use only)")
	fs.Var(&c.APITokens, "api-tokens", "bearer tokens with full access (every verb in every pool), name=token,name2=token2; the name is recorded as who submitted, approved, rejected or cancelled; scoped tokens go in --api-tokens-file")
	fs.StringVar(&c.APITokensFile, "api-tokens-file", "", "YAML or JSON file of scoped tokens: each a name, its secret (secret, secretEnv or secretFile) and scopes (verbs read, submit, approve, cancel on pool globs like team-a/* or */terraform); see the README's \"Tokens and scopes\"")
	fs.Var(&c.SeparateApproverPools, "separate-approver-pools", "pool globs (team-a/*,*/prod) where the identity that submitted a task may not approve it (four eyes); a task there without a recorded submitter cannot be approved")
	fs.BoolVar(&c.ReadAuth, "read-auth", true, "require a bearer token (or the pages' login session) for pages and API reads too: task payloads and output may hold secrets; without --api-tokens nobody can read; false serves reads to anyone who reaches the port")
	fs.IntVar(&c.MaxPayload, "max-payload", 1<<20, "largest task payload in bytes (must match the slot store's limit)")
	fs.DurationVar(&c.PollInterval, "events-poll-interval", 250*time.Millisecond, "how often a waiting events request re-reads the stream")
	fs.DurationVar(&c.LiveInterval, "live-interval", 2*time.Second, "how often a watched pool is read for its live viewers (one Redis read per pool, whatever the number of viewers: its O(1) change token, and the snapshot only when the pool changed or 30s have passed)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take before connections are cut")
	fs.BoolVar(&c.SecureCookie, "secure-cookie", true, "mark the login session cookie Secure (browsers send it over HTTPS only, also when TLS ends at an Ingress); false only for plain-HTTP local use (make demo)")
	fs.DurationVar(&c.SessionLifetime, "session-lifetime", 12*time.Hour, "how long a page login lasts at most")
	fs.DurationVar(&c.SessionIdleTimeout, "session-idle-timeout", time.Hour, "a page login ends after this long without a request")
	fs.Var(&c.TrustedProxies, "trusted-proxies", "CIDRs of reverse proxies (e.g. the Ingress controller's pods) whose X-Forwarded-For / X-Real-IP name the client; empty: the TCP peer is the client, forwarding headers are ignored")
	fs.IntVar(&c.AuthFailuresPerMinute, "auth-failures-per-minute", 10, "failed logins and bearer checks a client IP may make per minute; beyond: 429 with Retry-After (successes never count)")
	fs.IntVar(&c.MaxStreamsPerClient, "max-streams-per-client", 32, "open live grids (SSE) plus waiting events requests per client (token name when authenticated, else IP); beyond: 429")
	fs.StringVar(&c.OIDC.Issuer, "oidc-issuer", "", "OpenID provider's issuer URL (https://login.example.com/realms/x); set, the login page offers \"Sign in with\" it (authorization code flow with PKCE); groups map to scopes in --api-tokens-file's \"groups:\"")
	fs.StringVar(&c.OIDC.ClientID, "oidc-client-id", "", "the dashboard's client id at the OpenID provider")
	fs.StringVar(&c.OIDC.ClientSecret, "oidc-client-secret", "", "the dashboard's client secret at the OpenID provider (prefer --oidc-client-secret-file or the environment: flags show in ps)")
	fs.StringVar(&c.OIDC.ClientSecretFile, "oidc-client-secret-file", "", "file holding the client secret (a mounted Secret); instead of --oidc-client-secret")
	fs.StringVar(&c.OIDC.RedirectURL, "oidc-redirect-url", "", "the dashboard's callback as the provider knows it: https://<dashboard host>/login/oidc/callback")
	fs.StringVar(&c.OIDC.GroupsClaim, "oidc-groups-claim", "groups", "ID token claim listing the user's groups (a list of strings, or one string)")
	fs.StringVar(&c.OIDC.Scopes, "oidc-scopes", "email,profile", "scopes to ask for besides openid, comma-separated (add groups for Dex)")
	fs.BoolVar(&c.OIDC.ProviderLogout, "oidc-provider-logout", true, "signing out of the dashboard also goes to the provider's end_session_endpoint, when it has one, which sends the browser back to the dashboard's / (register that as a post-logout redirect URI)")
	fs.StringVar(&c.OIDC.ProviderName, "oidc-provider-name", "", "name on the login page's \"Sign in with\" link; empty: the issuer's host")
	if err := config.Parse(fs, args, lookup); err != nil {
		return Config{}, err
	}
	return c, c.validate()
}

func (c Config) validate() error {
	errs := []error{c.Common.Validate()}
	if c.MaxPayload <= 0 {
		errs = append(errs, fmt.Errorf("--max-payload %d must be positive", c.MaxPayload))
	}
	if c.PollInterval < 10*time.Millisecond || c.PollInterval > 5*time.Second {
		errs = append(errs, fmt.Errorf("--events-poll-interval %v: want 10ms-5s", c.PollInterval))
	}
	if c.LiveInterval < 100*time.Millisecond || c.LiveInterval > time.Minute {
		errs = append(errs, fmt.Errorf("--live-interval %v: want 100ms-1m", c.LiveInterval))
	}
	if c.SessionLifetime < time.Minute {
		errs = append(errs, fmt.Errorf("--session-lifetime %v: want at least 1m", c.SessionLifetime))
	}
	if c.SessionIdleTimeout < time.Minute || c.SessionIdleTimeout > c.SessionLifetime {
		errs = append(errs, fmt.Errorf("--session-idle-timeout %v: want 1m up to --session-lifetime (%v)", c.SessionIdleTimeout, c.SessionLifetime))
	}
	if c.AuthFailuresPerMinute < 1 {
		errs = append(errs, fmt.Errorf("--auth-failures-per-minute %d must be positive", c.AuthFailuresPerMinute))
	}
	if c.MaxStreamsPerClient < 1 {
		errs = append(errs, fmt.Errorf("--max-streams-per-client %d must be positive", c.MaxStreamsPerClient))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %v must be positive", c.ShutdownTimeout))
	}
	errs = append(errs, c.OIDC.validate(c.ReadAuth))
	return errors.Join(errs...)
}

// validate names every missing or conflicting OIDC setting; it never
// shows the client secret.
func (o oidcSettings) validate(readAuth bool) error {
	if !o.enabled() {
		if o.ClientID != "" || o.RedirectURL != "" || o.ClientSecret != "" || o.ClientSecretFile != "" {
			return errors.New("--oidc-client-id, --oidc-client-secret(-file) and --oidc-redirect-url need --oidc-issuer")
		}
		return nil
	}
	var errs []error
	if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--oidc-issuer %q: want an http(s) URL", o.Issuer))
	}
	if o.ClientID == "" {
		errs = append(errs, errors.New("--oidc-issuer needs --oidc-client-id"))
	}
	if (o.ClientSecret == "") == (o.ClientSecretFile == "") {
		errs = append(errs, errors.New("--oidc-issuer needs exactly one of --oidc-client-secret and --oidc-client-secret-file"))
	}
	if u, err := url.Parse(o.RedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != oidcCallbackPath {
		errs = append(errs, fmt.Errorf("--oidc-redirect-url %q: want the dashboard's absolute URL ending in %s", o.RedirectURL, oidcCallbackPath))
	}
	if o.GroupsClaim == "" {
		errs = append(errs, errors.New("--oidc-groups-claim must not be empty"))
	}
	if !readAuth {
		errs = append(errs, errors.New("--oidc-issuer needs --read-auth: sign-in sessions are those of the pages' login"))
	}
	return errors.Join(errs...)
}
