package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// The workspace digest fixes what a plan left for its apply: sha256 over
// one line per entry, in lexical walk order (io/fs.WalkDir), the root
// included:
//
//	"<path>" <type> <mode> <size> <content>
//
// path relative to the workspace, Go-quoted; type f (file), d, l
// (symlink), p (fifo), s (socket), c/b (devices), ? (other); mode the
// permission bits with setuid, setgid and sticky, octal; size the bytes
// hashed (0 for all but files); content the file's sha256, or the
// symlink's target, Go-quoted (links are never followed). Owners and times
// are left out: every executor runs as the agent's user, and an apply
// need not care when a file was written, only what it holds.
//
// A workspace of more than maxDigestEntries entries or maxDigestBytes of
// file content gets the digest digestTooLarge, one the agent cannot
// read (an executor may chmod a file 000) digestUnreadable; the apply
// after either refuses to run: an apply runs only where a sha256 digest
// was recorded and is found again.
const (
	digestPrefix     = "sha256:"
	digestTooLarge   = "too-large"
	digestUnreadable = "unreadable"
	digestMissing    = "missing"
)

// The digest's bounds (variables for the tests): hashing 8 GiB takes tens
// of seconds, between the plan's end and its result being recorded, and
// again before the apply.
var (
	maxDigestEntries       = 100_000
	maxDigestBytes   int64 = 8 << 30
)

var errDigestTooLarge = errors.New("workspace too large to digest")

// digest computes a task's workspace digest, or one of the words above
// (with the error behind it) when there is no sha256 one.
func (w *workspaces) digest(task string) (string, error) {
	n, err := workspaceName(task)
	if err != nil {
		return digestUnreadable, err
	}
	sub, err := w.root.OpenRoot(n)
	if isNotExist(err) {
		return digestMissing, fmt.Errorf("workspace of task %s: %w", task, err)
	}
	if err != nil {
		return digestUnreadable, fmt.Errorf("workspace of task %s: %w", task, err)
	}
	defer sub.Close()
	d, err := digestRoot(sub)
	switch {
	case errors.Is(err, errDigestTooLarge):
		return digestTooLarge, fmt.Errorf("workspace of task %s: %w", task, err)
	case err != nil:
		return digestUnreadable, fmt.Errorf("workspace of task %s: %w", task, err)
	}
	return d, nil
}

func digestRoot(root *os.Root) (string, error) {
	sum := sha256.New()
	content := sha256.New()
	entries, total := 0, int64(0)
	err := fs.WalkDir(root.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if entries++; entries > maxDigestEntries {
			return fmt.Errorf("%w: more than %d entries", errDigestTooLarge, maxDigestEntries)
		}
		info, err := root.Lstat(path) // the entry itself, never a link's target
		if err != nil {
			return err
		}
		mode := info.Mode()
		perm := uint32(mode.Perm())
		if mode&fs.ModeSetuid != 0 {
			perm |= 0o4000
		}
		if mode&fs.ModeSetgid != 0 {
			perm |= 0o2000
		}
		if mode&fs.ModeSticky != 0 {
			perm |= 0o1000
		}
		var size int64
		var what string
		switch mode.Type() {
		case 0:
			n, h, err := hashFile(root, path, content, maxDigestBytes-total)
			if err != nil {
				return err
			}
			size, what = n, h
			total += n
		case fs.ModeSymlink:
			target, err := root.Readlink(path)
			if err != nil {
				return err
			}
			what = fmt.Sprintf("%q", target)
		}
		_, err = fmt.Fprintf(sum, "%q %s %o %d %s\n", path, typeLetter(mode), perm, size, what)
		return err
	})
	if err != nil {
		return "", err
	}
	return digestPrefix + hex.EncodeToString(sum.Sum(nil)), nil
}

// hashFile hashes a regular file through the root, refusing to follow a
// link or block on a fifo swapped in since the walk saw a file; at most
// limit bytes.
func hashFile(root *os.Root, path string, h hash.Hash, limit int64) (int64, string, error) {
	f, err := root.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return 0, "", err
	} else if !fi.Mode().IsRegular() {
		return 0, "", fmt.Errorf("%s changed type during the digest", path)
	}
	h.Reset()
	n, err := io.Copy(h, io.LimitReader(f, limit+1))
	if err != nil {
		return 0, "", err
	}
	if n > limit {
		return 0, "", fmt.Errorf("%w: more than %d bytes", errDigestTooLarge, maxDigestBytes)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func typeLetter(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "f"
	case fs.ModeDir:
		return "d"
	case fs.ModeSymlink:
		return "l"
	case fs.ModeNamedPipe:
		return "p"
	case fs.ModeSocket:
		return "s"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "c"
	case fs.ModeDevice:
		return "b"
	}
	return "?"
}

// verifiable reports whether a stored digest is one an apply may run
// against: a sha256 one, not a word saying there was none.
func verifiable(d string) bool { return strings.HasPrefix(d, digestPrefix) }
