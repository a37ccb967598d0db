#!/usr/bin/env bash
# The Python SDK's tests (sdk/python): a virtual environment in .venv-sdk (created once, reused),
# the SDK installed from ./sdk/python with its test extras (pytest, pytest-asyncio, jsonschema),
# then pytest, which starts `aitbc up` itself. The binary is $AITBC_BIN, else target/debug/aitbc
# (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv-sdk"

if [ -z "${AITBC_BIN:-}" ]; then
    AITBC_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/aitbc"
    [ -x "$AITBC_BIN" ] || cargo build -p aitbc --quiet
fi
export AITBC_BIN

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Reinstalled every run (a few seconds): the SDK's sources or its dependencies may have changed.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root/sdk/python[test]"
cd "$root/sdk/python"
"$venv/bin/python" -m pytest -q "$@"
