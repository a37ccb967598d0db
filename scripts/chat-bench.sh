#!/usr/bin/env bash
# The streamed chat's cost over the engine, in one run (issue: the platform adds <= 20 ms to the
# time to first token on the embedded default). Release builds; `aitbc up` serving the default
# model; the same chat (greedy, same messages, same max tokens) streamed through the
# OpenAI-compatible API with the official `openai` package, then run by the engine alone in its
# own process with `aitbc up` stopped. Prints a table: time to first token and time per token
# after it, median of RUNS, for each path and the difference.
# Usage: scripts/chat-bench.sh [RUNS] [MAX_TOKENS]   (needs .venv with openai: scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-9}
max_tokens=${2:-64}
py="$root/.venv/bin/python"
system="Answer concisely."
question="Tell me about the history of Paris."

eval "$(bash scripts/setup-inference.sh --venv "$root/.venv")"
model=$AITBC_TEST_MODEL
"$py" -c 'import openai' 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check "openai==3.51.0"
cargo build --release --locked -p aitbc
cargo build --release --locked -p aitbc-inference --example ttft
bin="${CARGO_TARGET_DIR:-$root/target}/release/aitbc"
ttft="${CARGO_TARGET_DIR:-$root/target}/release/examples/ttft"

# shellcheck source=lib/model-market.sh
source "$root/scripts/lib/model-market.sh"
open_model_market_work
start_model_market
platform=$("$py" scripts/bench/chat_stream.py "$api" "$system" "$question" "$max_tokens" "$runs")
stop_model_market
engine=$("$ttft" "$model" "$system" "$question" "$max_tokens" "$runs")

"$py" - "$engine" "$platform" "$runs" <<'PY'
import json, sys
engine, platform, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"chat streamed: smollm2:135m, {engine['completion_tokens']} tokens, median of {runs} runs")
print("| path                          | time to first token (ms) | per token after it (ms) |")
print("|-------------------------------|-------------------------:|------------------------:|")
print(f"| engine alone                  | {engine['ttft_ms']:24.2f} | {engine['per_token_ms']:23.3f} |")
print(f"| aitbc up, OpenAI API, stream  | {platform['ttft_ms']:24.2f} | {platform['per_token_ms']:23.3f} |")
print(f"| added by the platform         | {platform['ttft_ms'] - engine['ttft_ms']:24.2f} | {platform['per_token_ms'] - engine['per_token_ms']:23.3f} |")
PY
