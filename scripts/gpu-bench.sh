#!/usr/bin/env bash
# The worker's GPU bench, for a machine with an NVIDIA GPU (it also runs, and says so, without):
#  1. builds the worker in release;
#  2. where `nvidia-smi -L` lists a GPU, runs the CUDA backend tests and the sample specs, which
#     `cargo test` ignores by default, with --include-ignored (else it says they are not run);
#  3. runs the bench (worker/examples/gpu_bench.rs): a CPU section, then GEMM TFLOP/s through a
#     job vs cuBLAS directly, kernel-job latency cached vs uncached, and the metering error.
# Arguments go to the bench (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p aitbc-worker --bins --examples
if nvidia-smi -L >/dev/null 2>&1; then
    cargo test --release --locked -p aitbc-worker --test cuda_backend --test samples -- --include-ignored --nocapture --test-threads=1
else
    echo "gpu-bench.sh: no GPU (nvidia-smi lists none): the CUDA tests are not run" >&2
fi
cargo run --release --locked -p aitbc-worker --example gpu_bench -- "$@"
