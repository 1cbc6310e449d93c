//go:build !slotsmutants

package slots

// mutate is the identity outside mutation testing (see mutant_on.go).
func mutate(src string) (string, error) { return src, nil }
