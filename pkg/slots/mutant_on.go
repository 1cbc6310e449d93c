//go:build slotsmutants

package slots

import (
	"fmt"
	"os"
	"strings"
)

// Mutation testing: built with -tags slotsmutants and SLOTSCALER_MUTANT set,
// the store loads scripts with one guarantee deliberately broken. The test
// command runs the suite under each mutant and requires it to FAIL, proving
// the tests can see the bug. A replacement that no longer matches the source
// is an error, so mutants cannot silently rot.
var mutants = map[string][][2]string{
	// drain succeeds on a pod with running or reserved slots.
	"drain-idle": {{
		"if tonumber(ph.busy) ~= 0 then return fail('busy'",
		"if false then return fail('busy'",
	}},
	// claim and complete accept any epoch.
	"epoch": {
		{"if not (t.st == 'running' and t.ep == ep) then", "if not (t.st == 'running') then"},
		{"if t[1] ~= 'running' or t[2] ~= ep or", "if t[1] ~= 'running' or"},
	},
	// a freed slot goes idle without taking queued work.
	"dispatch-on-free": {{
		"if st == 'active' then fill_slot(c, now, pod, slot, seq) end",
		"if st == 'active' then redis.call('ZADD', K .. KEY_IDLE .. class_of(c, slot), redis.call('HGET', pkey(pod), 'seq'), member(pod, slot)) end",
	}},
}

// Mutants lists the mutant names, for the test command.
func Mutants() []string {
	var out []string
	for k := range mutants {
		out = append(out, k)
	}
	return out
}

func mutate(src string) (string, error) {
	name := os.Getenv("SLOTSCALER_MUTANT")
	if name == "" {
		return src, nil
	}
	reps, ok := mutants[name]
	if !ok {
		return "", fmt.Errorf("unknown mutant %q", name)
	}
	for _, r := range reps {
		// Each replacement must exist in lib.lua or in at least one script;
		// checked across all scripts by TestMutantsApply.
		src = strings.ReplaceAll(src, r[0], r[1])
	}
	return src, nil
}
