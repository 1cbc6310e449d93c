package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
)

// A task's workspace is a private directory (mode 0700) under the
// workspace root, the executor's working directory and TASK_WORKDIR. A
// plan_and_apply keeps it from its plan to its apply (same pod, same
// slot); every other end of a task removes it. Executors of all slots run
// as one user, so 0700 keeps out other users, not other tasks: what
// protects a reserved apply from a plan in another slot is the digest
// (workspace_digest.go).

// workspacePrefix starts every workspace's name: a task id may be "." or
// "..", never a path element of its own.
const workspacePrefix = "task-"

// lockName is the root's lock file: one agent per workspace root, since an
// agent deletes what it does not know there.
const lockName = ".lock"

// trashPrefix names a workspace being deleted: renamed first (cheap, under
// the agent's lock, so no phase can start in it), removed afterwards.
const trashPrefix = ".trash-"

var workspaceTaskID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// resolveWorkspaceRoot is --workspace-root, or by default a directory of this
// agent's own under the temporary directory: agents sharing a host (a
// static pool, the demo) each get one, and a restarted agent finds, and
// deletes, what its predecessor left. The pool and pod names are DNS
// names: "_" cannot occur in them, so the name is unambiguous.
func resolveWorkspaceRoot(cfg Config) string {
	if cfg.WorkspaceRoot != "" {
		return cfg.WorkspaceRoot
	}
	return filepath.Join(os.TempDir(), "slotscaler-workspaces", cfg.PoolNamespace+"_"+cfg.PoolName+"_"+cfg.PodName)
}

// workspaces is the agent's workspace root.
type workspaces struct {
	path     string   // absolute
	root     *os.Root // every operation goes through it: nothing escapes the root
	lock     *os.File
	sweeping atomic.Bool // one sweep at a time (sweepWorkspaces)
}

// openWorkspaces creates (or takes over) the workspace root: a directory
// of this user, mode 0700, locked against a second agent. What it holds
// is left over from an earlier run of the agent and is deleted: at start
// the agent runs nothing and holds no reservation.
func openWorkspaces(path string, log *slog.Logger) (*workspaces, error) {
	if path == "" {
		return nil, errors.New("--workspace-root is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--workspace-root %s: %w", path, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("--workspace-root: creating %s: %w", abs, err)
	}
	// Under a shared directory (/tmp) another user could have made the
	// root first, or could swap it for another directory through its
	// parent: the root must be this user's, and its parent this user's,
	// root's, or at least not writable by others (the sticky bit of /tmp
	// keeps others from renaming what is not theirs).
	if err := checkOwnDir(abs, false); err != nil {
		return nil, fmt.Errorf("--workspace-root %s: %w", abs, err)
	}
	if err := checkOwnDir(filepath.Dir(abs), true); err != nil {
		return nil, fmt.Errorf("--workspace-root %s: %w", abs, err)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("--workspace-root %s: %w", abs, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("--workspace-root %s: %w", abs, err)
	}
	lock, err := root.OpenFile(lockName, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("--workspace-root %s: lock file: %w", abs, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		root.Close()
		return nil, fmt.Errorf("--workspace-root %s is in use by another agent (each agent needs its own): %w", abs, err)
	}
	w := &workspaces{path: abs, root: root, lock: lock}
	if err := w.clear(log); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// clear deletes everything the root holds (at start: left by an earlier
// run; at the end: nothing can use it any more).
func (w *workspaces) clear(log *slog.Logger) error {
	names, err := w.names()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := w.root.RemoveAll(n); err != nil {
			log.Warn("removing a workspace failed", "name", n, "err", err)
		} else {
			log.Info("removed a workspace", "name", n)
		}
	}
	return nil
}

// checkOwnDir refuses a directory another user controls: a symbolic link,
// one of another user's; for a parent, one of another user's unless that
// is root and nobody else may write it, or its sticky bit protects what is
// not theirs (/tmp).
func checkOwnDir(d string, parent bool) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (a symbolic link is refused)", d)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() {
		return nil
	}
	switch {
	case !parent:
		return fmt.Errorf("%s belongs to uid %d, not to this agent's uid %d", d, st.Uid, os.Geteuid())
	case st.Uid == 0 && (fi.Mode()&fs.ModeSticky != 0 || fi.Mode()&0o022 == 0):
		return nil
	default:
		return fmt.Errorf("%s belongs to uid %d, who could replace what it holds", d, st.Uid)
	}
}

// Close releases the root and its lock.
func (w *workspaces) Close() {
	w.lock.Close()
	w.root.Close()
}

// name is a task's directory name under the root. Task ids are validated
// by the store already; this checks again rather than trust them with a
// path.
func workspaceName(task string) (string, error) {
	if !workspaceTaskID.MatchString(task) {
		return "", fmt.Errorf("task id %q cannot name a workspace", task)
	}
	return workspacePrefix + task, nil
}

// dir is the absolute path of a task's workspace.
func (w *workspaces) dir(task string) (string, error) {
	n, err := workspaceName(task)
	if err != nil {
		return "", err
	}
	return filepath.Join(w.path, n), nil
}

// create makes a fresh, empty workspace for a task (a plan); whatever an
// earlier attempt left there is deleted first.
func (w *workspaces) create(task string) (string, error) {
	n, err := workspaceName(task)
	if err != nil {
		return "", err
	}
	if err := w.root.RemoveAll(n); err != nil {
		return "", fmt.Errorf("clearing workspace of task %s: %w", task, err)
	}
	if err := w.root.Mkdir(n, 0o700); err != nil {
		return "", fmt.Errorf("creating workspace of task %s: %w", task, err)
	}
	// Mkdir's mode passes through the umask, which can only remove bits:
	// set it exactly so the digest's record of the root is the same
	// whatever the umask.
	if err := w.root.Chmod(n, 0o700); err != nil {
		return "", fmt.Errorf("creating workspace of task %s: %w", task, err)
	}
	return filepath.Join(w.path, n), nil
}

// remove deletes a task's workspace (nothing when there is none).
func (w *workspaces) remove(task string) error {
	n, err := workspaceName(task)
	if err != nil {
		return err
	}
	if err := w.root.RemoveAll(n); err != nil {
		return fmt.Errorf("removing workspace of task %s: %w", task, err)
	}
	return nil
}

// discard moves a workspace out of the way at once (a rename) and returns
// a function that deletes it: the caller renames while it holds the lock
// that keeps phases from starting, and deletes after releasing it.
func (w *workspaces) discard(name string) (func() error, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	trash := trashPrefix + hex.EncodeToString(b[:])
	if err := w.root.Rename(name, trash); err != nil {
		return nil, fmt.Errorf("moving workspace %s aside: %w", name, err)
	}
	return func() error { return w.root.RemoveAll(trash) }, nil
}

// names lists what the root holds besides its lock file.
func (w *workspaces) names() ([]string, error) {
	d, err := w.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("listing workspace root %s: %w", w.path, err)
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("listing workspace root %s: %w", w.path, err)
	}
	var out []string
	for _, e := range entries {
		if e.Name() != lockName {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// taskOf is the task a root entry is the workspace of ("" for anything
// else: trash, strays).
func taskOf(name string) string {
	task, ok := strings.CutPrefix(name, workspacePrefix)
	if !ok || !workspaceTaskID.MatchString(task) {
		return ""
	}
	return task
}

// isNotExist reports a missing workspace.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
