package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
)

// Config is every setting of the demo; each flag has an environment twin
// (--redis-url / REDIS_URL).
type Config struct {
	// The slot store as every command takes it; the demo's own key prefix
	// keeps it apart from a real installation in the same Redis. The demo
	// has --verbose instead of --log-level.
	config.Redis
	BinDir           string
	DashboardAddress string
	Duration         time.Duration
	Verbose          bool
	LogFormat        string

	// Profile is the pools, their load and the timings. Not flags: the
	// defaults make a one-minute story; tests use a faster one.
	Profile Profile
}

func parseConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (Config, error) {
	c := Config{Redis: config.Redis{KeyPrefix: "demo"}, Profile: defaultProfile()}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.Redis.Register(fs, "slot store Redis shared by every process (redis://, redis+cluster://, …); empty starts an embedded miniredis on a free loopback port")
	fs.StringVar(&c.BinDir, "bin-dir", "", "folder holding the scaler, agent and dashboard binaries (make binaries); empty: the folder of this program when they are there (make demo runs bin/demo), else bin/ of the repository this runs in")
	fs.StringVar(&c.DashboardAddress, "dashboard-address", "127.0.0.1:8080", "HTTP address of the dashboard")
	fs.DurationVar(&c.Duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	fs.BoolVar(&c.Verbose, "verbose", false, "show the info logs of every process (default: warnings and errors only)")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json (logs of the demo and its processes; the status lines stay text)")
	if err := config.Parse(fs, args, lookup); err != nil {
		return Config{}, err
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("--duration %v must not be negative", c.Duration))
	}
	if f := strings.ToLower(c.LogFormat); f != "text" && f != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, _, err := net.SplitHostPort(c.DashboardAddress); err != nil {
		errs = append(errs, fmt.Errorf("--dashboard-address %q: want host:port (%v)", c.DashboardAddress, err))
	}
	errs = append(errs, c.Redis.Validate())
	return errors.Join(errs...)
}

func (c Config) logLevel() string {
	if c.Verbose {
		return "info"
	}
	return "warn"
}

// binaries are the programs the demo runs, as shipped.
type binaries struct {
	Scaler, Agent, Dashboard string
}

// findBinaries locates the scaler, agent and dashboard binaries: in dir,
// or (dir empty) next to the demo's own executable (make demo builds
// bin/demo), else in bin/ of the repository holding the working directory.
func findBinaries(dir string) (binaries, error) {
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			if st, err := os.Stat(filepath.Join(filepath.Dir(exe), "agent")); err == nil && !st.IsDir() {
				dir = filepath.Dir(exe)
			}
		}
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return binaries{}, fmt.Errorf("finding bin/: %w", err)
		}
		dir = filepath.Join(repoRoot(wd), "bin")
	}
	b := binaries{
		Scaler:    filepath.Join(dir, "scaler"),
		Agent:     filepath.Join(dir, "agent"),
		Dashboard: filepath.Join(dir, "dashboard"),
	}
	for _, p := range []string{b.Scaler, b.Agent, b.Dashboard} {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return binaries{}, fmt.Errorf("%s is missing: run `make binaries` first (or point --bin-dir at the scaler, agent and dashboard binaries)", p)
		}
	}
	return b, nil
}

// repoRoot is the nearest folder at or above dir holding a go.mod, or dir.
func repoRoot(dir string) string {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return dir
		}
		d = parent
	}
}
