package executor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sleep is the built-in executor "builtin:sleep": each run sleeps a random
// time between Min and Max and fails with probability Fail (exit code
// ExitCode), so a pool runs end to end with no real tool installed. It
// honours timeouts and cancels like a command, without a grace: there is
// nothing to clean up.
type Sleep struct {
	Min, Max time.Duration
	Fail     float64
	ExitCode int
}

// sleepParams lists what "builtin:sleep?…" accepts.
var sleepParams = []string{"min", "max", "fail", "exit"}

func newBuiltin(spec string) (Runner, error) {
	name, query, _ := strings.Cut(spec, "?")
	if name != "sleep" {
		return nil, fmt.Errorf("unknown built-in executor %q (have: builtin:sleep)", "builtin:"+name)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("builtin:sleep parameters %q: %w", query, err)
	}
	s := &Sleep{Min: time.Second, Max: 5 * time.Second, ExitCode: 1}
	for k, v := range q {
		if !slices.Contains(sleepParams, k) {
			return nil, fmt.Errorf("builtin:sleep: unknown parameter %q (have: %s)", k, strings.Join(sleepParams, ", "))
		}
		if len(v) != 1 {
			return nil, fmt.Errorf("builtin:sleep: parameter %q given %d times", k, len(v))
		}
		switch k {
		case "min", "max":
			d, err := time.ParseDuration(v[0])
			if err != nil || d < 0 {
				return nil, fmt.Errorf("builtin:sleep: %s=%q is not a non-negative duration", k, v[0])
			}
			if k == "min" {
				s.Min = d
			} else {
				s.Max = d
			}
		case "fail":
			f, err := strconv.ParseFloat(v[0], 64)
			if err != nil || f < 0 || f > 1 {
				return nil, fmt.Errorf("builtin:sleep: fail=%q is not a probability between 0 and 1", v[0])
			}
			s.Fail = f
		case "exit":
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > 255 {
				return nil, fmt.Errorf("builtin:sleep: exit=%q is not an exit code from 1 to 255", v[0])
			}
			s.ExitCode = n
		}
	}
	if _, ok := q["max"]; !ok && s.Min > s.Max {
		s.Max = s.Min
	}
	if s.Min > s.Max {
		return nil, fmt.Errorf("builtin:sleep: min=%v is above max=%v", s.Min, s.Max)
	}
	return s, nil
}

func (s *Sleep) String() string {
	return fmt.Sprintf("builtin:sleep?min=%v&max=%v&fail=%v&exit=%d", s.Min, s.Max, s.Fail, s.ExitCode)
}

// Run sleeps; see Sleep.
func (s *Sleep) Run(ctx context.Context, job Job) Result {
	d := s.Min
	if s.Max > s.Min {
		d += rand.N(s.Max - s.Min + 1)
	}
	fail := s.Fail > 0 && rand.Float64() < s.Fail
	res := Result{Started: time.Now()}
	if job.Started != nil {
		job.Started(res.Started)
	}
	var timeout <-chan time.Time
	if job.Timeout > 0 {
		t := time.NewTimer(job.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	done := time.NewTimer(d)
	defer done.Stop()
	select {
	case <-done.C:
		res.Exited = time.Now()
		if fail {
			res.Outcome, res.ExitCode = Failure, s.ExitCode
			res.Output = fmt.Appendf(nil, "builtin:sleep: slept %v, failing on purpose (exit %d)\n", d, s.ExitCode)
		} else {
			res.Outcome = Success
			res.Output = fmt.Appendf(nil, "builtin:sleep: slept %v\n", d)
		}
	case <-timeout:
		res.Exited = time.Now()
		res.Outcome, res.ExitCode = Timeout, 128+15
		res.Output = fmt.Appendf(nil, "builtin:sleep: would sleep %v\n[slotscaler: timed out after %v]\n", d, job.Timeout)
	case <-ctx.Done():
		res.Exited = time.Now()
		res.Outcome, res.ExitCode = Cancelled, 128+15
		res.Output = fmt.Appendf(nil, "builtin:sleep: would sleep %v\n[slotscaler: cancelled]\n", d)
	}
	return res
}
