package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// result is what a run ends with.
type result struct {
	// BusyRemoved counts pods deleted while the store said they held work:
	// slotscaler promises 0.
	BusyRemoved int64
	// Checked counts the deletions of running agents' pods the guard saw.
	Checked int64
	// Outcomes counts how tasks ended, per pool ("team-a/pool-a").
	Outcomes map[string]map[string]int
	// Peak is the most live pods per pool.
	Peak map[string]int
}

// banner says, once everything answers, where each part runs and what load
// the pools are under, so the status lines that follow can be read.
func (d *demo) banner(redisDesc, scalerAddr string, bins binaries) {
	prof := d.cfg.Profile
	c := d.con
	c.Printf("")
	c.Printf("slotscaler demo: the whole system on this machine")
	pages := make([]string, 0, len(prof.Pools))
	for _, p := range prof.Pools {
		pages = append(pages, "pools/"+p.Namespace+"/"+p.Name)
	}
	c.Printf("  dashboard    %s  (pool pages: %s)", d.dashboardURL, strings.Join(pages, ", "))
	c.Printf("  token        %s  (the pages' login form asks for it; API: Authorization: Bearer <token>; approvals are recorded as \"you\")", d.apiToken)
	c.Printf("  API          %sapi/v1", d.dashboardURL)
	c.Printf("  redis        %s (key prefix %q)", redisDesc, d.cfg.KeyPrefix)
	c.Printf("  scaler       %s: KEDA external scaler on %s; records each pool's history every %v (the pool pages' charts)",
		shortPath(bins.Scaler), scalerAddr, prof.HistoryInterval)
	c.Printf("  kubernetes   in-memory API (client-go fakes); the janitor (pkg/janitor) keeps each pool's pods;")
	c.Printf("               a fake kubelet runs %s for each pod it creates, and stops it when the pod is deleted", shortPath(bins.Agent))
	c.Printf("  KEDA + HPA   emulated: every %v per pool; scale-down window %v; to zero after %v inactive", prof.PollInterval, prof.DownWindow, prof.Cooldown)
	for _, p := range prof.Pools {
		band := "HPA tolerance 0 (behavior.scaleUp.tolerance: 0)"
		if p.Nudge {
			band = "HPA's default 10 % band; the scaler nudges scale-ups out of it (nudgeTolerance \"true\")"
		}
		c.Printf("  pool         %-14s max %d pods; %s", p.Namespace+"/"+p.Name, p.MaxReplicas, band)
		c.Printf("               load: %.1f tasks/s (%d%% plan_and_apply) for %v, then quiet for %v%s",
			p.Rate, int(p.ApplyRatio*100+0.5), p.Busy, p.Quiet, offsetText(p.Offset))
	}
	c.Printf("  tasks        each phase sleeps %v-%v (the agent's builtin executor); applies approved after %v-%v, %d%% rejected",
		prof.TaskMin, prof.TaskMax, prof.ApproveMin, prof.ApproveMax, int(prof.RejectRatio*100+0.5))
	if len(prof.Pools) > 0 {
		c.Printf("  yours        one plan_and_apply in %s waits for your approval: %sapprovals (approve or reject it; the next one follows)",
			prof.Pools[0].Namespace+"/"+prof.Pools[0].Name, d.dashboardURL)
	}
	c.Printf("  guard        a pod deleted while the store says it holds work is reported as BUSY POD REMOVED (exit 1)")
	if d.cfg.Duration > 0 {
		c.Printf("Stops after %v, or on Ctrl-C.", d.cfg.Duration)
	} else {
		c.Printf("Ctrl-C stops.")
	}
	c.Printf("")
}

// offsetText is the banner's note on a pool whose load starts late.
func offsetText(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf(", starting %v in", d)
}

// statusLoop samples the pools every poll interval (peaks) and prints a
// status line per pool every StatusEvery.
func (d *demo) statusLoop(ctx context.Context) {
	every := d.cfg.Profile.StatusEvery
	t := time.NewTicker(min(time.Second, every))
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lines := d.sample(ctx)
		if time.Since(last) >= every-50*time.Millisecond && ctx.Err() == nil {
			last = time.Now()
			for _, l := range lines {
				d.con.Printf("%s", l)
			}
		}
	}
}

// sample reads each pool and returns its status line.
func (d *demo) sample(ctx context.Context) []string {
	var lines []string
	now := time.Now()
	for i, p := range d.cfg.Profile.Pools {
		key := p.Namespace + "/" + p.Name
		pods, err := d.api.Kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: janitor.LabelPool + "=" + p.Name})
		if err != nil {
			continue
		}
		live, terminating := 0, 0
		for _, pod := range pods.Items {
			if pod.DeletionTimestamp != nil {
				terminating++
			} else if pod.Status.Phase != corev1.PodFailed && pod.Status.Phase != corev1.PodSucceeded {
				live++
			}
		}
		d.mu.Lock()
		d.peak[key] = max(d.peak[key], live)
		d.mu.Unlock()

		replicas := "?"
		if u, err := d.api.Dyn.Resource(v1alpha1.GroupVersionResource).Namespace(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{}); err == nil {
			if n, ok, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); ok {
				replicas = fmt.Sprint(n)
			}
		}
		var busy, idle, starting, queued int
		if snap, err := d.store.Snapshot(ctx, slots.PoolID{Namespace: p.Namespace, Name: p.Name}); err == nil {
			for _, r := range snap.Pods {
				switch {
				case r.Busy():
					busy++
				case r.State == slots.PodExpected:
					starting++
				case r.State == slots.PodActive || r.State == slots.PodCordoned:
					idle++
				}
			}
			queued = snap.QueuedTotal()
		}
		metric := "-"
		if m := d.scalers[i].metric(); m >= 0 {
			metric = fmt.Sprint(m)
		}
		_, finished := d.loads[i].finished()
		var extra []string
		if starting > 0 {
			extra = append(extra, fmt.Sprintf("starting %d", starting))
		}
		if terminating > 0 {
			extra = append(extra, fmt.Sprintf("terminating %d", terminating))
		}
		more := ""
		if len(extra) > 0 {
			more = "  " + strings.Join(extra, "  ")
		}
		lines = append(lines, fmt.Sprintf("%s  %-14s metric %-2s  replicas %-2s  pods %-2d  busy %-2d  idle %-2d  queued %-2d  finished %d%s",
			clock(now), key, metric, replicas, live, busy, idle, queued, finished, more))
	}
	return lines
}

// result collects what the run did; call it once everything has stopped,
// so the counts are final.
func (d *demo) result() result {
	res := result{
		BusyRemoved: d.kubelet.busyRemoved.Load(),
		Checked:     d.kubelet.checked.Load(),
		Outcomes:    map[string]map[string]int{},
		Peak:        map[string]int{},
	}
	d.mu.Lock()
	for k, v := range d.peak {
		res.Peak[k] = v
	}
	d.mu.Unlock()
	for i, p := range d.cfg.Profile.Pools {
		if i < len(d.loads) {
			res.Outcomes[p.Namespace+"/"+p.Name], _ = d.loads[i].finished()
		}
	}
	return res
}

// summary prints the result: per pool the peak, the tasks and how they
// ended, then the guard's verdict on slotscaler's promise.
func (d *demo) summary(res result, took time.Duration) {
	c := d.con
	c.Printf("")
	c.Printf("demo ran %v", took.Round(time.Second))
	for i, p := range d.cfg.Profile.Pools {
		if i >= len(d.loads) {
			break
		}
		key := p.Namespace + "/" + p.Name
		l := d.loads[i]
		_, finished := l.finished()
		line := fmt.Sprintf("  %-14s peak %d pods; %d tasks submitted; finished: %s", key, res.Peak[key], l.submitted.Load(), outcomeSummary(res.Outcomes[key]))
		if n := l.submitted.Load() - int64(finished); n > 0 {
			line += fmt.Sprintf("; %d still queued", n)
		}
		c.Printf("%s; %d applies approved", line, l.approved.Load())
	}
	k := d.kubelet
	c.Printf("  kubelet        %d agents started, %d exited by themselves; the guard checked %d pod deletions", k.started.Load(), k.crashed.Load(), res.Checked)
	if n := d.conflicts.Load(); n > 0 {
		c.Printf("  janitor        %d passes retried after a 409 on the AgentPool status write (stale cache; --verbose shows them)", n)
	}
	if n := k.uncheckable.Load(); n > 0 {
		c.Printf("  guard          %d deletions could not be checked (the store did not answer)", n)
	}
	if res.BusyRemoved > 0 {
		c.Printf("!!!!! BUSY POD REMOVED %d times (see the lines above): slotscaler broke its promise", res.BusyRemoved)
	} else {
		c.Printf("  no busy pod was removed")
	}
}

// shortPath is p relative to the working directory when it is below it.
func shortPath(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}
