//! Helpers shared by the worker's integration tests: the CUDA backend for GPU tests and naive references.
#![allow(dead_code)]

use aitbc_core::jobspec::{generate_f32, Dtype};
use aitbc_worker::{probe_cuda, CudaAvailability, CudaBackend};
use aitbc_core::config::MarketConfig;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_functions::{serve, AppState};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_store::Queue;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the GPU tests are ignored by default: cargo then reports them as ignored (never as
/// passed) where there is no GPU, CI included.
pub const NEEDS_GPU: &str = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored";

/// The CUDA backend on GPU 0, for the tests marked `#[ignore]` with NEEDS_GPU. They run only
/// when asked for, so a missing driver, NVRTC, cuBLAS or device fails the test rather than
/// letting it pass without a GPU.
pub fn cuda_backend() -> CudaBackend {
    match probe_cuda() {
        CudaAvailability::Unavailable { reason } => panic!("no CUDA driver/device: {reason}"),
        CudaAvailability::Available { .. } => CudaBackend::new(0).unwrap_or_else(|e| panic!("CUDA is present but the backend failed to start: {e}")),
    }
}

/// `value` rounded to `dtype` and back, as a GEMM of that dtype multiplies it.
pub fn rounded(dtype: Dtype, value: f32) -> f32 {
    match dtype {
        Dtype::F32 => value,
        Dtype::F16 => half::f16::from_f32(value).to_f32(),
        Dtype::Bf16 => half::bf16::from_f32(value).to_f32(),
    }
}

/// Elements `0..len` of stream `stream` from `seed`, rounded to `dtype`.
pub fn generated(seed: u64, stream: u64, len: usize, dtype: Dtype) -> Vec<f32> {
    (0..len as u64).map(|i| rounded(dtype, generate_f32(seed, stream, i))).collect()
}

/// The naive i-j-k GEMM with f32 accumulation in ascending k, multiply then add.
pub fn naive_gemm(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f32;
            for p in 0..k {
                sum += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = sum;
        }
    }
    c
}

/// `sum_k |a_ik| |b_kj|` for each element: what floating-point error in a dot product scales
/// with.
pub fn abs_gemm(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let a: Vec<f32> = a.iter().map(|v| v.abs()).collect();
    let b: Vec<f32> = b.iter().map(|v| v.abs()).collect();
    naive_gemm(&a, &b, m, n, k)
}

/// Asserts `got` is within the worst-case error of two f32 dot products of length `k` of
/// `want` (each within k * 2^-24 * sum |a||b| of the exact value; EPSILON is 2^-23).
pub fn assert_gemm_close(got: &[f32], want: &[f32], bound: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((g, w), b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tolerance = 2.0 * k as f32 * f32::EPSILON * b + f32::MIN_POSITIVE;
        assert!((g - w).abs() <= tolerance, "{what}: element {i}: got {g}, want {w}, tolerance {tolerance}");
    }
}

/// The real API on the embedded store, on a loopback port.
pub struct Market_ {
    pub api: String,
    pub db: PathBuf,
    pub queue: Arc<dyn Queue>,
    pub _dir: tempfile::TempDir,
}

pub async fn marketplace() -> Market_ {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aitbc.db");
    let (store, queue) = aitbc_store::provision::sqlite(&db, &[], aitbc_store::queue_spec()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32]);
    let market = Market::new(Arc::new(store), queue.clone(), MarketConfig::default(), Settings::default(), key, Arc::new(SystemClock));
    market.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { serve(listener, AppState { market }, std::future::pending()).await.unwrap() });
    Market_ { api, db, queue, _dir: dir }
}
