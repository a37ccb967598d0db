#!/usr/bin/env bash
# The OpenAI-compatible API's tests, with the official `openai` package from PyPI, unmodified:
#  1. `openai` and `pytest` (pinned) into .venv;
#  2. `aitbc up` on a free loopback port with a temporary home whose worker loads the default
#     model (the file scripts/setup-inference.sh fetched, linked in: `aitbc up` checks its sha256);
#  3. a provider listing served by that worker, through the CLI as the guide has it;
#  4. pytest tests/openai against it. Everything started stops on exit.
# Usage: AITBC_BIN=PATH AITBC_TEST_MODEL=PATH scripts/openai-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
py="$venv/bin/python"
openai_version=3.51.0
pytest_version=9.2.0

"$py" -c "import openai, pytest; assert openai.__version__ == '$openai_version'" 2>/dev/null \
    || "$py" -m pip install --quiet --disable-pip-version-check "openai==$openai_version" "pytest==$pytest_version"

bin=${AITBC_BIN:-"${CARGO_TARGET_DIR:-$root/target}/debug/aitbc"}
model=${AITBC_TEST_MODEL:?the default model file (scripts/setup-inference.sh prints AITBC_TEST_MODEL)}

work=$(mktemp -d)
up_pid=
cleanup() {
    if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
provider_home="$work/provider"
mkdir -p "$provider_home/models"
ln -s "$model" "$provider_home/models/$(basename "$model")"

# Receipts settle at once (no grace), so the tests can check the balance after settlement.
AITBC_HOME="$provider_home" AITBC_SETTLE_GRACE_S=0 AITBC_SETTLE_INTERVAL_S=1 \
    "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do  # at most 600 x 0.1 s: the model loads before the API answers
    if curl -fsS "$api/v1/rate-card" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$up_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
curl -fsS "$api/v1/rate-card" >/dev/null || { cat "$work/up.log" >&2; echo "openai-test: aitbc up did not start" >&2; exit 1; }

export AITBC_API="$api"
AITBC_HOME="$provider_home" "$bin" init >/dev/null
AITBC_HOME="$provider_home" "$bin" marketplace gpu register --name "OpenAI-Test-GPU" --memory 24 --cuda-version 12.1 --base-price 0.05 --region us-west >/dev/null

status=0
AITBC_API="$api" "$py" -m pytest -q -p no:cacheprovider "$root/tests/openai" || status=$?
if [ "$status" != 0 ]; then
    tail -40 "$work/up.log" >&2
fi
exit "$status"
