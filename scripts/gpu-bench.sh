#!/usr/bin/env bash
# The worker's GPU bench, for a machine with an NVIDIA GPU (it also runs, and says so, without):
#  1. builds the worker in release;
#  2. runs the CUDA backend tests and the sample specs with --nocapture, so each test's
#     "skipped: no CUDA driver/device: <reason>" (or its output) is visible;
#  3. runs the bench (worker/examples/gpu_bench.rs): a CPU section, then GEMM TFLOP/s through a
#     job vs cuBLAS directly, kernel-job latency cached vs uncached, and the metering error.
# Arguments go to the bench (e.g. --quick). CI=true makes the CUDA tests skip: CI has no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p aitbc-worker --bins --examples
cargo test --release --locked -p aitbc-worker --test cuda_backend --test samples -- --nocapture --test-threads=1
cargo run --release --locked -p aitbc-worker --example gpu_bench -- "$@"
