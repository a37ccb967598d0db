#!/usr/bin/env bash
# Load test of the local API on loopback: requests/s and p50/p99 latency for quotes, listing
# queries and job submissions, each for DURATION seconds with wrk (installed from Debian's
# packages if missing). Starts `aitbc up` (release build) on a free port in a temporary
# directory, without a worker, so the API alone is measured; stops it afterwards.
#   bash scripts/load-test.sh [DURATION_S] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s=${1:-10}
connections=${2:-64}
threads=2
if [ "$duration_s" -gt 120 ]; then echo "load-test.sh: at most 120 s per endpoint" >&2; exit 2; fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

cargo build --release -q -p aitbc
aitbc=$(pwd)/target/release/aitbc
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AITBC_API="http://127.0.0.1:$port"
# One client key sends every submission: lift its rate limit above what the test can reach.
AITBC_RATE_LIMIT_PER_S=1000000 AITBC_HOME="$work/operator" "$aitbc" up --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/up.log" 2>&1 &
up_pid=$!
trap 'kill -INT $up_pid 2>/dev/null || true; wait $up_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "$AITBC_API/v1/rate-card" >/dev/null 2>&1 && break; sleep 0.1; done

# A provider with a listing that is online, a client with funds.
AITBC_HOME="$work/provider" "$aitbc" init >/dev/null
gpu=$(AITBC_HOME="$work/provider" "$aitbc" --json marketplace gpu register --name Load-GPU --memory 80 --cuda-version 12.4 --base-price 0.05 --region us-west --count 64 | python3 -c 'import json,sys; print(json.load(sys.stdin)["gpu_id"])')
provider_key=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["api_key"])' "$work/provider/config.toml")
curl -fs -X POST "$AITBC_API/v1/listings/$gpu/heartbeat" -H "Authorization: Bearer $provider_key" -H 'Content-Type: application/json' -d '{"worker_id":"wrk-load"}' >/dev/null
AITBC_HOME="$work/client" "$aitbc" init --role client >/dev/null
AITBC_HOME="$work/client" "$aitbc" wallet deposit 100000000 >/dev/null
export AITBC_KEY=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["api_key"])' "$work/client/config.toml")
export AITBC_GPU=$gpu

run() {  # name script -> one table row
    local name=$1 script=$2 out
    out=$(wrk -t"$threads" -c"$connections" -d"${duration_s}s" --latency -s "scripts/load/$script" "$AITBC_API" 2>&1)
    python3 - "$name" <<PY
import re, sys
out = """$out"""
def latency(label):
    m = re.search(r"^\s*" + label + r"%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m: return "?"
    v, unit = float(m.group(1)), m.group(2)
    return "%.2f" % (v / 1000 if unit == "us" else v * 1000 if unit == "s" else v)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print("| %-18s | %10s | %8s | %8s | %6s |" % (sys.argv[1], rps.group(1) if rps else "?", latency("50"), latency("99"), errors.group(1) if errors else "0"))
PY
}

echo "aitbc load test: ${duration_s}s per endpoint, $connections connections, $threads wrk threads, loopback, release build"
echo "| endpoint           | requests/s |  p50 ms  |  p99 ms  | non-2xx |"
echo "|--------------------|------------|----------|----------|---------|"
run "POST /v1/quotes" quote.lua
run "GET /v1/listings" listings.lua
run "POST /v1/jobs" submit.lua
