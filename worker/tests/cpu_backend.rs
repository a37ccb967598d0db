//! The CPU backend against naive references, its metering, its limits, and backend selection.

mod common;

use std::time::{Duration, Instant};

use aitbc_core::jobspec::{checksum_f32, generate_f32, Dtype, JobKind, JobSpec, MatrixInput, BufferInit, KernelArg, VECTOR_ELEMENTS_MAX};
use aitbc_worker::backend::{leading_values_count, thread_cpu_ns, VECTOR_ADD_VALUES_RETURNED_MAX};
use aitbc_worker::{auto_picks_cuda, probe_cuda, select, Backend, BackendChoice, CpuBackend, CudaAvailability, RunError, RunLimits, SelectError};
use common::{generated, naive_gemm};

fn gemm_spec(m: u32, n: u32, k: u32, dtype: Dtype, seed: u64, return_values: u32) -> JobSpec {
    JobSpec::Gemm { m, n, k, dtype, seed, a: MatrixInput::Seed, b: MatrixInput::Seed, return_values }
}

fn run(backend: &mut CpuBackend, spec: &JobSpec) -> aitbc_core::jobspec::JobOutput {
    backend.run(spec, &RunLimits::default()).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

#[test]
fn vector_add_matches_the_reference() {
    let mut cpu = CpuBackend::new();
    // One chunk, and enough elements for several threads.
    for n in [1u64, 1000, 3 * 65_536 + 5] {
        let out = run(&mut cpu, &JobSpec::VectorAdd { n, seed: 5 });
        let want: Vec<f32> = (0..n).map(|i| generate_f32(5, 0, i) + generate_f32(5, 1, i)).collect();
        assert_eq!(out.checksum, checksum_f32(&want), "n = {n}");
        let shown = (n as usize).min(VECTOR_ADD_VALUES_RETURNED_MAX);
        assert_eq!(out.values, want[..shown], "n = {n}");
        assert_eq!(out.backend, "cpu");
    }
}

#[test]
fn reduction_is_the_exact_sum_rounded_once() {
    let mut cpu = CpuBackend::new();
    for n in [1u64, 12_345, 200_001] {
        let out = run(&mut cpu, &JobSpec::Reduction { n, seed: 11 });
        let values: Vec<f32> = (0..n).map(|i| generate_f32(11, 0, i)).collect();
        let forward: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let backward: f64 = values.iter().rev().map(|&v| f64::from(v)).sum();
        // The f64 sum of generated values is exact, so the order cannot matter.
        assert_eq!(forward, backward);
        let want = forward as f32;
        assert_eq!(out.values, vec![want], "n = {n}");
        assert_eq!(out.checksum, checksum_f32(&[want]));
        // And a plain f32 sum lands near it.
        let naive: f32 = values.iter().sum();
        assert!((naive - want).abs() <= 1e-3 * (n as f32).sqrt().max(1.0), "n = {n}: {naive} vs {want}");
    }
}

#[test]
fn gemm_matches_the_naive_loop_exactly_for_every_dtype() {
    let mut cpu = CpuBackend::new();
    // Shapes crossing the 256-wide tiles in n and k, and big enough to split rows over threads.
    for (m, n, k) in [(1usize, 1usize, 1usize), (3, 5, 7), (37, 29, 41), (64, 300, 260)] {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let spec = gemm_spec(m as u32, n as u32, k as u32, dtype, 3, (m * n).min(10) as u32);
            let out = run(&mut cpu, &spec);
            let a = generated(3, 0, m * k, dtype);
            let b = generated(3, 1, k * n, dtype);
            let want = naive_gemm(&a, &b, m, n, k);
            assert_eq!(out.checksum, checksum_f32(&want), "{m}x{n}x{k} {dtype:?}");
            assert_eq!(out.values, want[..(m * n).min(10)], "{m}x{n}x{k} {dtype:?}");
        }
    }
}

#[test]
fn dtypes_round_their_inputs() {
    // 1 + 2^-10 is an f16 (10 mantissa bits) but not a bf16 (7), which rounds it to 1.
    let x = 1.0 + 1.0 / 1024.0;
    let mut cpu = CpuBackend::new();
    for (dtype, want) in [(Dtype::F32, x), (Dtype::F16, x), (Dtype::Bf16, 1.0)] {
        let spec = JobSpec::Gemm {
            m: 1,
            n: 1,
            k: 1,
            dtype,
            seed: 0,
            a: MatrixInput::Inline { values: vec![x] },
            b: MatrixInput::Inline { values: vec![1.0] },
            return_values: 1,
        };
        assert_eq!(run(&mut cpu, &spec).values, vec![want], "{dtype:?}");
    }
}

#[test]
fn gemm_takes_inline_inputs_row_major() {
    let spec = JobSpec::Gemm {
        m: 2,
        n: 2,
        k: 3,
        dtype: Dtype::F32,
        seed: 0,
        a: MatrixInput::Inline { values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] },
        b: MatrixInput::Inline { values: vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0] },
        return_values: 4,
    };
    let out = run(&mut CpuBackend::new(), &spec);
    assert_eq!(out.values, vec![58.0, 64.0, 139.0, 154.0]);
    assert_eq!(out.checksum, checksum_f32(&[58.0, 64.0, 139.0, 154.0]));
    // One inline operand and one generated.
    let mixed = JobSpec::Gemm {
        m: 1,
        n: 2,
        k: 2,
        dtype: Dtype::F32,
        seed: 9,
        a: MatrixInput::Inline { values: vec![1.0, 0.0] },
        b: MatrixInput::Seed,
        return_values: 2,
    };
    assert_eq!(run(&mut CpuBackend::new(), &mixed).values, vec![generate_f32(9, 1, 0), generate_f32(9, 1, 1)]);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let spec = gemm_spec(96, 300, 260, Dtype::Bf16, 21, 0);
    let one = run(&mut CpuBackend::with_threads(1), &spec);
    let four = run(&mut CpuBackend::with_threads(4), &spec);
    assert_eq!(one.checksum, four.checksum);
    for spec in [JobSpec::VectorAdd { n: 300_000, seed: 2 }, JobSpec::Reduction { n: 300_000, seed: 2 }] {
        assert_eq!(run(&mut CpuBackend::with_threads(1), &spec).checksum, run(&mut CpuBackend::with_threads(4), &spec).checksum);
    }
}

#[test]
fn checksums_are_stable() {
    // Golden values, computed independently (a few lines of Python: SplitMix64, f32 rounding,
    // FNV-1a) when this test was written. A change here changes every receipt's checksum for the same spec, which
    // clients compare across workers and backends.
    let mut cpu = CpuBackend::new();
    assert_eq!(run(&mut cpu, &JobSpec::VectorAdd { n: 16, seed: 1 }).checksum, "0d9f0dc71bb3a33a");
    assert_eq!(run(&mut cpu, &JobSpec::Reduction { n: 1000, seed: 7 }).checksum, "b0f9d7446526c7e1");
    assert_eq!(run(&mut cpu, &gemm_spec(4, 4, 4, Dtype::F32, 3, 0)).checksum, "165f08e567dd3c50");
    // And the same spec twice gives the same output.
    let spec = gemm_spec(8, 9, 10, Dtype::F16, 4, 5);
    let (first, second) = (run(&mut cpu, &spec), run(&mut cpu, &spec));
    assert_eq!((first.checksum, first.values), (second.checksum, second.values));
}

#[test]
fn metering_is_never_zero_and_bounded_by_wall_time() {
    let mut single = CpuBackend::with_threads(1);
    for spec in [JobSpec::VectorAdd { n: 10, seed: 1 }, JobSpec::Reduction { n: 50_000, seed: 1 }, gemm_spec(64, 64, 64, Dtype::F32, 1, 0)] {
        let out = run(&mut single, &spec);
        assert!(out.device_ms >= 1 && out.wall_ms >= 1, "{spec:?}: {out:?}");
        // One thread cannot use more CPU time than wall time (both rounded up).
        assert!(out.device_ms <= out.wall_ms, "{spec:?}: {out:?}");
    }
    let mut multi = CpuBackend::with_threads(4);
    let out = run(&mut multi, &gemm_spec(128, 300, 260, Dtype::F32, 1, 0));
    assert!(out.device_ms >= 1);
    assert!(out.device_ms <= out.wall_ms * 4 + 4, "{out:?}");
}

#[test]
fn metering_is_the_cpu_time_the_job_used() {
    // A single-threaded backend runs the job on this thread, so this thread's CPU clock read
    // around `run` brackets what the backend metered; the reduction's output is one value,
    // so there is little besides the job inside the bracket.
    let mut single = CpuBackend::with_threads(1);
    let spec = JobSpec::Reduction { n: 2_000_000, seed: 3 };
    let before = thread_cpu_ns();
    let out = run(&mut single, &spec);
    let bracket_ms = (thread_cpu_ns() - before) as f64 / 1e6;
    assert!(out.device_ms as f64 <= bracket_ms.ceil() + 1.0, "{out:?} vs {bracket_ms} ms");
    assert!(out.device_ms as f64 >= bracket_ms * 0.8 - 2.0, "{out:?} vs {bracket_ms} ms");
}

#[test]
fn jobs_above_the_limits_fail_before_allocating() {
    let mut cpu = CpuBackend::new();
    let small = RunLimits { device_bytes_max: 1 << 20, ..RunLimits::default() };
    // Generating 2^26 elements twice would take seconds; refusing takes nothing.
    let started = Instant::now();
    let error = cpu.run(&JobSpec::VectorAdd { n: VECTOR_ELEMENTS_MAX, seed: 1 }, &small).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(matches!(error, RunError::TooLarge { needed, limit, .. } if needed == 3 * 4 * VECTOR_ELEMENTS_MAX && limit == 1 << 20), "{error}");
    assert!(!error.retryable());
    // The CPU's own GEMM bound.
    let error = cpu.run(&gemm_spec(4096, 4096, 4096, Dtype::F32, 1, 0), &RunLimits::default()).unwrap_err();
    assert!(matches!(error, RunError::TooLarge { what: "CPU GEMM multiply-adds", .. }), "{error}");
    // A spec that breaks core's bounds.
    let error = cpu.run(&JobSpec::Reduction { n: 0, seed: 1 }, &RunLimits::default()).unwrap_err();
    assert!(matches!(error, RunError::Invalid(_)), "{error}");
}

#[test]
fn kernel_jobs_are_unsupported_on_cpu() {
    let spec = JobSpec::Kernel {
        source: "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }".into(),
        entry_point: "k".into(),
        grid: [1, 1, 1],
        block: [1, 1, 1],
        args: vec![KernelArg::Buffer { elements: 1, init: BufferInit::Zeros, output: true }],
        seed: 0,
    };
    assert!(spec.validate().is_ok());
    let mut cpu = CpuBackend::new();
    let error = cpu.run(&spec, &RunLimits::default()).unwrap_err();
    assert_eq!(error, RunError::Unsupported { backend: "cpu", kind: JobKind::Kernel });
    assert!(!error.retryable());
    assert!(!cpu.kinds().contains(&JobKind::Kernel));
}

#[test]
fn a_job_past_its_timeout_stops() {
    // 2^30 multiply-adds: seconds in a debug build, well above 20 ms in any build; the
    // deadline is checked between row tiles.
    let mut cpu = CpuBackend::new();
    let limits = RunLimits { timeout_ms: 20, ..RunLimits::default() };
    let started = Instant::now();
    let error = cpu.run(&gemm_spec(1024, 1024, 1024, Dtype::F32, 1, 0), &limits).unwrap_err();
    assert_eq!(error, RunError::Timeout { timeout_ms: 20 });
    assert!(error.retryable());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn returned_values_follow_the_kind_and_the_limit() {
    let mut cpu = CpuBackend::new();
    let limits = RunLimits { result_values_max: 3, ..RunLimits::default() };
    let out = cpu.run(&gemm_spec(4, 4, 4, Dtype::F32, 1, 10), &limits).unwrap();
    assert_eq!(out.values.len(), 3);
    let full = run(&mut cpu, &gemm_spec(4, 4, 4, Dtype::F32, 1, 10));
    assert_eq!(full.values.len(), 10);
    assert_eq!(full.values[..3], out.values[..]);
    assert_eq!(full.checksum, out.checksum, "the checksum covers the whole result whatever is returned");
    assert_eq!(run(&mut cpu, &gemm_spec(4, 4, 4, Dtype::F32, 1, 0)).values, Vec::<f32>::new());
    assert_eq!(run(&mut cpu, &JobSpec::Reduction { n: 5, seed: 1 }).values.len(), 1);
    assert_eq!(leading_values_count(&JobSpec::VectorAdd { n: 3, seed: 1 }, 3, &RunLimits::default()), 3);
}

#[test]
fn auto_selects_cuda_only_where_it_exists() {
    let backend = select(BackendChoice::Auto, 0).unwrap();
    let want = if auto_picks_cuda(0) { "cuda" } else { "cpu" };
    assert_eq!(backend.name(), want);
    assert_eq!(select(BackendChoice::Cpu, 0).unwrap().name(), "cpu");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    match probe_cuda() {
        CudaAvailability::Unavailable { reason } => {
            let error = select(BackendChoice::Cuda, 0).err().expect("no CUDA here, so no CUDA backend");
            assert_eq!(error, SelectError::CudaUnavailable { reason: reason.clone() });
            let message = error.to_string();
            assert!(message.starts_with("CUDA backend unavailable: ") && message.contains(&reason), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        CudaAvailability::Available { devices } => {
            eprintln!("(CUDA present: checking a missing GPU index instead)");
            let error = select(BackendChoice::Cuda, devices).err().expect("index past the last device");
            assert_eq!(error, SelectError::NoSuchDevice { index: devices, devices });
        }
    }
}

#[test]
fn backends_move_across_threads() {
    let mut backend = select(BackendChoice::Cpu, 0).unwrap();
    let out = std::thread::spawn(move || backend.run(&JobSpec::VectorAdd { n: 4, seed: 1 }, &RunLimits::default()))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(out.values.len(), 4);
}

#[test]
fn the_gemm_tolerance_of_the_gpu_tests_accepts_reordering_and_rejects_errors() {
    // The CUDA tests compare cuBLAS against the naive loop with `assert_gemm_close`; check
    // here, where it can run, that it passes another summation order and fails a wrong value.
    let (m, n, k) = (16usize, 24usize, 300usize);
    let a = generated(8, 0, m * k, Dtype::F32);
    let b = generated(8, 1, k * n, Dtype::F32);
    let want = naive_gemm(&a, &b, m, n, k);
    let bound = common::abs_gemm(&a, &b, m, n, k);
    let mut reversed = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            reversed[i * n + j] = (0..k).rev().map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    assert_ne!(reversed, want, "the orders should differ somewhere for the check to mean anything");
    common::assert_gemm_close(&reversed, &want, &bound, k, "reversed");
    let mut wrong = want.clone();
    wrong[5] += 1e-2;
    let rejected = std::panic::catch_unwind(|| common::assert_gemm_close(&wrong, &want, &bound, k, "wrong"));
    assert!(rejected.is_err());
}
