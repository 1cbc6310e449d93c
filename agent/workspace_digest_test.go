package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openTestWorkspaces(t *testing.T) *workspaces {
	t.Helper()
	w, err := openWorkspaces(filepath.Join(t.TempDir(), "ws"), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return w
}

// Every change an apply could care about changes the digest; nothing else
// does.
func TestWorkspaceDigestSeesEveryChange(t *testing.T) {
	build := func(t *testing.T, w *workspaces) string {
		dir, err := w.create("t")
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "plan.out"), []byte("plan"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755))
		require.NoError(t, os.Symlink("../plan.out", filepath.Join(dir, "sub", "link")))
		return dir
	}
	w := openTestWorkspaces(t)
	dir := build(t, w)
	base, err := w.digest("t")
	require.NoError(t, err)
	require.True(t, verifiable(base), base)

	again, err := w.digest("t")
	require.NoError(t, err)
	assert.Equal(t, base, again, "the same tree, the same digest")
	other := openTestWorkspaces(t)
	build(t, other)
	elsewhere, err := other.digest("t")
	require.NoError(t, err)
	assert.Equal(t, base, elsewhere, "the digest does not depend on where the workspace is")

	changes := map[string]func(){
		"content":        func() { os.WriteFile(filepath.Join(dir, "plan.out"), []byte("PLAN"), 0o644) },
		"appended":       func() { os.WriteFile(filepath.Join(dir, "plan.out"), []byte("plan\n"), 0o644) },
		"mode":           func() { os.Chmod(filepath.Join(dir, "sub", "run.sh"), 0o644) },
		"new empty file": func() { os.WriteFile(filepath.Join(dir, "sub", "deeper", "x"), nil, 0o644) },
		"new empty dir":  func() { os.Mkdir(filepath.Join(dir, "new"), 0o755) },
		"removed":        func() { os.Remove(filepath.Join(dir, "plan.out")) },
		"renamed":        func() { os.Rename(filepath.Join(dir, "plan.out"), filepath.Join(dir, "plan.ouT")) },
		"link target": func() {
			os.Remove(filepath.Join(dir, "sub", "link"))
			os.Symlink("/etc/passwd", filepath.Join(dir, "sub", "link"))
		},
		"file became link": func() {
			os.Remove(filepath.Join(dir, "plan.out"))
			os.Symlink("sub/run.sh", filepath.Join(dir, "plan.out"))
		},
		"workspace mode": func() { os.Chmod(dir, 0o755) },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			dir = build(t, w) // afresh
			change()
			d, err := w.digest("t")
			require.NoError(t, err)
			assert.NotEqual(t, base, d)
		})
	}
}

// A workspace over the bounds has no sha256 digest, and neither has a
// missing one: an apply would refuse to run on either.
func TestWorkspaceDigestBounds(t *testing.T) {
	w := openTestWorkspaces(t)
	dir, err := w.create("t")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2048), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "small"), nil, 0o644))

	oldBytes, oldEntries := maxDigestBytes, maxDigestEntries
	t.Cleanup(func() { maxDigestBytes, maxDigestEntries = oldBytes, oldEntries })
	maxDigestBytes = 1024
	d, err := w.digest("t")
	require.ErrorIs(t, err, errDigestTooLarge)
	assert.Equal(t, digestTooLarge, d)
	assert.False(t, verifiable(d))

	maxDigestBytes, maxDigestEntries = oldBytes, 2 // the root and one entry
	d, err = w.digest("t")
	require.ErrorIs(t, err, errDigestTooLarge)
	assert.Equal(t, digestTooLarge, d)

	maxDigestEntries = oldEntries
	require.NoError(t, w.remove("t"))
	d, err = w.digest("t")
	require.Error(t, err)
	assert.Equal(t, digestMissing, d)
	assert.False(t, verifiable(d))
}
