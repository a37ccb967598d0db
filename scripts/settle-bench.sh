#!/usr/bin/env bash
# The settlement bench: builds the scheduler in release mode and settles N generated receipts
# on a fresh embedded (SQLite) store, printing elapsed time, the loading phase's items/s (what
# completion writes: 5 items per receipt; whole load and its last tenth, the rate at the final
# table size), settlement receipts/s and peak memory. `cargo bench -p aitbc-store` prints the
# same items' write rate beside a plain rusqlite insert loop (its anchor).
#   scripts/settle-bench.sh [RECEIPTS] [CLIENTS] [PROVIDERS]      (default 1000000 1000 100)
# It also counts the items settlement writes per 1,000 receipts in the same mix (100,000
# receipts): two per account a batch touches and a few per batch, nothing per receipt. With
# AITBC_TEST_AWS_ENDPOINT set (a moto_server, as scripts/test.sh starts one), it settles 300
# receipts on DynamoDB and counts the writes there too (moto_server copies its whole state for
# every transaction, so larger runs take too long there).
set -euo pipefail
cd "$(dirname "$0")/.."
receipts=${1:-1000000}
clients=${2:-1000}
providers=${3:-100}
cargo build --release --locked -p aitbc-scheduler
./target/release/aitbc-scheduler --json bench --receipts "$receipts" --clients "$clients" --providers "$providers"
./target/release/aitbc-scheduler --json bench --receipts 100000 --clients "$clients" --providers "$providers" --count-writes
if [ -n "${AITBC_TEST_AWS_ENDPOINT:-}" ]; then
    AWS_ENDPOINT_URL="$AITBC_TEST_AWS_ENDPOINT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
        ./target/release/aitbc-scheduler --json --backend aws bench --receipts 300 --clients 30 --providers 3 --count-writes
fi
