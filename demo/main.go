// Command demo runs the whole of slotscaler on one machine, in the
// foreground (`make demo`): an embedded Redis (miniredis) unless REDIS_URL is
// set, the scaler and the dashboard binaries, the janitor (pkg/janitor, the
// same controller the chart deploys) against an in-memory Kubernetes API
// (client-go's fake clientsets) with a small fake kubelet that runs an agent
// process per pod, the replica maths KEDA and the HPA apply to the scaler's
// answer, and two pools under a synthetic load of plans and approved
// plan_and_applies.
//
// It prints the dashboard's URL and a status line per pool every few
// seconds; Ctrl-C stops everything. It also checks slotscaler's promise: a
// pod deleted while the slot store says it holds work is reported loudly,
// and makes the demo exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, err := parseConfig(os.Args[1:], os.Stderr, os.LookupEnv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	d := newDemo(cfg, os.Stdout)
	go func() {
		// A second Ctrl-C kills every process at once instead of letting
		// agents finish their running phases.
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		<-again
		d.killAll()
		fmt.Fprintln(os.Stderr, "demo: killed every process (second signal)")
		os.Exit(1)
	}()
	res, err := d.run(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if res.BusyRemoved > 0 {
		os.Exit(1)
	}
}
