package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Event kinds a webhook may ask for.
const (
	EventAwaitingApproval    = "awaiting-approval"    // a plan_and_apply's plan succeeded: its slot is reserved for the apply
	EventReservationExpiring = "reservation-expiring" // a reservation ends within the lead time without a decision
	EventSucceeded           = "succeeded"
	EventFailed              = "failed"
	EventExpired             = "expired" // a reservation (or a queued task's max age) ran out
)

// Events lists every event kind, in a fixed order.
var Events = []string{EventAwaitingApproval, EventReservationExpiring, EventSucceeded, EventFailed, EventExpired}

// Body formats.
const (
	FormatJSON  = "json"  // Payload as JSON
	FormatSlack = "slack" // {"text": "..."}, what Slack's (and Mattermost's, Teams' legacy) incoming webhooks take
)

// Defaults of a webhook's delivery settings.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxAttempts     = 12
	DefaultMaxAge          = 6 * time.Hour
	DefaultInitialBackoff  = time.Second
	DefaultMaxBackoff      = 10 * time.Minute
	DefaultExpiringLead    = 15 * time.Minute
	DefaultPollInterval    = time.Second
	DefaultSafetyPoll      = 2 * time.Minute
	DefaultSyncInterval    = 15 * time.Second
	DefaultExpiringEvery   = 30 * time.Second
	DefaultClaimIdleMargin = time.Minute
)

// Duration is a time.Duration written as "10s", "5m" in the config file.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// File is the notifier's config file (--notify-config), YAML, decoded
// strictly: an unknown or misspelt field is an error, not a webhook that
// silently never fires. It names where the URL and the signing secret are
// (a file, e.g. a mounted Secret's key, or an environment variable), never
// holds them itself unless given as url (a URL without secrets).
type File struct {
	// DashboardURL is the dashboard's external base URL; bodies link to
	// the task's page under it. Empty: no links.
	DashboardURL string `json:"dashboardURL,omitempty"`
	// ReservationExpiringLead: reservation-expiring is sent this long
	// before a reservation's deadline (default 15m).
	ReservationExpiringLead Duration      `json:"reservationExpiringLead,omitempty"`
	Webhooks                []WebhookSpec `json:"webhooks"`
}

// WebhookSpec is one webhook as the config file gives it.
type WebhookSpec struct {
	// Name identifies the webhook in the status, the metrics and the
	// consumer group: lower-case letters, digits and '-', at most 63.
	Name string `json:"name"`
	// Pools are globs of "namespace/name" (path.Match: "team-a/*" is
	// every pool of namespace team-a, "*/*" every pool).
	Pools []string `json:"pools"`
	// Events the webhook gets; empty: all.
	Events []string `json:"events,omitempty"`
	// Format of the body: json (default) or slack.
	Format string `json:"format,omitempty"`
	// Exactly one of URL (no secret in it), URLFile (a file holding the
	// URL, e.g. a mounted Secret's key) or URLEnv (an environment
	// variable holding it).
	URL     string `json:"url,omitempty"`
	URLFile string `json:"urlFile,omitempty"`
	URLEnv  string `json:"urlEnv,omitempty"`
	// The HMAC-SHA256 signing secret, from a file or a variable; none:
	// requests are not signed.
	SigningSecretFile string `json:"signingSecretFile,omitempty"`
	SigningSecretEnv  string `json:"signingSecretEnv,omitempty"`
	// Timeout of one attempt (default 10s).
	Timeout Duration `json:"timeout,omitempty"`
	// An event is given up (a dead letter) after MaxAttempts attempts
	// (default 12) or once its first attempt is MaxAge old (default 6h),
	// whichever comes first.
	MaxAttempts int      `json:"maxAttempts,omitempty"`
	MaxAge      Duration `json:"maxAge,omitempty"`
	// Backoff between attempts: exponential from InitialBackoff (default
	// 1s), doubling, at most MaxBackoff (default 10m), ±50% jitter.
	InitialBackoff Duration `json:"initialBackoff,omitempty"`
	MaxBackoff     Duration `json:"maxBackoff,omitempty"`
}

// Config is the notifier's resolved configuration: URLs and secrets read.
type Config struct {
	DashboardURL string
	ExpiringLead time.Duration
	Webhooks     []Webhook
}

// Webhook is one resolved webhook.
type Webhook struct {
	Name           string
	Pools          []string
	Events         []string // never empty
	Format         string
	URL            string // secret: never logged nor shown; Host is
	SigningSecret  []byte // may be empty: unsigned
	Timeout        time.Duration
	MaxAttempts    int
	MaxAge         time.Duration
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// Host is the URL's host, what logs, the status and the dashboard show: a
// webhook URL often carries its credential in the path (Slack's do).
func (w Webhook) Host() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// Matches reports whether the webhook delivers the pool's events.
func (w Webhook) Matches(pool slots.PoolID) bool {
	for _, g := range w.Pools {
		if ok, _ := path.Match(g, pool.String()); ok {
			return true
		}
	}
	return false
}

// Wants reports whether the webhook gets events of this kind.
func (w Webhook) Wants(event string) bool { return slices.Contains(w.Events, event) }

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Load reads and resolves a config file; lookupEnv reads environment
// variables (os.LookupEnv). Errors name the field, never a URL or secret.
func Load(file string, lookupEnv func(string) (string, bool)) (Config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("reading notifier config: %w", err)
	}
	c, err := Parse(raw, lookupEnv)
	if err != nil {
		return Config{}, fmt.Errorf("notifier config %s: %w", file, err)
	}
	return c, nil
}

// Parse decodes and resolves the content of a config file.
func Parse(raw []byte, lookupEnv func(string) (string, bool)) (Config, error) {
	var f File
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return Config{}, err
	}
	c := Config{DashboardURL: strings.TrimSuffix(f.DashboardURL, "/"), ExpiringLead: time.Duration(f.ReservationExpiringLead)}
	if c.ExpiringLead == 0 {
		c.ExpiringLead = DefaultExpiringLead
	}
	var errs []error
	if c.ExpiringLead < 0 {
		errs = append(errs, fmt.Errorf("reservationExpiringLead %v must not be negative", c.ExpiringLead))
	}
	if c.DashboardURL != "" {
		if u, err := url.Parse(c.DashboardURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("dashboardURL %q is not an http(s) URL", f.DashboardURL))
		}
	}
	seen := map[string]bool{}
	for i, s := range f.Webhooks {
		w, err := resolve(s, lookupEnv)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhooks[%d] (%s): %w", i, s.Name, err))
			continue
		}
		if seen[w.Name] {
			errs = append(errs, fmt.Errorf("webhooks[%d]: name %q given twice", i, w.Name))
			continue
		}
		seen[w.Name] = true
		c.Webhooks = append(c.Webhooks, w)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

func resolve(s WebhookSpec, lookupEnv func(string) (string, bool)) (Webhook, error) {
	w := Webhook{
		Name: s.Name, Pools: s.Pools, Events: s.Events, Format: s.Format,
		Timeout: time.Duration(s.Timeout), MaxAttempts: s.MaxAttempts, MaxAge: time.Duration(s.MaxAge),
		InitialBackoff: time.Duration(s.InitialBackoff), MaxBackoff: time.Duration(s.MaxBackoff),
	}
	var errs []error
	if !nameRE.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower-case letters, digits and '-', at most 63", s.Name))
	}
	if len(s.Pools) == 0 {
		errs = append(errs, errors.New("pools: name at least one glob (\"namespace/*\")"))
	}
	for _, g := range s.Pools {
		if _, err := path.Match(g, ""); err != nil || !strings.Contains(g, "/") {
			errs = append(errs, fmt.Errorf("pools: %q is not a namespace/name glob", g))
		}
	}
	if len(w.Events) == 0 {
		w.Events = slices.Clone(Events)
	}
	for _, e := range w.Events {
		if !slices.Contains(Events, e) {
			errs = append(errs, fmt.Errorf("events: unknown %q (want %s)", e, strings.Join(Events, ", ")))
		}
	}
	switch w.Format {
	case "":
		w.Format = FormatJSON
	case FormatJSON, FormatSlack:
	default:
		errs = append(errs, fmt.Errorf("format %q: want json or slack", w.Format))
	}
	defaults := []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{{&w.Timeout, DefaultTimeout, "timeout"}, {&w.MaxAge, DefaultMaxAge, "maxAge"},
		{&w.InitialBackoff, DefaultInitialBackoff, "initialBackoff"}, {&w.MaxBackoff, DefaultMaxBackoff, "maxBackoff"}}
	for _, d := range defaults {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive", d.n, *d.v))
		}
	}
	if w.MaxAttempts == 0 {
		w.MaxAttempts = DefaultMaxAttempts
	}
	if w.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("maxAttempts %d: want at least 1", w.MaxAttempts))
	}
	if w.MaxBackoff < w.InitialBackoff {
		errs = append(errs, fmt.Errorf("maxBackoff %v is shorter than initialBackoff %v", w.MaxBackoff, w.InitialBackoff))
	}
	u, err := secretValue("url", s.URL, s.URLFile, s.URLEnv, true, lookupEnv)
	if err != nil {
		errs = append(errs, err)
	} else if pu, perr := url.Parse(u); perr != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		// The URL itself may hold the credential: the error does not quote it.
		errs = append(errs, errors.New("url: not an http(s) URL with a host"))
	}
	w.URL = u
	sec, err := secretValue("signingSecret", "", s.SigningSecretFile, s.SigningSecretEnv, false, lookupEnv)
	if err != nil {
		errs = append(errs, err)
	}
	w.SigningSecret = []byte(sec)
	return w, errors.Join(errs...)
}

// secretValue reads a value given inline, from a file or from a variable
// (exactly one when required, at most one otherwise), trimmed of the
// surrounding blanks a file's last newline leaves.
func secretValue(field, inline, file, env string, required bool, lookupEnv func(string) (string, bool)) (string, error) {
	n := 0
	for _, v := range []string{inline, file, env} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return "", fmt.Errorf("%s: give one of %[1]s, %[1]sFile, %[1]sEnv", field)
	case n == 0 && required:
		return "", fmt.Errorf("%s: give %[1]s, %[1]sFile or %[1]sEnv", field)
	case n == 0:
		return "", nil
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%sFile: %w", field, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%sFile %s is empty", field, file)
		}
		return v, nil
	case env != "":
		v, ok := lookupEnv(env)
		if v = strings.TrimSpace(v); !ok || v == "" {
			return "", fmt.Errorf("%sEnv: variable %s is not set", field, env)
		}
		return v, nil
	}
	return strings.TrimSpace(inline), nil
}
