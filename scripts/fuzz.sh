#!/usr/bin/env bash
# The API fuzz run of the test command: schemathesis (PyPI) against `aitbc up`, with every check
# and every phase (examples, coverage, fuzzing, and stateful through the document's links), as
# three callers: anonymous, a funded client, and a provider with a listing. A fixed seed and
# bounded examples keep it to a few minutes and make a failure reproducible.
#
# It fails on any 5xx, any dropped connection, any response that breaks the document, any
# schema-violating request accepted, and any panic in the server's log.
#
# Usage: scripts/fuzz.sh [--bin PATH]   (the aitbc binary; default: target/debug/aitbc, built)
# Needs: .venv with schemathesis (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bin="$root/target/debug/aitbc"
if [ "${1:-}" = "--bin" ]; then
    bin="$2"
fi
if [ "${1:-}" != "--bin" ]; then
    cargo build --locked -p aitbc
fi
st="$root/.venv/bin/st"
py="$root/.venv/bin/python"
[ -x "$st" ] || { echo "fuzz.sh: $st is missing; run scripts/test.sh, which installs schemathesis" >&2; exit 1; }

# Bounds: test cases per operation and phase, and the wall time of each caller's run.
examples_max=${AITBC_FUZZ_EXAMPLES:-25}
run_s_max=${AITBC_FUZZ_RUN_S:-240}
seed=${AITBC_FUZZ_SEED:-20261203}

work=$(mktemp -d)
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
server_log="$root/target/fuzz/server.log"
mkdir -p "$root/target/fuzz"
AITBC_MODELS=none AITBC_HOME="$work/operator" "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$port" >"$server_log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 1 100); do  # at most 100 x 0.1 s for the server to answer
    if "$py" -c "import urllib.request; urllib.request.urlopen('$api/v1/rate-card', timeout=1)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

# A funded client, through the API (local signup and faucet are open).
client=$("$py" - "$api" <<'EOF'
import json, sys, urllib.request
api = sys.argv[1]
def call(path, body, key=None):
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    return json.load(urllib.request.urlopen(req, timeout=10))
opened = call("/v1/accounts", {"role": "client"})
call(f"/v1/accounts/{opened['address']}/deposits", {"amount": "1000"}, opened["api_key"])
print(opened["api_key"])
EOF
)
# A provider with a signing key and a listing, through the CLI as the guide has it.
export AITBC_HOME="$work/provider" AITBC_API="$api"
"$bin" init >/dev/null
"$bin" marketplace gpu register --name "Fuzz-GPU" --memory 24 --cuda-version 12.1 --base-price 0.05 --region us-west >/dev/null
provider=$("$py" -c "import tomllib; print(tomllib.load(open('$work/provider/config.toml','rb'))['api_key'])")
unset AITBC_HOME AITBC_API

failed=0
for role in anonymous client provider; do
    case $role in
        anonymous) auth=() ;;
        client) auth=(-H "Authorization: Bearer $client") ;;
        provider) auth=(-H "Authorization: Bearer $provider") ;;
    esac
    echo "fuzz.sh: schemathesis as $role (seed $seed, at most $examples_max examples per operation)"
    if ! timeout "$run_s_max" "$st" --config-file "$root/tests/fuzz/schemathesis.toml" run "$api/v1/openapi.json" \
        "${auth[@]}" --checks all --phases examples,coverage,fuzzing,stateful --seed "$seed" \
        --max-examples "$examples_max" --workers 1 --request-timeout 10 --no-color \
        --report junit --report-junit-path "$root/target/fuzz/$role.xml" >"$root/target/fuzz/$role.log" 2>&1; then
        echo "fuzz.sh: $role: FAILED (target/fuzz/$role.log)"
        sed -n '/=== FAILURES ===/,/=== SUMMARY ===/p' "$root/target/fuzz/$role.log" | head -150 || true
        tail -25 "$root/target/fuzz/$role.log" || true
        failed=1
    else
        grep -E "^Test cases:" -A1 "$root/target/fuzz/$role.log" | tail -1 | sed "s/^ */fuzz.sh: $role: /"
    fi
done

if grep -n "panicked" "$server_log"; then
    echo "fuzz.sh: the server panicked (target/fuzz/server.log)"
    failed=1
fi
if [ "$failed" = 0 ]; then
    echo "fuzz.sh: 3 passed, 0 failed"
else
    echo "fuzz.sh: failures above"
fi
exit "$failed"
