# Sourced by scripts that need `aitbc up` serving the default model: starts it in $work with a
# provider home whose worker loads $model (linked in; `aitbc up` checks its sha256), registers a
# listing through the CLI as the guide has it, and waits until GET /v1/models lists the model.
# Needs: bin, py, model, and $work from open_model_market_work. Sets: api, up_pid, provider_home.
# shellcheck shell=bash

# A temporary directory in $work; on exit the `aitbc up` started here stops and $work goes.
open_model_market_work() {
    work=$(mktemp -d)
    up_pid=
    trap 'stop_model_market; rm -rf "$work"' EXIT
}

stop_model_market() {
    if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
    up_pid=
}

start_model_market() {
    local port
    port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    api="http://127.0.0.1:$port"
    provider_home="$work/provider"
    mkdir -p "$provider_home/models"
    ln -sf "$model" "$provider_home/models/$(basename "$model")"
    # Receipts settle at once (no grace), so callers can check balances after settlement.
    AITBC_HOME="$provider_home" AITBC_SETTLE_GRACE_S=0 AITBC_SETTLE_INTERVAL_S=1 \
        "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/up.log" 2>&1 &
    up_pid=$!
    local _
    for _ in $(seq 1 600); do  # at most 600 x 0.1 s: the model loads before the API answers
        if curl -fsS "$api/v1/rate-card" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$up_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    curl -fsS "$api/v1/rate-card" >/dev/null || { cat "$work/up.log" >&2; echo "aitbc up did not start" >&2; return 1; }
    AITBC_HOME="$provider_home" AITBC_API="$api" "$bin" init >/dev/null
    AITBC_HOME="$provider_home" AITBC_API="$api" "$bin" marketplace gpu register --name "Model-GPU" --memory 24 \
        --cuda-version 12.1 --base-price 0.05 --region us-west >/dev/null
    for _ in $(seq 1 240); do  # at most 240 x 0.25 s for the worker to bring the listing online
        if curl -fsS "$api/v1/explorer/gpus" | "$py" -c 'import json,sys; sys.exit(0 if any(g["online"] for g in json.load(sys.stdin)) else 1)'; then
            return 0
        fi
        sleep 0.25
    done
    tail -20 "$work/up.log" >&2
    echo "the listing did not come online" >&2
    return 1
}
