package slots

import (
	"strings"
	"testing"
)

func TestLibForKeepsWhatTheScriptUses(t *testing.T) {
	lib := `local K = KEYS[1]
-- a says hello.
local function a() return 'a' end
local function b()
  return a() .. K
end
-- c is not used.
local function c()
  return 'c'
end
local function d(x) return x end
`
	tests := []struct {
		name, body string
		keep, drop []string
	}{
		{"direct and through a helper", "return b()", []string{"local K", "-- a says hello.", "function a(", "function b("}, []string{"function c(", "-- c is not used.", "function d("}},
		{"one-liner", "return d(1)", []string{"local K", "function d("}, []string{"function a(", "function b(", "function c("}},
		{"a name in a comment line is not a use", "-- c()\nreturn 1", []string{"local K"}, []string{"function c("}},
		{"a longer identifier is not a use", "local bb, ab = 1, 2 return bb", []string{"local K"}, []string{"function a(", "function b("}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := libFor(lib, tt.body)
			for _, s := range tt.keep {
				if !strings.Contains(got, s) {
					t.Errorf("missing %q in:\n%s", s, got)
				}
			}
			for _, s := range tt.drop {
				if strings.Contains(got, s) {
					t.Errorf("kept %q in:\n%s", s, got)
				}
			}
		})
	}
}

func TestPreludeForKeepsTheNamesCodeUses(t *testing.T) {
	prelude := "-- generated\nlocal KEY_A = \"a\"\nlocal KEY_AB = \"ab\"\nlocal BOUNDS = {1, 2}\n"
	got := preludeFor(prelude, "-- KEY_AB in a comment\nreturn KEY_A .. BOUNDS[1]")
	want := "-- generated\nlocal KEY_A = \"a\"\nlocal BOUNDS = {1, 2}\n"
	if got != want {
		t.Errorf("preludeFor = %q, want %q", got, want)
	}
}
