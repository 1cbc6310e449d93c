#!/usr/bin/env bash
# The project's whole test command (make test, .ci/run).
#
# Installs redis-server and chromium (the dashboard's browser test) if
# missing, starts a private standalone Redis and a private 3-node Redis
# Cluster on free loopback ports, then runs go vet and go test -race in every
# Go module of the repo.
#
# Env:
#   TEST_FLAGS       extra go test flags, split on whitespace (e.g. "-run TestX -v")
#   NO_RACE_MODULES  module dirs relative to the repo root that run without -race
#                    (default: the KEDA, Kubernetes, monitoring and scale test modules,
#                    whose huge dependency trees would take far longer to build
#                    with -race; the code under test is raced in the root module,
#                    and test/monitoring's tests drive binaries and files;
#                    test/scale is a benchmark that skips unless
#                    SLOTSCALER_SCALE_RUN=1 (make bench-scale): only compiled)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a test_flags <<<"${TEST_FLAGS:-}"
read -r -a no_race <<<"${NO_RACE_MODULES-test/keda test/kube test/monitoring test/scale}"

# ---- Redis ------------------------------------------------------------------

install_redis() {
	if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
		return
	fi
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	# sudo drops the environment, hence env inside it.
	local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
	echo "test.sh: redis-server not found; running: ${apt[*]} install -y redis-server"
	if ! "${apt[@]}" install -y redis-server; then
		echo "test.sh: install failed; running apt-get update and retrying"
		"${apt[@]}" update
		"${apt[@]}" install -y redis-server
	fi
}

# The dashboard's browser test drives Debian's /usr/bin/chromium (it is never
# skipped, so it must be there).
install_chromium() {
	[[ -x /usr/bin/chromium ]] && return
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
	echo "test.sh: chromium not found; running: ${apt[*]} install -y chromium"
	if ! "${apt[@]}" install -y chromium; then
		echo "test.sh: install failed; running apt-get update and retrying"
		"${apt[@]}" update
		"${apt[@]}" install -y chromium
	fi
}

TMP=""
PIDS=()

cleanup() {
	local rc=$?
	set +e
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do # give each a moment to shut down, then force it
		for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[[ -n $TMP ]] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT # exit runs the EXIT trap
trap 'exit 143' TERM

# A random port nobody answers on. Not race-free (it's bash), so start_redis
# retries when redis-server finds the port taken. Range avoids the kernel's
# ephemeral ports (32768+) and well-known Redis ports.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		if ! timeout 1 bash -c "echo >/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# start_redis NAME [cluster]: starts a redis-server in $TMP/NAME, waits for
# PING, and sets PORT. Cluster nodes get an explicit bus port (redis >= 7).
start_redis() {
	local name=$1 cluster=${2:-} dir="$TMP/$1" pid extra
	mkdir -p "$dir"
	for _ in 1 2 3 4 5; do
		PORT=$(free_port)
		extra=()
		[[ -n $cluster ]] && extra=(--cluster-enabled yes --cluster-config-file nodes.conf
			--cluster-node-timeout 5000 --cluster-port "$(free_port)")
		redis-server --port "$PORT" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
			--daemonize no "${extra[@]}" >"$dir/redis.log" 2>&1 &
		pid=$!
		PIDS+=("$pid")
		for _ in {1..100}; do # 10 s
			kill -0 "$pid" 2>/dev/null || break
			if [[ $(timeout 2 redis-cli -p "$PORT" ping 2>/dev/null) == PONG ]]; then
				echo "test.sh: redis $name on 127.0.0.1:$PORT"
				return
			fi
			sleep 0.1
		done
		if ! kill -0 "$pid" 2>/dev/null && grep -q "Address already in use" "$dir/redis.log"; then
			continue # port taken between free_port and bind: try another
		fi
		echo "test.sh: redis $name exited or did not answer PING within 10s; $dir/redis.log:" >&2
		tail -n 30 "$dir/redis.log" >&2
		exit 1
	done
	echo "test.sh: redis $name: no free port after 5 tries" >&2
	exit 1
}

start_servers() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/slotscaler-test.XXXXXX")
	start_redis standalone
	export SLOTSCALER_TEST_REDIS_URL="redis://127.0.0.1:$PORT/0"

	local addrs=() i a
	for i in 1 2 3; do
		start_redis "cluster$i" cluster
		addrs+=("127.0.0.1:$PORT")
	done
	local t0=$SECONDS
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$TMP/cluster-create.log" 2>&1 ||
		{ cat "$TMP/cluster-create.log" >&2; exit 1; }
	for a in "${addrs[@]}"; do
		for i in {1..100}; do # 10 s per node
			redis-cli -h "${a%:*}" -p "${a#*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
			((i < 100)) || { echo "test.sh: cluster node $a not ok within 10s" >&2; exit 1; }
			sleep 0.1
		done
	done
	echo "test.sh: redis cluster ok in $((SECONDS - t0))s: ${addrs[*]}"
	export SLOTSCALER_TEST_REDIS_CLUSTER_ADDRS
	SLOTSCALER_TEST_REDIS_CLUSTER_ADDRS=$(IFS=,; echo "${addrs[*]}")
}

# ---- checks -----------------------------------------------------------------

# Placeholder for repo-wide checks beyond go vet/test (generated-code
# freshness, mutation runs). Return non-zero to fail the run; it runs in an
# `if`, where set -e is off, so chain commands with && or check each one.
extra_checks() {
	local ok=0
	mutation_runs || ok=1
	generated_up_to_date || ok=1
	return "$ok"
}

# Generated code is committed (templ components web/*_templ.go, the AgentPool
# deepcopy and CRD, docs/configuration.md): running `make generate` must change nothing.
GENERATED=(web pkg/apis charts/slotscaler/crds docs/configuration.md)
generated_up_to_date() {
	local before after
	before="$(cd "$ROOT" && git status --porcelain -- "${GENERATED[@]}" && find "${GENERATED[@]}" -type f -exec sha256sum {} + | sort)"
	(cd "$ROOT" && make --no-print-directory generate >"$TMP/generate.log" 2>&1) || {
		echo "test.sh: FAIL make generate:"
		tail -20 "$TMP/generate.log"
		return 1
	}
	after="$(cd "$ROOT" && git status --porcelain -- "${GENERATED[@]}" && find "${GENERATED[@]}" -type f -exec sha256sum {} + | sort)"
	if [[ "$before" != "$after" ]]; then
		echo "test.sh: FAIL generated code was stale: run 'make generate' and commit the result"
		(cd "$ROOT" && git status --short -- "${GENERATED[@]}")
		return 1
	fi
	echo "test.sh: ok   generated code up to date (templ, deepcopy, CRD, docs/configuration.md)"
}

# Mutation runs: the slot store's suite is run with one guarantee broken at a
# time (pkg/slots/mutant_on.go) and must FAIL under each, proving the tests
# can see the bug. The unmutated tagged build must pass (it checks that every
# mutation still matches the scripts).
MUTANTS=(drain-idle epoch dispatch-on-free)
mutation_runs() {
	local m ok=0
	(cd "$ROOT" && go test -tags slotsmutants -count=1 -run TestMutantsApply ./pkg/slots/ >/dev/null) || {
		echo "test.sh: FAIL mutants no longer match the Lua scripts"
		return 1
	}
	for m in "${MUTANTS[@]}"; do
		if (cd "$ROOT" && SLOTSCALER_MUTANT=$m go test -tags slotsmutants -count=1 -failfast ./pkg/slots/ >"$TMP/mutant-$m.log" 2>&1); then
			echo "test.sh: FAIL mutant $m survived: the slot store's tests did not notice it"
			ok=1
		elif grep -q -- '--- FAIL: ' "$TMP/mutant-$m.log"; then
			echo "test.sh: ok   mutant $m killed by $(grep -m1 -o -- '--- FAIL: [^ ]*' "$TMP/mutant-$m.log" | cut -c11-)"
		else
			# A build error is not a kill: it proves nothing about the tests.
			echo "test.sh: FAIL mutant $m: the run failed without a failing test:"
			tail -20 "$TMP/mutant-$m.log"
			ok=1
		fi
	done
	return $ok
}

# Every go.mod is a module; go ./... stops at module boundaries, so each
# nested module (e.g. test/keda) needs its own run.
modules() {
	(cd "$ROOT" && find . \( -name vendor -o -name testdata -o -name .git \) -prune -o -name go.mod -print) |
		sed -e 's|/go.mod$||' -e 's|^\./||' | sort
}

test_module() {
	local mod=$1 race=(-race) m
	for m in "${no_race[@]}"; do
		m=${m%/} m=${m#./}
		[[ ${m:-.} == "$mod" ]] && race=()
	done
	echo "=== $mod: go vet ./... && go test ${race[*]} -count=1 -timeout 30m ${test_flags[*]} ./..."
	# Run go test even when vet fails: one run should report every problem.
	(
		cd "$ROOT/$mod" || exit 1
		if [[ -z $(go list -e ./... 2>/dev/null) ]] && go list -m >/dev/null; then
			echo "no packages; skipped" # go vet/test would fail on an empty module
			exit 0
		fi
		rc=0
		go vet ./... || rc=1
		# go test's default 10m bound is less than test/kube's suite takes
		# on two loaded cores; a hang still ends, with every goroutine.
		go test "${race[@]}" -count=1 -timeout 30m "${test_flags[@]}" ./... || rc=1
		exit "$rc"
	) 2>&1 | tee "$TMP/module-${mod//\//_}.log"
	return "${PIPESTATUS[0]}"
}

# failures_of MOD: the lines that say what failed in a module's run. CI shows
# only the tail of the output, and a failing test's own lines may be far above
# it, under the API server's shutdown logs.
failures_of() {
	local log="$TMP/module-${1//\//_}.log"
	[[ -f $log ]] || return 0
	grep -E -e '--- FAIL: ' -e '^panic: ' -e '^F[0-9]{4} ' -e '^FAIL\s' -e '_test\.go:[0-9]+: ' -e 'Error Trace:|Error:|Test:|Messages:' "$log" |
		grep -v -E '^\s*(--- PASS|ok )' | head -n 60 | sed 's/^/    /'
}

main() {
	install_redis
	install_chromium
	start_servers

	local summary=() failed=0 mod t0 mods
	mapfile -t mods < <(modules) # not a `while read` loop: tests must not get it as stdin
	for mod in "${mods[@]}"; do
		t0=$SECONDS
		if test_module "$mod"; then
			summary+=("ok    $mod $((SECONDS - t0))s")
		else
			summary+=("FAIL  $mod $((SECONDS - t0))s")
			failed=1
		fi
	done

	t0=$SECONDS
	if extra_checks; then
		summary+=("ok    extra_checks $((SECONDS - t0))s")
	else
		summary+=("FAIL  extra_checks $((SECONDS - t0))s")
		failed=1
	fi

	echo "=== summary"
	local line
	for line in "${summary[@]}"; do
		echo "$line"
		[[ $line == FAIL* && $line != *extra_checks* ]] && failures_of "$(awk '{print $2}' <<<"$line")"
	done
	return "$failed"
}

main "$@"
