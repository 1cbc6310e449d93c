package slots

import (
	"fmt"
	"strconv"
	"strings"
)

// The names Go and the Lua scripts share: the key suffixes under a pool's
// base key and the fields of its config hash. They are defined here and only
// here: the scripts get them from luaPrelude, prepended to every script when
// it is built, and use the Lua names, never the literals. A rename is then
// one edit; TestLuaNamesMatchGo fails when the two sides drift apart.

// Key suffixes under a pool's base key "<prefix>:v1:{ns/name}:" (lua/lib.lua
// says what each key holds). Those ending in ":" take a name after them.
const (
	keyCfg      = "cfg"
	keyCounters = "n"
	keyPods     = "pods"
	keyPod      = "pod:"
	keyInbox    = "inbox:"
	keyProc     = "proc:"
	keyIdle     = "idle:"
	keyQueue    = "q:"
	keyQueuedAt = "qat"
	keyHB       = "hb"
	keyResv     = "resv"
	keyDone     = "done"
	keyTomb     = "tomb"
	keyTask     = "t:"
	keyHistory  = "h:"
	keyEvents   = "ev"
	keyMetrics  = "metrics"
)

// Fields of a pool's config hash. DeclarePool writes them, Pool reads them
// back, and every script reads them (load_cfg in lua/lib.lua). Those ending
// in "_" or named as prefixes take a suffix: a class index or a task type.
const (
	cfgGeneration   = "gen"
	cfgGenerationAt = "gat"
	cfgSignature    = "sig"
	cfgNSlots       = "nslots"
	cfgSlotClasses  = "sc"
	cfgNClasses     = "ncls"
	cfgClassTypes   = "ct"   // prefix: "ct<class>", the types a class runs
	cfgOrder        = "ord_" // prefix: "ord_<type>", the classes a type tries, in order
	cfgTypes        = "types"
	cfgFill         = "fill"
	cfgManaged      = "managed"
	cfgHBTimeout    = "hbto"
	cfgResvTTL      = "rttl"
	cfgMaxAttempts  = "maxatt"
	cfgQueueLimit   = "qlim"
	cfgMaxQueueAge  = "qage"
	cfgRetention    = "ret"
	cfgRetentionN   = "retn"
	cfgEventCap     = "evcap"
	cfgDeleting     = "delat" // Redis time (ms) the pool's deletion began; absent otherwise
	// cfgHPATolerance is what the janitor found on the pool's HPA
	// (HPATolerance): written with the rest of the config, read by the
	// stats script for the scaler.
	cfgHPATolerance = "hpatol"
)

// luaNames gives each shared name its Lua name, which inlineNames replaces
// by the value when the scripts are built. Every constant above must be
// here, and every Lua name used by the scripts (TestLuaNamesMatchGo).
var luaNames = []struct{ lua, value string }{
	{"KEY_CFG", keyCfg},
	{"KEY_N", keyCounters},
	{"KEY_PODS", keyPods},
	{"KEY_POD", keyPod},
	{"KEY_INBOX", keyInbox},
	{"KEY_PROC", keyProc},
	{"KEY_IDLE", keyIdle},
	{"KEY_Q", keyQueue},
	{"KEY_QAT", keyQueuedAt},
	{"KEY_HB", keyHB},
	{"KEY_RESV", keyResv},
	{"KEY_DONE", keyDone},
	{"KEY_TOMB", keyTomb},
	{"KEY_T", keyTask},
	{"KEY_H", keyHistory},
	{"KEY_EV", keyEvents},
	{"KEY_M", keyMetrics},

	{"CF_GEN", cfgGeneration},
	{"CF_GAT", cfgGenerationAt},
	{"CF_SIG", cfgSignature},
	{"CF_NSLOTS", cfgNSlots},
	{"CF_SC", cfgSlotClasses},
	{"CF_NCLS", cfgNClasses},
	{"CF_CT", cfgClassTypes},
	{"CF_ORD", cfgOrder},
	{"CF_TYPES", cfgTypes},
	{"CF_FILL", cfgFill},
	{"CF_MANAGED", cfgManaged},
	{"CF_HBTO", cfgHBTimeout},
	{"CF_RTTL", cfgResvTTL},
	{"CF_MAXATT", cfgMaxAttempts},
	{"CF_QLIM", cfgQueueLimit},
	{"CF_QAGE", cfgMaxQueueAge},
	{"CF_RET", cfgRetention},
	{"CF_RETN", cfgRetentionN},
	{"CF_EVCAP", cfgEventCap},
	{"CF_DEL", cfgDeleting},
	{"CF_HPATOL", cfgHPATolerance},
}

// luaPrelude is the Lua put before lib.lua: the metrics' tables
// (metricsPrelude). The names of luaNames are not locals there: inlineNames
// writes their values into the code as literals, because a local that
// lib.lua's helpers use becomes an upvalue of each, allocated on every call
// (Redis runs a script's whole chunk per call): about 1-2 µs of a
// heartbeat's or a completion's prelude. Literals are constants of the
// compiled chunk and cost nothing per call.
func luaPrelude() string {
	return "-- Generated from names.go and metrics.go when the scripts are built.\n" + metricsPrelude()
}

// luaNameValues maps each name of luaNames to its Lua string literal.
var luaNameValues = func() map[string]string {
	m := make(map[string]string, len(luaNames))
	for _, n := range luaNames {
		m[n.lua] = strconv.Quote(n.value)
	}
	return m
}()

// inlineNames replaces each whole identifier of code that is a name of
// luaNames with its value as a Lua string literal; comments and string
// literals are copied as they are. The Lua sources keep using the names,
// defined once here.
func inlineNames(code string) string {
	isIdent := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	var b strings.Builder
	b.Grow(len(code))
	for i := 0; i < len(code); {
		c := code[i]
		switch {
		case c == '-' && strings.HasPrefix(code[i:], "--"): // a comment, to the end of its line
			j := strings.IndexByte(code[i:], '\n')
			if j < 0 {
				j = len(code) - i
			}
			b.WriteString(code[i : i+j])
			i += j
			continue
		case c == '\'' || c == '"': // a string, to its closing quote
			j := i + 1
			for j < len(code) && code[j] != c && code[j] != '\n' {
				if code[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(code))
			b.WriteString(code[i:j])
			i = j
			continue
		case !isIdent(c):
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(code) && isIdent(code[j]) {
			j++
		}
		if lit, ok := luaNameValues[code[i:j]]; ok {
			b.WriteString(lit)
		} else {
			b.WriteString(code[i:j])
		}
		i = j
	}
	return b.String()
}

// A pool's Redis ACL: what an agent of the pool may do, next to the key
// names it must cover. PoolACL builds the rules; TestPoolACLCoversScripts
// fails when a script calls a command the list lacks, and the agent's tests
// run it under these rules (any NOPERM fails them).

// poolACLCommands are the commands an agent sends: on connect (HELLO and
// AUTH need no permission; go-redis adds CLIENT SETINFO, SELECT for a
// database other than 0, and a cluster client asks for the topology and the
// commands' key positions), when the store opens (GET of the data-model
// version, SCRIPT LOAD), directly (Pool's HGETALL, Take's LINDEX, BLMOVE and
// LREM, INFO replication to count replicas and WAIT for one), and inside the scripts,
// whose redis.call is checked against the caller's ACL too.
var poolACLCommands = []string{
	// connection and topology
	"ping", "select", "client|setname", "command", "cluster|slots", "cluster|shards",
	// store start-up and direct calls
	"get", "script|load", "evalsha", "eval", "hgetall", "lindex", "blmove", "lrem", "wait",
	// INFO only with "replication" as its first section (connectedReplicas):
	// claims wait for a replica when there is one. A rule on the first
	// argument cannot stop further sections ("INFO replication server"):
	// the user can read the server's statistics, never a key or a setting.
	"info|replication",
	// the scripts' calls (lua/*.lua)
	"del", "hdel", "hget", "hincrby", "hkeys", "hmget", "hset", "llen", "rpush", "time", "xadd", "xrevrange",
	"zadd", "zcard", "zpopmin", "zrange", "zrangebyscore", "zrem", "zremrangebyscore", "zscore",
}

// PoolACL returns the ACL SETUSER rules (after the user name, without its
// passwords or "on") that confine a user to one pool of the installation
// with this key prefix: read and write the pool's keys
// "<prefix>:v1:{ns/name}:*", read (never write) "<prefix>:datamodel", run
// only poolACLCommands, no Pub/Sub channel. The rules start with "reset", so
// applying them again replaces whatever the user had (idempotent). Needs
// Redis 7 (the %R~ read-only key selector).
func PoolACL(prefix string, pool PoolID) ([]string, error) {
	if err := pool.Validate(); err != nil {
		return nil, err
	}
	if prefix == "" || strings.ContainsAny(prefix, "{} \t\r\n") {
		return nil, fmt.Errorf("key prefix %q must be non-empty, without braces or blanks", prefix)
	}
	rules := []string{
		"reset", // off, no passwords, no keys, no channels, -@all
		"~" + aclGlobEscape(prefix+":v1:{"+pool.String()+"}:") + "*",
		"%R~" + aclGlobEscape(prefix+":datamodel"),
		"resetchannels",
		"-@all",
	}
	for _, c := range poolACLCommands {
		rules = append(rules, "+"+c)
	}
	return rules, nil
}

// aclGlobEscape escapes the characters Redis's glob (stringmatchlen) treats
// as special, so a key prefix matches itself only. Braces are not special.
func aclGlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
