#!/usr/bin/env bash
# The explorer's browser tests, on a fresh Debian machine, idempotently (fast when rerun):
#  1. Debian's chromium (apt) if /usr/bin/chromium is missing; playwright-core, pinned in
#     explorer/tests/package-lock.json, with `npm ci` (cache in .cache/npm); no browser download;
#  2. the CLI (`cargo build -p aitbc`, or $AITBC_BIN), `aitbc up` on a free loopback port with
#     a temporary home and data directory;
#  3. a real workload through the CLI: a provider with two listings in two regions, two funded
#     clients, JOBS (+4) vector_add jobs run and receipted by the local worker, then settled;
#  4. `node --test explorer/tests/*.test.mjs` against it. Everything started stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
JOBS=${EXPLORER_TEST_JOBS:-30}

if [ ! -x /usr/bin/chromium ]; then
    echo "explorer-test: installing Debian's chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

tests="$root/explorer/tests"
if [ ! -f "$tests/node_modules/playwright-core/package.json" ] \
    || [ "$tests/package-lock.json" -nt "$tests/node_modules/.package-lock.json" ]; then
    echo "explorer-test: npm ci (playwright-core)"
    (cd "$tests" && npm ci --no-audit --no-fund --cache "$root/.cache/npm")
fi

if [ -n "${AITBC_BIN:-}" ]; then
    bin=$AITBC_BIN
else
    cargo build -p aitbc --quiet
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/aitbc"
fi

work=$(mktemp -d)
up_pid=
cleanup() {
    if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
export AITBC_API="$api"
provider_home="$work/provider" client_home="$work/client"
mkdir -p "$provider_home" "$client_home"

# `aitbc up` runs the worker of its home's provider; receipts settle at once (no grace).
AITBC_MODELS=none AITBC_HOME="$provider_home" AITBC_LISTEN="127.0.0.1:$port" AITBC_DATA_DIR="$work/data" \
    AITBC_SETTLE_GRACE_S=0 AITBC_SETTLE_INTERVAL_S=1 "$bin" up >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 100); do  # at most 100 x 0.1 s for the API to answer
    if curl -fsS "$api/v1/rate-card" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "$api/v1/rate-card" >/dev/null || { cat "$work/up.log" >&2; echo "explorer-test: aitbc up did not start" >&2; exit 1; }

provider() { AITBC_HOME="$provider_home" "$bin" "$@"; }
client() { AITBC_HOME="$client_home" "$bin" "$@"; }
provider init >/dev/null
provider marketplace gpu register --name "Test-GPU-West" --memory 24 --cuda-version 12.1 --base-price 0.05 --region us-west >/dev/null
provider marketplace gpu register --name "Test-GPU-EU" --memory 48 --cuda-version 12.1 --base-price 0.08 --region eu-west >/dev/null
# The local worker picks up new listings within seconds; jobs need them online.
for _ in $(seq 1 120); do  # at most 120 x 0.25 s
    online=$(curl -fsS "$api/v1/explorer/gpus" | python3 -c 'import json,sys; print(sum(1 for g in json.load(sys.stdin) if g["online"]))')
    [ "$online" = 2 ] && break
    sleep 0.25
done
[ "$online" = 2 ] || { tail -20 "$work/up.log" >&2; echo "explorer-test: the listings did not come online" >&2; exit 1; }
client init --role client >/dev/null
client wallet deposit 1000 >/dev/null
# A second client, so that filtering by address has something to leave out.
client2_home="$work/client2"
mkdir -p "$client2_home"
client2() { AITBC_HOME="$client2_home" "$bin" "$@"; }
client2 init --role client >/dev/null
client2 wallet deposit 100 >/dev/null
for _ in 1 2 3 4; do
    client2 job submit --spec samples/jobs/vector_add.json --model llama3.2 --units 2 --region us-west >/dev/null
done

echo "explorer-test: submitting $JOBS jobs"
for i in $(seq 1 "$JOBS"); do
    if [ $((i % 3)) = 0 ]; then region=eu-west; model=codellama; else region=us-west; model=llama3.2; fi
    client job submit --spec samples/jobs/vector_add.json --model "$model" --units 2 --region "$region" >/dev/null
done

# Every job completed with a receipt, and settled: batches cover records in completion order,
# so once the newest receipt's job is settled every one is.
want=$((JOBS + 4))
count_settled='
import json, sys, urllib.request
api = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(api + p, timeout=5))
n, cursor = 0, ""
while True:
    page = get("/v1/explorer/receipts?limit=100" + ("&cursor=" + cursor if cursor else ""))
    n += len(page["items"])
    if n == len(page["items"]) and page["items"]:
        newest = get("/v1/explorer/receipts/" + page["items"][0]["receipt_id"])
        settled = newest["job"]["state"] == "settled"
    cursor = page.get("next_cursor")
    if not cursor:
        break
print(n if n and settled else 0)
'
for _ in $(seq 1 240); do  # at most 240 x 0.5 s
    settled=$(python3 -c "$count_settled" "$api" 2>/dev/null || echo 0)
    [ "$settled" -ge "$want" ] && break
    sleep 0.5
done
echo "explorer-test: $settled of $want receipts, settled"
[ "$settled" -ge "$want" ] || { tail -20 "$work/up.log" >&2; exit 1; }

mkdir -p "$root/target/explorer-screenshots"
EXPLORER_URL="$api" EXPLORER_SCREENSHOTS="$root/target/explorer-screenshots" EXPLORER_JOBS="$JOBS" \
    node --test --test-concurrency=1 "$tests"/*.test.mjs && status=0 || status=$?
if [ -n "${EXPLORER_TEST_HOLD:-}" ]; then echo "explorer-test: holding $api"; sleep "$EXPLORER_TEST_HOLD"; fi
exit "$status"
