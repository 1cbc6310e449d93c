#!/usr/bin/env bash
# Writes docs/configuration.md from each command's --help: the flags, their
# environment twins, defaults and descriptions. `make generate` runs it and
# `make test` fails when the committed file is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/" ./scaler ./agent ./dashboard
[[ -d demo ]] && go build -o "$bin/" ./demo

table() { # title, command...
	local title=$1
	shift
	printf '\n## `%s`\n\n| flag | environment | default | |\n|---|---|---|---|\n' "$title"
	"$@" --help 2>&1 | awk '
		/^  --/ {
			if (flag != "") emit()
			flag = $1; env = ""
			if (match($0, /\(env [A-Z0-9_]+\)/)) env = substr($0, RSTART + 5, RLENGTH - 6)
			desc = ""; next
		}
		/^    / && flag != "" { sub(/^[ \t]+/, ""); desc = desc (desc == "" ? "" : " ") $0; next }
		END { if (flag != "") emit() }
		function emit(   def) {
			def = ""
			if (match(desc, / \(default [^)]*\)$/)) {
				def = substr(desc, RSTART + 10, RLENGTH - 11); desc = substr(desc, 1, RSTART - 1)
				gsub(/^"|"$/, "", def)
			}
			gsub(/\|/, "\\|", desc)
			printf "| `%s` | `%s` | %s | %s |\n", flag, env, (def == "" ? "" : "`" def "`"), desc
		}'
}

{
	echo '# Configuration reference'
	echo
	echo 'Generated from each command'"'"'s `--help` by `scripts/config-reference.sh` (`make generate`).'
	echo 'Every flag has an environment twin; a flag given on the command line wins.'
	table "scaler" "$bin/scaler"
	table "scaler janitor" "$bin/scaler" janitor
	table "scaler declare-pool" "$bin/scaler" declare-pool
	table "scaler delete-pools" "$bin/scaler" delete-pools
	table "scaler drain-idle" "$bin/scaler" drain-idle
	table "agent" "$bin/agent"
	table "dashboard" "$bin/dashboard"
	if [[ -x $bin/demo ]]; then table "demo" "$bin/demo"; fi
} >docs/configuration.md
