#!/usr/bin/env bash
# The package as a user installs it: build the (compiled) wheel, install it into a fresh venv
# outside the source tree, and from outside the tree import it, run `crdtkv --version`,
# replicate one increment between two `crdtkv serve` processes on loopback, and read it
# through the faces the wheel ships: RESP at one node (redis-cli), HTTP at the other (curl,
# the status page included).
#
# Usage: .ci/wheel-smoke.sh [PYTHON]   (default: python3.11, else python3)
# Needs the package index for the build backend and the dependencies.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${1:-$(command -v python3.11 || command -v python3)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/crdtkv-wheel-smoke.XXXXXX")"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf 'wheel-smoke: %s\n' "$*"; }
fail() {
    printf 'wheel-smoke: FAILED: %s\n' "$*" >&2
    exit 1
}

case "$WORK" in
"$SRC"/*) fail "the work directory $WORK is inside the source tree" ;;
esac

# 1. Build from a copy of the tree, so no build/ directory of an earlier build can fill a gap.
say "building the wheel with $PYTHON"
"$PYTHON" - "$SRC" "$WORK/src" <<'EOF'
import shutil, sys
ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
shutil.copytree(sys.argv[1], sys.argv[2], ignore=ignore)
EOF
# The compiled build: a wheel that fell back to pure Python (no compiler) fails below.
env -u CRDTKV_PURE "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/crdtkv-*.whl)"
say "built $(basename "$WHEEL")"

# 2. A fresh venv outside the source tree, the wheel and its dependencies from the package index.
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
"$VENV/python" -m pip install --quiet --disable-pip-version-check "$WHEEL"
"$VENV/python" -m pip check --disable-pip-version-check

# 3. From outside the source tree: imports, the version, the entry points.
cd "$WORK"
VERSION="$("$VENV/python" - "$WORK/venv" <<'EOF'
import importlib.metadata, sys
import crdtkv, crdtkv.core, crdtkv.storage, transports
from crdtkv import Client, Document, KvStore, Node
from crdtkv.storage.sqlite import SqliteStorage
for module in (crdtkv, transports):
    assert module.__file__.startswith(sys.argv[1]), f"{module.__name__} imported from {module.__file__}"
assert importlib.metadata.version("crdtkv") == crdtkv.__version__, "wheel and __version__ differ"
assert crdtkv.BUILD == "compiled", f"the wheel's build loaded is {crdtkv.BUILD!r}, not the compiled one"
import pathlib  # every compiled module ships its .py too (what CRDTKV_PURE=1 loads)
compiled = [p for p in pathlib.Path(crdtkv.__file__).parent.rglob("*.so") if not p.name.startswith("compiled__mypyc.")]
assert compiled, "the wheel holds no compiled module"
missing = [str(p) for p in compiled if not p.with_name(p.name.split(".")[0] + ".py").is_file()]
assert not missing, f"compiled modules without their .py: {missing}"
schemes = {ep.name for ep in importlib.metadata.entry_points(group="crdtkv.transports")}
assert {"ws", "wss", "memory"} <= schemes, schemes
store = KvStore.open(replica_id="smoke")
store.incr("n", 2)
assert store.get("n") == 2
print(crdtkv.__version__)
EOF
)"
[ "$("$VENV/crdtkv" --version)" = "crdtkv $VERSION (compiled: mypyc)" ] ||
    fail "crdtkv --version printed '$("$VENV/crdtkv" --version)'"
[ "$(CRDTKV_PURE=1 "$VENV/crdtkv" --version)" = "crdtkv $VERSION (pure Python)" ] ||
    fail "CRDTKV_PURE=1 crdtkv --version printed '$(CRDTKV_PURE=1 "$VENV/crdtkv" --version)'"
say "imports and crdtkv --version: crdtkv $VERSION (compiled: mypyc); with CRDTKV_PURE=1: (pure Python)"

# 4. Two nodes on loopback (free ports: the OS picks), an incr at one, read at the other.
printf 'wheel-smoke-secret\n' >"$WORK/secret"
DEADLINE_S=60 # a hang guard only: on an idle machine this takes about a second

node_url() { # the URL a `crdtkv serve` prints once listening
    local log="$1" pid="$2" i url
    for ((i = 0; i < DEADLINE_S * 10; i++)); do
        url="$(sed -n 's/^serving .* on \(ws:\/\/[^ ]*\)$/\1/p' "$log")"
        if [ -n "$url" ]; then
            printf '%s\n' "$url"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || fail "crdtkv serve exited early: $(cat "$log")"
        sleep 0.1
    done
    fail "crdtkv serve printed no URL within ${DEADLINE_S} s: $(cat "$log")"
}

"$VENV/crdtkv" serve --id london --listen ws://127.0.0.1:0 --resp 127.0.0.1:0 --secret-file "$WORK/secret" \
    >"$WORK/london.log" 2>&1 &
PIDS+=($!)
LONDON_PID=$!
LONDON="$(node_url "$WORK/london.log" "$LONDON_PID")"
"$VENV/crdtkv" serve --id sydney --listen ws://127.0.0.1:0 --peer "$LONDON" --http 127.0.0.1:0 \
    --secret-file "$WORK/secret" >"$WORK/sydney.log" 2>&1 &
PIDS+=($!)
SYDNEY_PID=$!
SYDNEY="$(node_url "$WORK/sydney.log" "$SYDNEY_PID")"
say "london on $LONDON, sydney on $SYDNEY"

[ "$("$VENV/crdtkv" incr --node "$LONDON" --secret-file "$WORK/secret" smoke:views 3)" = 3 ] ||
    fail "incr at london did not print 3"
seen=""
for ((i = 0; i < DEADLINE_S * 10; i++)); do
    seen="$("$VENV/crdtkv" get --node "$SYDNEY" --secret-file "$WORK/secret" smoke:views 2>/dev/null || true)"
    [ "$seen" = 3 ] && break
    sleep 0.1
done
[ "$seen" = 3 ] || fail "sydney did not show smoke:views = 3 within ${DEADLINE_S} s (last: '$seen')"
say "incr at london (3) read at sydney: $seen"

# 5. The faces, from the installed wheel: RESP at london, HTTP (and its status page) at sydney.
RESP_PORT="$(sed -n 's/^resp on redis:\/\/[^ ]*:\([0-9]*\)$/\1/p' "$WORK/london.log")"
HTTP_URL="$(sed -n 's/^http on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/sydney.log")"
[ -n "$RESP_PORT" ] && [ -n "$HTTP_URL" ] || fail "no face address printed: $(cat "$WORK/london.log" "$WORK/sydney.log")"
SECRET="$(cat "$WORK/secret")"
[ "$(redis-cli -p "$RESP_PORT" --no-auth-warning -a "$SECRET" GET smoke:views)" = 3 ] ||
    fail "redis-cli GET at london did not answer 3"
[ "$(redis-cli -p "$RESP_PORT" --no-auth-warning -a "$SECRET" SET smoke:flag on)" = OK ] ||
    fail "redis-cli SET at london did not answer OK"
[ "$(curl -sf -H "Authorization: Bearer $SECRET" "$HTTP_URL/v1/kv/smoke:views")" = 3 ] ||
    fail "curl GET /v1/kv/smoke:views at sydney did not answer 3"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP_URL/v1/kv/smoke:views")" = 401 ] ||
    fail "curl without the secret was not refused with 401"
curl -sf "$HTTP_URL/" | grep -qi '<html' || fail "the status page is missing from the wheel"
curl -sf "$HTTP_URL/metrics" | grep -q '^crdtkv_info' || fail "/metrics has no crdtkv_info"
seen=""
for ((i = 0; i < DEADLINE_S * 10; i++)); do
    seen="$(curl -s -H "Authorization: Bearer $SECRET" "$HTTP_URL/v1/kv/smoke:flag" || true)"
    [ "$seen" = on ] && break
    sleep 0.1
done
[ "$seen" = on ] || fail "SET over RESP at london did not show over HTTP at sydney (last: '$seen')"
say "RESP at london and HTTP at sydney (status page, metrics, 401 without the secret): OK"

for pid in "$LONDON_PID" "$SYDNEY_PID"; do
    kill -TERM "$pid"
done
for name in london sydney; do
    pid="$LONDON_PID"
    [ "$name" = sydney ] && pid="$SYDNEY_PID"
    status=0
    wait "$pid" || status=$?
    [ "$status" = 0 ] || fail "$name exited $status on SIGTERM: $(cat "$WORK/$name.log")"
    grep -q '^stopped; digest ' "$WORK/$name.log" || fail "$name did not report stopping: $(cat "$WORK/$name.log")"
done
PIDS=()
say "both nodes stopped on SIGTERM with exit 0"
say "OK"
