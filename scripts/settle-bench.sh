#!/usr/bin/env bash
# The settlement bench: builds the scheduler in release mode and settles N generated receipts
# on a fresh embedded (SQLite) store, printing elapsed time, receipts/s and peak memory.
#   scripts/settle-bench.sh [RECEIPTS] [CLIENTS] [PROVIDERS]      (default 1000000 1000 100)
# With AITBC_TEST_AWS_ENDPOINT set (a moto_server, as scripts/test.sh starts one), it also
# settles receipts on DynamoDB and counts the items written per 1,000 receipts: 1,000 receipts
# (10 per client: the two writes per account and batch weigh most) and 10,000 (100 per client).
set -euo pipefail
cd "$(dirname "$0")/.."
receipts=${1:-1000000}
clients=${2:-1000}
providers=${3:-100}
cargo build --release --locked -p aitbc-scheduler
./target/release/aitbc-scheduler --json bench --receipts "$receipts" --clients "$clients" --providers "$providers"
if [ -n "${AITBC_TEST_AWS_ENDPOINT:-}" ]; then
    AWS_ENDPOINT_URL="$AITBC_TEST_AWS_ENDPOINT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
        ./target/release/aitbc-scheduler --json --backend aws bench --receipts 1000 --clients 100 --providers 10 --count-writes
    AWS_ENDPOINT_URL="$AITBC_TEST_AWS_ENDPOINT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
        ./target/release/aitbc-scheduler --json --backend aws bench --receipts 10000 --clients 100 --providers 10 --count-writes
fi
