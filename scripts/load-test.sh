#!/usr/bin/env bash
# Load test of the local API on loopback: requests/s and p50/p99 latency for quotes, listing
# queries and job submissions, each for DURATION seconds with wrk (installed from Debian's
# packages if missing). Starts `aitbc up` (release build) on a free port in a temporary
# directory, without a worker, so the API alone is measured; stops it afterwards. The anchor,
# measured in the same run with the same wrk settings: a bare axum endpoint on the same
# runtime and HTTP stack (functions/examples/bare_http.rs), which does nothing but answer.
# Each endpoint runs RUNS times, interleaved; the table gives every run and the median.
#   bash scripts/load-test.sh [DURATION_S] [CONNECTIONS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s=${1:-10}
connections=${2:-64}
runs=${3:-1}
threads=2
if [ "$duration_s" -gt 120 ]; then echo "load-test.sh: at most 120 s per endpoint" >&2; exit 2; fi
if [ "$runs" -lt 1 ] || [ "$runs" -gt 5 ]; then echo "load-test.sh: 1 to 5 runs" >&2; exit 2; fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

cargo build --release -q -p aitbc
cargo build --release -q -p aitbc-functions --example bare_http
aitbc=$(pwd)/target/release/aitbc
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AITBC_API="http://127.0.0.1:$port"
# One client key sends every submission: lift its rate limit above what the test can reach.
AITBC_RATE_LIMIT_PER_S=1000000 AITBC_HOME="$work/operator" "$aitbc" up --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/up.log" 2>&1 &
up_pid=$!
bare_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/examples/bare_http "127.0.0.1:$bare_port" >"$work/bare.log" 2>&1 &
bare_pid=$!
trap 'kill $bare_pid 2>/dev/null || true; kill -INT $up_pid 2>/dev/null || true; wait $up_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "$AITBC_API/v1/rate-card" >/dev/null 2>&1 && break; sleep 0.1; done

# A provider with a listing that is online, a client with funds.
AITBC_HOME="$work/provider" "$aitbc" init >/dev/null
provider_key=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["api_key"])' "$work/provider/config.toml")
# A listing online with the largest queue: no worker drains it, so each submission run gets a
# listing of its own (a full queue would answer 503 and measure the refusal instead).
new_listing() {
    local gpu
    gpu=$(AITBC_HOME="$work/provider" "$aitbc" --json marketplace gpu register --name Load-GPU --memory 80 --cuda-version 12.4 --base-price 0.05 --region us-west --count 64 | python3 -c 'import json,sys; print(json.load(sys.stdin)["gpu_id"])')
    AITBC_HOME="$work/provider" "$aitbc" marketplace gpu queue --gpu-id "$gpu" --max-queue-size 100000 >/dev/null
    curl -fs -X POST "$AITBC_API/v1/listings/$gpu/heartbeat" -H "Authorization: Bearer $provider_key" -H 'Content-Type: application/json' -d '{"worker_id":"wrk-load"}' >/dev/null
    echo "$gpu"
}
gpu=$(new_listing)
AITBC_HOME="$work/client" "$aitbc" init --role client >/dev/null
AITBC_HOME="$work/client" "$aitbc" wallet deposit 100000000 >/dev/null
export AITBC_KEY=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["api_key"])' "$work/client/config.toml")
export AITBC_GPU=$gpu

run() {  # name url [script] -> one line of results in $work/results
    local name=$1 url=$2 script=${3:-} out
    if [ -n "$script" ]; then
        out=$(wrk -t"$threads" -c"$connections" -d"${duration_s}s" --latency -s "scripts/load/$script" "$url" 2>&1)
    else
        out=$(wrk -t"$threads" -c"$connections" -d"${duration_s}s" --latency "$url" 2>&1)
    fi
    printf '%s' "$out" | python3 -c '
import re, sys
out, name = sys.stdin.read(), sys.argv[1]
def latency(label):
    m = re.search(r"^\s*" + label + r"%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m: return "nan"
    v, unit = float(m.group(1)), m.group(2)
    return "%.3f" % (v / 1000 if unit == "us" else v * 1000 if unit == "s" else v)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print("\t".join([name, rps.group(1) if rps else "nan", latency("50"), latency("99"), errors.group(1) if errors else "0"]))
' "$name" >>"$work/results"
}

echo "aitbc load test: ${duration_s}s per endpoint, $connections connections, $threads wrk threads, $runs run(s), loopback, release build"
for _ in $(seq 1 "$runs"); do
    run "anchor: bare axum" "http://127.0.0.1:$bare_port/"
    run "POST /v1/quotes" "$AITBC_API" quote.lua
    run "GET /v1/listings" "$AITBC_API" listings.lua
    AITBC_GPU=$(new_listing) run "POST /v1/jobs" "$AITBC_API" submit.lua
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
names = list(dict.fromkeys(r[0] for r in rows))
print("| endpoint           | run    | requests/s |  p50 ms  |  p99 ms  | non-2xx |")
print("|--------------------|--------|------------|----------|----------|---------|")
for name in names:
    mine = [r for r in rows if r[0] == name]
    for i, r in enumerate(mine, 1):
        print("| %-18s | %-6s | %10.0f | %8.2f | %8.2f | %7s |" % (name, i, float(r[1]), float(r[2]), float(r[3]), r[4]))
    if len(mine) > 1:
        med = lambda k: statistics.median(float(r[k]) for r in mine)
        print("| %-18s | median | %10.0f | %8.2f | %8.2f | %7s |" % (name, med(1), med(2), med(3), "-"))
PY
