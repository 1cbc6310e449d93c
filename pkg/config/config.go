// Package config gives every flag of a binary an environment twin:
// --redis-url is also REDIS_URL. A flag given on the command line wins over
// the environment, which wins over the default. --help lists both.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvName is the environment twin of a flag: upper case, '-' → '_'.
func EnvName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args, then fills every flag not given on the command line
// from its environment twin (lookup is os.LookupEnv in production). A bad
// value names the flag and the variable it came from.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := EnvName(f.Name)
		if v, ok := lookup(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("invalid value for %s (from %s): %w", f.Name, env, err))
			}
		}
	})
	return errors.Join(errs...)
}

func usage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		printFlag(out, f)
	})
}

func printFlag(out io.Writer, f *flag.Flag) {
	name, u := flag.UnquoteUsage(f)
	fmt.Fprintf(out, "  --%s", f.Name)
	if name != "" {
		fmt.Fprintf(out, " %s", name)
	}
	fmt.Fprintf(out, "  (env %s)\n    \t%s", EnvName(f.Name), strings.ReplaceAll(u, "\n", "\n    \t"))
	if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
		fmt.Fprintf(out, " (default %q)", f.DefValue)
	}
	fmt.Fprintln(out)
}
