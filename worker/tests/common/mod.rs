//! Helpers shared by the worker's integration tests: the CUDA skip rule and naive references.
#![allow(dead_code)]

use aitbc_core::jobspec::{generate_f32, Dtype};
use aitbc_worker::{probe_cuda, CudaAvailability, CudaBackend};

/// The CUDA backend on GPU 0, or `None` after printing why the test is skipped: under
/// `CI=true` (CI has no GPU), or where the driver, NVRTC, cuBLAS or a device is missing. A
/// machine that has them all but fails to start the backend fails the test.
pub fn cuda_backend_or_skip() -> Option<CudaBackend> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        eprintln!("skipped: no CUDA driver/device: CI=true (CI has no GPU)");
        return None;
    }
    match probe_cuda() {
        CudaAvailability::Unavailable { reason } => {
            eprintln!("skipped: no CUDA driver/device: {reason}");
            None
        }
        CudaAvailability::Available { .. } => {
            Some(CudaBackend::new(0).unwrap_or_else(|e| panic!("CUDA is present but the backend failed to start: {e}")))
        }
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
