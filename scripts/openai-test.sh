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

# shellcheck source=lib/model-market.sh
source "$root/scripts/lib/model-market.sh"
open_model_market_work
start_model_market
export AITBC_API="$api"

status=0
AITBC_API="$api" "$py" -m pytest -q -p no:cacheprovider "$root/tests/openai" || status=$?

# `aitbc chat` streams the same answer into the terminal, and refuses bad input in one line.
client_home="$work/client"
mkdir -p "$client_home"
client() { AITBC_HOME="$client_home" "$bin" "$@"; }
client init --role client >/dev/null
client wallet deposit 10 >/dev/null
answer=$(client chat --system "Answer concisely." --max-tokens 16 "What is the capital of France?" 2>"$work/chat.err") || status=1
case "$answer" in
    *Paris*) echo "openai-test: aitbc chat answered: $answer ($(cat "$work/chat.err"))" ;;
    *) echo "openai-test: aitbc chat did not answer Paris: '$answer' $(cat "$work/chat.err")" >&2; status=1 ;;
esac
if client chat --model no-such-model "Hello?" >/dev/null 2>"$work/chat.err"; then
    echo "openai-test: aitbc chat with an unknown model exited 0" >&2; status=1
elif [ "$(wc -l <"$work/chat.err")" != 1 ]; then
    echo "openai-test: aitbc chat's refusal is not one line: $(cat "$work/chat.err")" >&2; status=1
fi
if client chat "  " >/dev/null 2>&1; then
    echo "openai-test: aitbc chat with an empty question exited 0" >&2; status=1
fi

if [ "$status" != 0 ]; then
    tail -40 "$work/up.log" >&2
fi
exit "$status"
