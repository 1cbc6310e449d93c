package slots

import (
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
)

// luaNames gives each shared name its Lua local. Every constant above must
// be here, and every Lua name used by the scripts (TestLuaNamesMatchGo).
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
}

// luaPrelude is the Lua that defines luaNames, put before lib.lua. Locals
// cost the scripts nothing at run time over the literals they replace, and
// the prelude is part of the script loaded once (no extra round trip).
func luaPrelude() string {
	var b strings.Builder
	b.WriteString("-- Generated from names.go when the scripts are built: the names Go and Lua share.\n")
	for _, n := range luaNames {
		b.WriteString("local " + n.lua + " = " + strconv.Quote(n.value) + "\n")
	}
	return b.String()
}
