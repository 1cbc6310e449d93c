// Package slots is the slot store: the state of every pool, pod, slot and
// task, kept in Redis and changed only by Lua scripts, so each operation is
// atomic and is either applied whole or not at all.
//
// Every script validates before it writes; an error reply means nothing was
// written. Keys carry the pool as a Redis Cluster hash tag
// ("<prefix>:v1:{ns/name}:…"), so each pool lives in one slot of a cluster.
// lua/lib.lua documents the data model.
package slots

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DataModelVersion is the layout this release reads and writes. A Redis
// holding another version is refused at start-up rather than misread.
const DataModelVersion = "1"

// DefaultPrefix is the key prefix of an installation. Installations sharing a
// Redis use different prefixes.
const DefaultPrefix = "ss"

// DefaultMaxOutput bounds the output kept with a task (its tail).
const DefaultMaxOutput = 64 << 10

//go:embed lua/*.lua
var luaFS embed.FS

// Options tune a Store.
type Options struct {
	Prefix     string // DefaultPrefix when empty
	MaxPayload int    // DefaultMaxPayload when 0
	MaxOutput  int    // DefaultMaxOutput when 0
	Logger     *slog.Logger
	// ClaimReplicaWait bounds how long a claim waits for a replica to
	// acknowledge it before its phase may start (default 1s; see replicatedRun).
	ClaimReplicaWait time.Duration
	// ReplicaAcks is how many replicas must acknowledge a claim or a drain
	// before it counts. 0 (auto): one, from the first time this Store sees
	// the primary report a replica on; none before that (a lone Redis, the
	// embedded one). N > 0: always N, also while fewer are connected (the
	// claim then waits and is retried), which also covers a process that
	// starts while its replica is away. See replicatedRun.
	ReplicaAcks int
}

// Store is the Go API over the slot state in Redis. It is safe for
// concurrent use.
type Store struct {
	rdb        redis.UniversalClient
	prefix     string
	maxPayload int
	maxOutput  int
	log        *slog.Logger
	scripts    map[string]*redis.Script
	// procClean holds the processing lists known to be empty, so Take
	// skips the recovery read (see Take).
	procClean sync.Map
	// retryClaim holds, per processing list, an entry whose claim failed
	// without an answer from Redis; the next Take claims it again.
	retryClaim sync.Map
	// claimWait and replicas: see replicatedRun.
	claimWait time.Duration
	replicas  replicaCount
}

// New checks the data-model version and loads every script on every master
// (pipelined calls do not retry NOSCRIPT), then returns a Store.
func New(ctx context.Context, rdb redis.UniversalClient, opts Options) (*Store, error) {
	s := &Store{
		rdb:        rdb,
		prefix:     opts.Prefix,
		maxPayload: opts.MaxPayload,
		maxOutput:  opts.MaxOutput,
		log:        opts.Logger,
		claimWait:  opts.ClaimReplicaWait,
		replicas:   replicaCount{fixed: opts.ReplicaAcks},
	}
	if opts.ReplicaAcks < 0 {
		return nil, fmt.Errorf("replica acknowledgements %d must be 0 (auto) or more", opts.ReplicaAcks)
	}
	if s.claimWait <= 0 {
		s.claimWait = time.Second
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if strings.ContainsAny(s.prefix, "{}") {
		return nil, fmt.Errorf("key prefix %q must not contain braces (they are the pool's hash tag)", s.prefix)
	}
	if s.maxPayload <= 0 {
		s.maxPayload = DefaultMaxPayload
	}
	if s.maxOutput <= 0 {
		s.maxOutput = DefaultMaxOutput
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "slots")
	scripts, err := buildScripts()
	if err != nil {
		return nil, err
	}
	s.scripts = scripts
	if err := s.checkVersion(ctx); err != nil {
		return nil, err
	}
	if err := s.loadScripts(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkVersion reads the data-model version and writes it only when it is
// missing: a pool's agents may read it but not write it (PoolACL), and find
// it written by the control plane.
func (s *Store) checkVersion(ctx context.Context) error {
	key := s.prefix + ":datamodel"
	v, err := s.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		if err := s.rdb.SetNX(ctx, key, DataModelVersion, 0).Err(); err != nil {
			return fmt.Errorf("checking data model version: %w", err)
		}
		v, err = s.rdb.Get(ctx, key).Result()
	}
	if err != nil {
		return fmt.Errorf("checking data model version: %w", err)
	}
	if v != DataModelVersion {
		return fmt.Errorf("%w: found version %q under %s, this release uses %q", ErrIncompatible, v, key, DataModelVersion)
	}
	return nil
}

// buildScripts builds each script: the metrics' tables (luaPrelude), lib.lua,
// then the operation's file, with the test-only mutations of mutant_on.go
// applied.
func buildScripts() (map[string]*redis.Script, error) {
	lib, err := luaFS.ReadFile("lua/lib.lua")
	if err != nil {
		return nil, fmt.Errorf("reading lua/lib.lua: %w", err)
	}
	entries, err := fs.Glob(luaFS, "lua/*.lua")
	if err != nil {
		return nil, fmt.Errorf("listing scripts: %w", err)
	}
	prelude := luaPrelude()
	out := map[string]*redis.Script{}
	for _, e := range entries {
		name := strings.TrimSuffix(path.Base(e), ".lua")
		if name == "lib" {
			continue
		}
		body, err := luaFS.ReadFile(e)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", e, err)
		}
		mlib, err := mutate(string(lib))
		if err != nil {
			return nil, fmt.Errorf("script %s: %w", name, err)
		}
		mbody, err := mutate(string(body))
		if err != nil {
			return nil, fmt.Errorf("script %s: %w", name, err)
		}
		code := inlineNames(libFor(mlib, mbody) + "\n" + mbody)
		out[name] = redis.NewScript(preludeFor(prelude, code) + code)
	}
	return out, nil
}

// libFor returns lib.lua with only the helpers body uses, directly or
// through other helpers. Redis runs a script's whole chunk on every call,
// and defining every helper of lib.lua (a closure each) cost a few
// microseconds per call, a good part of the cheapest scripts. The statements
// of lib.lua that are not helpers (the key names) are always kept, and the
// helpers keep their order, so a name resolves as it does in the whole file.
//
// A helper is a top-level "local function name(" up to its closing "end" at
// the start of a line (or the same line, for one-liners), with the comment
// lines right before it.
func libFor(lib, body string) string {
	type helper struct {
		name, text string
	}
	var parts []helper // name "" for statements always kept
	lines := strings.SplitAfter(lib, "\n")
	var pending strings.Builder // comment lines waiting for what follows them
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		rest, ok := strings.CutPrefix(line, "local function ")
		if !ok {
			if strings.HasPrefix(line, "--") {
				pending.WriteString(line)
				continue
			}
			parts = append(parts, helper{text: pending.String() + line})
			pending.Reset()
			continue
		}
		name, _, _ := strings.Cut(rest, "(")
		var text strings.Builder
		text.WriteString(pending.String())
		pending.Reset()
		text.WriteString(line)
		if !strings.HasSuffix(strings.TrimSpace(line), " end") {
			for i++; i < len(lines); i++ {
				text.WriteString(lines[i])
				if strings.TrimRight(lines[i], "\r\n") == "end" {
					break
				}
			}
		}
		parts = append(parts, helper{name: name, text: text.String()})
	}
	// Mark the helpers body names, then those they name, until none is added.
	used := map[string]bool{}
	var visit func(text string)
	visit = func(text string) {
		for _, p := range parts {
			if p.name != "" && !used[p.name] && usesName(text, p.name) {
				used[p.name] = true
				visit(codeOnly(p.text))
			}
		}
	}
	visit(codeOnly(body))
	var b strings.Builder
	for _, p := range parts {
		if p.name == "" || used[p.name] {
			b.WriteString(p.text)
		}
	}
	b.WriteString(pending.String())
	return b.String()
}

// preludeFor keeps the lines of the prelude that define a name code uses
// (and its comments): like the helpers, every local of the prelude is set
// on each call, and the metrics' tables are built on each call.
func preludeFor(prelude, code string) string {
	code = codeOnly(code)
	var b strings.Builder
	for line := range strings.SplitAfterSeq(prelude, "\n") {
		if rest, ok := strings.CutPrefix(line, "local "); ok {
			name, _, _ := strings.Cut(rest, " ")
			if !usesName(code, name) {
				continue
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

// codeOnly drops the lines that are only a comment, so a helper named in a
// comment is not kept for it (one named in a trailing comment is: harmless).
func codeOnly(text string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// usesName says whether name appears in text as a whole identifier.
func usesName(text, name string) bool {
	isIdent := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(text[i:], name)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(name)
		if (j == 0 || !isIdent(text[j-1])) && (end == len(text) || !isIdent(text[end])) {
			return true
		}
		i = j + 1
	}
}

func (s *Store) loadScripts(ctx context.Context) error {
	load := func(ctx context.Context, c *redis.Client) error {
		for name, sc := range s.scripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("loading script %s on %s: %w", name, c.Options().Addr, err)
			}
		}
		return nil
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, load)
	case *redis.Client:
		return load(ctx, c)
	default:
		for name, sc := range s.scripts {
			if err := sc.Load(ctx, s.rdb).Err(); err != nil {
				return fmt.Errorf("loading script %s: %w", name, err)
			}
		}
		return nil
	}
}

func (s *Store) base(p PoolID) string   { return s.prefix + ":v1:{" + p.String() + "}:" }
func (s *Store) cfgKey(p PoolID) string { return s.base(p) + keyCfg }
func (s *Store) poolsKey() string       { return s.prefix + ":v1:pools" }

// run executes a script for a pool. EVALSHA falls back to EVAL on NOSCRIPT
// (a failover to a replica that never saw SCRIPT LOAD). A nil reply is
// returned as (nil, nil).
func (s *Store) run(ctx context.Context, name string, pool PoolID, args ...any) (any, error) {
	if err := pool.Validate(); err != nil {
		return nil, err
	}
	sc, ok := s.scripts[name]
	if !ok {
		return nil, fmt.Errorf("no script %q", name)
	}
	res, err := sc.Run(ctx, s.rdb, []string{s.cfgKey(pool)}, args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return res, mapScriptError(err)
}

func newGeneration() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
