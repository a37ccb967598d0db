//! The CUDA backend against the CPU backend and naive references. Every test needs a GPU, so
//! each is ignored by default (cargo reports it as ignored, with the reason);
//! `scripts/gpu-bench.sh` runs them with `--include-ignored` on a machine with one.

mod common;

use std::time::{Duration, Instant};

use aitbc_core::jobspec::{checksum_f32, generate_f32, BufferInit, Dtype, JobKind, JobSpec, KernelArg, MatrixInput};
use aitbc_worker::backend::cuda::KERNEL_CACHE_ENTRIES_MAX;
use aitbc_worker::{select, Backend, BackendChoice, CpuBackend, RunError, RunLimits};
use common::{abs_gemm, assert_gemm_close, cuda_backend, generated, naive_gemm};

fn limits() -> RunLimits {
    RunLimits::default()
}

fn gemm_spec(m: u32, n: u32, k: u32, dtype: Dtype, seed: u64) -> JobSpec {
    let return_values = (m * n).min(4_096);
    JobSpec::Gemm { m, n, k, dtype, seed, a: MatrixInput::Seed, b: MatrixInput::Seed, return_values }
}

fn kernel_spec(source: &str, entry_point: &str, grid: u32, block: u32, args: Vec<KernelArg>) -> JobSpec {
    JobSpec::Kernel { source: source.into(), entry_point: entry_point.into(), grid: [grid, 1, 1], block: [block, 1, 1], args, seed: 3 }
}

const SAXPY: &str = r#"
extern "C" __global__ void saxpy(unsigned int n, float a, const float* x, float* y) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = a * x[i] + y[i];
    }
}
"#;

fn saxpy_args(n: u32) -> Vec<KernelArg> {
    vec![
        KernelArg::U32 { value: n },
        KernelArg::F32 { value: 2.0 },
        KernelArg::Buffer { elements: u64::from(n), init: BufferInit::Seed, output: false },
        KernelArg::Buffer { elements: u64::from(n), init: BufferInit::Seed, output: true },
    ]
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn vector_add_and_reduction_are_bit_identical_to_the_cpu() {
    let mut cuda = cuda_backend();
    let mut cpu = CpuBackend::new();
    for n in [1u64, 1000, (1 << 20) + 3, 1 << 24] {
        for spec in [JobSpec::VectorAdd { n, seed: 17 }, JobSpec::Reduction { n, seed: 17 }] {
            let gpu = cuda.run(&spec, &limits()).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            let host = cpu.run(&spec, &limits()).unwrap();
            assert_eq!((gpu.checksum, gpu.values), (host.checksum, host.values), "{spec:?}");
        }
    }
    // The CPU tests' golden values hold on the GPU too.
    assert_eq!(cuda.run(&JobSpec::VectorAdd { n: 16, seed: 1 }, &limits()).unwrap().checksum, "0d9f0dc71bb3a33a");
    assert_eq!(cuda.run(&JobSpec::Reduction { n: 1000, seed: 7 }, &limits()).unwrap().checksum, "b0f9d7446526c7e1");
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn gemm_matches_the_reference_for_every_dtype() {
    let mut cuda = cuda_backend();
    for (m, n, k) in [(1usize, 1usize, 1usize), (37, 29, 41), (128, 256, 64), (61, 300, 260)] {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let spec = gemm_spec(m as u32, n as u32, k as u32, dtype, 5);
            let out = cuda.run(&spec, &limits()).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            let a = generated(5, 0, m * k, dtype);
            let b = generated(5, 1, k * n, dtype);
            let want = naive_gemm(&a, &b, m, n, k);
            let bound = abs_gemm(&a, &b, m, n, k);
            // return_values covers all of C for these sizes.
            assert_eq!(out.values.len(), m * n);
            assert_gemm_close(&out.values, &want, &bound, k, &format!("{m}x{n}x{k} {dtype:?}"));
            assert_eq!(out.checksum, checksum_f32(&out.values));
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn gemm_takes_inline_inputs_row_major() {
    let mut cuda = cuda_backend();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let spec = JobSpec::Gemm {
            m: 2,
            n: 2,
            k: 3,
            dtype,
            seed: 0,
            a: MatrixInput::Inline { values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] },
            b: MatrixInput::Inline { values: vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0] },
            return_values: 4,
        };
        // Small integers are exact in every dtype and every summation order.
        assert_eq!(cuda.run(&spec, &limits()).unwrap().values, vec![58.0, 64.0, 139.0, 154.0], "{dtype:?}");
    }
    // A non-square shape tells a transposition mistake apart: 1 x 3 times 3 x 2.
    let spec = JobSpec::Gemm {
        m: 1,
        n: 2,
        k: 3,
        dtype: Dtype::F32,
        seed: 0,
        a: MatrixInput::Inline { values: vec![1.0, 10.0, 100.0] },
        b: MatrixInput::Inline { values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] },
        return_values: 2,
    };
    assert_eq!(cuda.run(&spec, &limits()).unwrap().values, vec![531.0, 642.0]);
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn kernels_compile_once_and_run() {
    let mut cuda = cuda_backend();
    let spec = kernel_spec(SAXPY, "saxpy", 4, 256, saxpy_args(1000));
    let before = cuda.kernel_cache_stats();
    let first = cuda.run(&spec, &limits()).unwrap();
    let after_first = cuda.kernel_cache_stats();
    assert_eq!(after_first.misses, before.misses + 1);
    let second = cuda.run(&spec, &limits()).unwrap();
    let after_second = cuda.kernel_cache_stats();
    assert_eq!(after_second.hits, after_first.hits + 1, "the second run reuses the module");
    assert_eq!(after_second.misses, after_first.misses);
    assert!(after_second.entries >= 1 && after_second.entries <= KERNEL_CACHE_ENTRIES_MAX);
    assert_eq!(first.checksum, second.checksum);
    assert_eq!(first.values.len(), 1000);
    for (i, got) in first.values.iter().enumerate() {
        let (x, y) = (generate_f32(3, 0, i as u64), generate_f32(3, 1, i as u64));
        assert!((got - 2.0f32.mul_add(x, y)).abs() <= 1e-6, "element {i}: {got}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn kernel_arguments_keep_their_order_and_types() {
    let mut cuda = cuda_backend();
    let source = r#"
extern "C" __global__ void mix(float* out, unsigned int a, const float* in, float b) {
    out[0] = (float)a;
    out[1] = b;
    out[2] = in[0];
    out[3] = in[1];
}
"#;
    let args = vec![
        KernelArg::Buffer { elements: 4, init: BufferInit::Zeros, output: true },
        KernelArg::U32 { value: 7 },
        KernelArg::Buffer { elements: 2, init: BufferInit::Inline { values: vec![0.5, -0.25] }, output: false },
        KernelArg::F32 { value: 1.5 },
    ];
    let out = cuda.run(&kernel_spec(source, "mix", 1, 1, args), &limits()).unwrap();
    assert_eq!(out.values, vec![7.0, 1.5, 0.5, -0.25]);
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn kernel_failures_say_whose_fault_they_are() {
    let mut cuda = cuda_backend();
    let out_arg = || vec![KernelArg::Buffer { elements: 1, init: BufferInit::Zeros, output: true }];
    // A compile error carries the compiler's log and is not retried.
    let broken = kernel_spec("extern \"C\" __global__ void k(float* x) { x[0] = undeclared; }", "k", 1, 1, out_arg());
    match cuda.run(&broken, &limits()) {
        Err(RunError::Compile { log }) => assert!(log.contains("undeclared"), "{log}"),
        other => panic!("{other:?}"),
    }
    // A missing entry point.
    let missing = kernel_spec("extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }", "other", 1, 1, out_arg());
    assert!(matches!(cuda.run(&missing, &limits()), Err(RunError::Compile { .. })));
    // A source that includes a file never reaches the compiler.
    let include = kernel_spec("#include </etc/hostname>\nextern \"C\" __global__ void k(float* x) {}", "k", 1, 1, out_arg());
    assert!(matches!(cuda.run(&include, &limits()), Err(RunError::Invalid(_))));
    // A block shape the driver refuses at launch (z above 64) is the kernel's fault too.
    let JobSpec::Kernel { source, entry_point, args, seed, .. } = kernel_spec("extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }", "k", 1, 1, out_arg()) else { unreachable!() };
    let refused = JobSpec::Kernel { source, entry_point, grid: [1, 1, 1], block: [1, 1, 65], args, seed };
    assert!(refused.validate().is_ok());
    assert!(matches!(cuda.run(&refused, &limits()), Err(RunError::KernelFault(_))));
    // A faulting kernel is the kernel's fault, and the backend recovers for the next job.
    // (The address comes from an argument so the compiler cannot see the null pointer.)
    let mut fault_args = out_arg();
    fault_args.push(KernelArg::U32 { value: 0 });
    let fault_source = "extern \"C\" __global__ void k(float* x, unsigned int address) {\n\
                        float* p = (float*)(unsigned long long)(address + 64u); *p = 1.0f; x[0] = 2.0f; }";
    let fault = kernel_spec(fault_source, "k", 1, 1, fault_args);
    let error = cuda.run(&fault, &limits()).unwrap_err();
    assert!(matches!(error, RunError::KernelFault(_)), "{error}");
    assert!(!error.retryable());
    let after = cuda.run(&JobSpec::VectorAdd { n: 1000, seed: 1 }, &limits()).unwrap();
    assert_eq!(after.values.len(), 16);
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn a_kernel_past_its_timeout_fails_and_the_backend_recovers() {
    let mut cuda = cuda_backend();
    // Spins for about 3e9 clock cycles (1 to 2 s); the job may take 300 ms.
    let spin = r#"
extern "C" __global__ void spin(float* out, unsigned int megacycles) {
    long long start = clock64();
    long long limit = (long long)megacycles * 1000000LL;
    while (clock64() - start < limit) { }
    out[0] = 1.0f;
}
"#;
    let args = vec![KernelArg::Buffer { elements: 1, init: BufferInit::Zeros, output: true }, KernelArg::U32 { value: 3_000 }];
    let spec = kernel_spec(spin, "spin", 1, 1, args);
    let short = RunLimits { timeout_ms: 300, ..limits() };
    let started = Instant::now();
    let error = cuda.run(&spec, &short).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error, RunError::Timeout { timeout_ms: 300 });
    assert!(error.retryable());
    assert!(waited < Duration::from_millis(1_000), "the backend waited {waited:?}");
    // A fresh context serves the next job.
    let out = cuda.run(&JobSpec::Reduction { n: 1 << 16, seed: 2 }, &limits()).unwrap();
    assert_eq!(out.checksum, CpuBackend::new().run(&JobSpec::Reduction { n: 1 << 16, seed: 2 }, &limits()).unwrap().checksum);
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn metering_rounds_the_event_time_up() {
    let mut cuda = cuda_backend();
    for spec in [JobSpec::VectorAdd { n: 1 << 22, seed: 1 }, gemm_spec(1024, 1024, 1024, Dtype::Bf16, 1)] {
        let out = cuda.run(&spec, &limits()).unwrap();
        let event_ms = f64::from(cuda.last_event_ms().expect("a job completed"));
        assert!(out.device_ms >= 1);
        assert_eq!(out.device_ms, (event_ms.ceil() as u64).max(1), "{spec:?}: {event_ms}");
        // Device time is inside the wall time (plus one rounding step).
        assert!(out.device_ms <= out.wall_ms + 1, "{out:?}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn limits_are_checked_before_allocating() {
    let mut cuda = cuda_backend();
    let small = RunLimits { device_bytes_max: 1 << 20, ..limits() };
    let error = cuda.run(&JobSpec::VectorAdd { n: 1 << 20, seed: 1 }, &small).unwrap_err();
    assert!(matches!(error, RunError::TooLarge { .. }), "{error}");
    // The GPU takes GEMMs the CPU refuses.
    assert!(cuda.kinds().contains(&JobKind::Kernel));
    let measured = cuda.measure_gemm(Dtype::Bf16, 2048, 5).unwrap();
    assert!(measured.tflops > 0.0 && measured.ms_per_gemm > 0.0, "{measured:?}");
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn select_cuda_gives_a_backend_that_moves_across_threads() {
    let _probe = cuda_backend();
    let mut backend = select(BackendChoice::Cuda, 0).unwrap();
    assert_eq!(backend.name(), "cuda");
    let out = std::thread::spawn(move || backend.run(&JobSpec::VectorAdd { n: 4, seed: 1 }, &RunLimits::default()))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(out.values, (0..4).map(|i| generate_f32(1, 0, i) + generate_f32(1, 1, i)).collect::<Vec<_>>());
}
