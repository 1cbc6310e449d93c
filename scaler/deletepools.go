package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/logging"
)

// DeletePoolsConfig is every setting of `scaler delete-pools`.
type DeletePoolsConfig struct {
	config.Logs
	Kubeconfig string
	Namespace  string // "" = all
	Selector   string
	Timeout    time.Duration
	Interval   time.Duration
}

func parseDeletePoolsConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (DeletePoolsConfig, error) {
	var c DeletePoolsConfig
	fs := flag.NewFlagSet("scaler delete-pools", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Logs.Register(fs)
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	fs.StringVar(&c.Namespace, "namespace", "", "namespace of the AgentPools (empty: every namespace)")
	fs.StringVar(&c.Selector, "selector", "", "label selector of the AgentPools to delete (required, e.g. app.kubernetes.io/instance=slotscaler)")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Hour, "how long to wait for the pools to be gone (each waits for its running work up to its spec.deletion.timeout)")
	fs.DurationVar(&c.Interval, "interval", 5*time.Second, "how often to look")
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			fmt.Fprint(stderr, deletePoolsHelp)
		}
		return DeletePoolsConfig{}, err
	}
	if c.Selector == "" {
		return c, errors.New("--selector (SELECTOR) is required: it names the pools to delete")
	}
	if _, err := labels.Parse(c.Selector); err != nil {
		return c, fmt.Errorf("--selector %q: %w", c.Selector, err)
	}
	if c.Timeout <= 0 || c.Interval <= 0 {
		return c, errors.New("--timeout and --interval must be positive")
	}
	return c, c.Logs.Validate()
}

const deletePoolsHelp = `
Deletes the AgentPools the selector matches and waits until they are gone: each
deleted pool's janitor fails its queue, lets running work finish and removes
its pods idle-only, then releases it. The chart runs it as a pre-delete hook, so
` + "`helm uninstall`" + ` deletes the pools while the janitor still runs (otherwise
the pools would wait for a janitor that is gone). Exits non-zero when --timeout
passes first; running it again waits again.
`

// runDeletePools is `scaler delete-pools`.
func runDeletePools(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool)) error {
	c, err := parseDeletePoolsConfig(args, stderr, lookup)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, c.LogFormat, c.LogLevel)
	if err != nil {
		return err
	}
	rc, err := kubeConfig(c.Kubeconfig, "slotscaler-delete-pools")
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	return deletePools(ctx, dyn, c, log)
}

// deletePools deletes the matching pools (background propagation: the
// janitor's finalizer holds each until its pods are gone) and waits.
func deletePools(ctx context.Context, dyn dynamic.Interface, c DeletePoolsConfig, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	res := dyn.Resource(v1alpha1.GroupVersionResource).Namespace(c.Namespace)
	asked := map[string]bool{}
	for {
		list, err := res.List(ctx, metav1.ListOptions{LabelSelector: c.Selector})
		switch {
		case apierrors.IsNotFound(err):
			log.Info("no AgentPool resource (CRD not installed): nothing to delete")
			return nil
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("AgentPools still there after %v", c.Timeout)
		case err != nil:
			log.Warn("listing AgentPools", "err", err)
		case len(list.Items) == 0:
			log.Info("every selected AgentPool is gone", "selector", c.Selector)
			return nil
		default:
			for i := range list.Items {
				p := &list.Items[i]
				key := p.GetNamespace() + "/" + p.GetName()
				if p.GetDeletionTimestamp() == nil && !asked[key] {
					bg := metav1.DeletePropagationBackground
					err := dyn.Resource(v1alpha1.GroupVersionResource).Namespace(p.GetNamespace()).Delete(ctx, p.GetName(),
						metav1.DeleteOptions{PropagationPolicy: &bg})
					if err != nil && !apierrors.IsNotFound(err) {
						log.Warn("deleting AgentPool", "pool", key, "err", err)
						continue
					}
					asked[key] = true
					log.Info("AgentPool deleted; waiting for its pods to be idle", "pool", key)
					continue
				}
				log.Info("waiting for AgentPool", "pool", key, "status", deletingMessage(p))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("AgentPools still there after %v (their work may still run: see each pool's Deleting condition; run again to wait more)", c.Timeout)
		case <-time.After(c.Interval):
		}
	}
}

// deletingMessage is the pool's Deleting condition, when the janitor wrote one.
func deletingMessage(u *unstructured.Unstructured) string {
	var ap v1alpha1.AgentPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ap); err != nil {
		return ""
	}
	if c := meta.FindStatusCondition(ap.Status.Conditions, v1alpha1.ConditionDeleting); c != nil {
		return c.Message
	}
	return "no janitor has seen the deletion yet"
}
