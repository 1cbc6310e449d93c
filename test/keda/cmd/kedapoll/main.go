// Command kedapoll asks the scaler what KEDA asks it, through KEDA's own
// external scaler client (github.com/kedacore/keda/v2/pkg/scalers), and prints
// the answer as JSON. test/kube feeds it to the real HPA controller: KEDA's
// client pins Kubernetes libraries the API-server module cannot share, so the
// two meet across a process boundary.
//
//	kedapoll -namespace ns -name pool -metadata scalerAddress=127.0.0.1:9090,pool=pool
//
// Output: {"metric":"s0-…","targetMilli":1000,"valueMilli":21000,"active":true}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	v2 "k8s.io/api/autoscaling/v2"
)

type answer struct {
	Metric      string `json:"metric"`
	TargetMilli int64  `json:"targetMilli"`
	ValueMilli  int64  `json:"valueMilli"`
	Active      bool   `json:"active"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kedapoll:", err)
		os.Exit(1)
	}
}

func run() error {
	ns := flag.String("namespace", "", "the ScaledObject's namespace")
	name := flag.String("name", "", "the ScaledObject's name")
	md := flag.String("metadata", "", "trigger metadata, k=v,k=v")
	flag.Parse()
	meta := map[string]string{}
	for _, kv := range strings.Split(*md, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			meta[k] = v
		}
	}
	s, err := scalers.NewExternalScaler(&scalersconfig.ScalerConfig{
		ScalableObjectName:      *name,
		ScalableObjectNamespace: *ns,
		ScalableObjectType:      "ScaledObject",
		TriggerType:             "external",
		TriggerMetadata:         meta,
		GlobalHTTPTimeout:       3 * time.Second,
		MetricType:              v2.AverageValueMetricType,
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	defer s.Close(ctx)
	specs := s.GetMetricSpecForScaling(ctx)
	if len(specs) != 1 || specs[0].External == nil {
		return fmt.Errorf("want one external metric spec, got %+v", specs)
	}
	ext := specs[0].External
	values, active, err := s.GetMetricsAndActivity(ctx, ext.Metric.Name)
	if err != nil {
		return err
	}
	if len(values) != 1 {
		return fmt.Errorf("want one value, got %d", len(values))
	}
	return json.NewEncoder(os.Stdout).Encode(answer{
		Metric: ext.Metric.Name, TargetMilli: ext.Target.AverageValue.MilliValue(),
		ValueMilli: values[0].Value.MilliValue(), Active: active,
	})
}
