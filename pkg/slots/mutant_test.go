//go:build slotsmutants

package slots

import (
	"io/fs"
	"strings"
	"testing"
)

// TestMutantsApply keeps the mutants honest: each replacement must still
// match the script source, or a mutant run would test the unmutated store.
func TestMutantsApply(t *testing.T) {
	files, err := fs.Glob(luaFS, "lua/*.lua")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, f := range files {
		b, err := luaFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for name, reps := range mutants {
		for _, r := range reps {
			if !strings.Contains(all.String(), r[0]) {
				t.Errorf("mutant %s: %q no longer appears in the scripts", name, r[0])
			}
		}
	}
}
