//! The worker's bench: what jobs cost through the backends (`scripts/gpu-bench.sh` runs it).
//!
//! CPU section (always): tiny jobs per second through the CPU backend's `run`, and its GEMM
//! throughput per dtype.
//!
//! GPU section (where CUDA and a device exist; otherwise it prints "skipped: no GPU" and exits
//! 0): GEMM TFLOP/s through a job (`CudaBackend::run`) against cuBLAS timed directly in the
//! same process on the same stream (`measure_gemm`), f32/f16/bf16 at 4096 and 8192 cubed;
//! kernel-job latency with the module compiled (cache miss) and cached (hit); and the metering
//! error: the metered `device_ms` against the raw CUDA event time it was rounded from, and
//! against the job's wall time.
//!
//! `--quick` shrinks everything (GEMMs of 1024 and 2048, shorter CPU runs) for a smoke test.

use std::time::{Duration, Instant};

use aitbc_core::jobspec::{BufferInit, Dtype, JobSpec, KernelArg, MatrixInput};
use aitbc_worker::assess::measure_cpu_gemm;
use aitbc_worker::{probe_cuda, Backend, CpuBackend, CudaAvailability, CudaBackend, RunLimits};

/// Wall time spent on each tiny CPU job kind.
const CPU_TINY_RUN_MS: u64 = 500;
/// Tiny jobs per kind, at most, whatever the time.
const CPU_TINY_JOBS_MAX: u32 = 100_000;
/// Kernel jobs compiled from scratch (each source made unique) per latency figure.
const KERNEL_UNCACHED_RUNS: u32 = 5;
/// Kernel jobs run from the cache per latency figure.
const KERNEL_CACHED_RUNS: u32 = 50;

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("aitbc-worker bench ({} build{})", if cfg!(debug_assertions) { "debug" } else { "release" }, if quick { ", --quick" } else { "" });
    cpu_section(quick);
    match probe_cuda() {
        CudaAvailability::Unavailable { reason } => {
            println!("\n== GPU ==\nskipped: no GPU ({reason})");
        }
        CudaAvailability::Available { .. } => match CudaBackend::new(0) {
            Ok(mut cuda) => gpu_section(&mut cuda, quick),
            Err(error) => {
                eprintln!("gpu_bench: CUDA is present but the backend failed to start: {error}");
                std::process::exit(1);
            }
        },
    }
}

fn cpu_section(quick: bool) {
    let mut cpu = CpuBackend::new();
    println!("\n== CPU backend ({} threads) ==", cpu.threads());
    println!("{:<28} {:>10} {:>12} {:>12}", "tiny job", "jobs/s", "mean wall us", "device_ms");
    let tiny = [
        ("vector_add n=1024", JobSpec::VectorAdd { n: 1024, seed: 1 }),
        ("reduction n=1024", JobSpec::Reduction { n: 1024, seed: 1 }),
        ("gemm 32^3 f32", gemm_spec(32, Dtype::F32)),
        ("gemm 32^3 bf16", gemm_spec(32, Dtype::Bf16)),
    ];
    let budget = Duration::from_millis(if quick { CPU_TINY_RUN_MS / 5 } else { CPU_TINY_RUN_MS });
    let limits = RunLimits::default();
    for (name, spec) in &tiny {
        let started = Instant::now();
        let mut jobs = 0u32;
        let mut device_ms = 0u64;
        while started.elapsed() < budget && jobs < CPU_TINY_JOBS_MAX {
            device_ms += cpu.run(spec, &limits).expect("tiny CPU job").device_ms;
            jobs += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{:<28} {:>10.0} {:>12.1} {:>12.2}",
            name,
            f64::from(jobs) / seconds,
            seconds * 1e6 / f64::from(jobs),
            device_ms as f64 / f64::from(jobs)
        );
    }
    let dim = if quick { 128 } else { 512 };
    println!("{:<28} {:>10} {:>12}", "CPU GEMM (job, best run)", "GFLOP/s", "ms");
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let figure = measure_cpu_gemm(&mut cpu, dtype, dim).expect("CPU GEMM");
        println!("{:<28} {:>10.2} {:>12.2}", format!("{dim}^3 {}", dtype_name(dtype)), figure.tflops * 1e3, figure.ms);
    }
}

fn gemm_spec(dim: u32, dtype: Dtype) -> JobSpec {
    JobSpec::Gemm { m: dim, n: dim, k: dim, dtype, seed: 1, a: MatrixInput::Seed, b: MatrixInput::Seed, return_values: 0 }
}

fn tflops(dim: u32, ms: f64) -> f64 {
    2.0 * f64::from(dim).powi(3) / (ms * 1e-3) / 1e12
}

fn gpu_section(cuda: &mut CudaBackend, quick: bool) {
    let info = cuda.info().clone();
    println!(
        "\n== GPU {}: {} ({:.1} GiB, {} SMs, sm_{}{}, driver CUDA {}.{}) ==",
        info.index,
        info.name,
        info.total_memory_bytes as f64 / (1u64 << 30) as f64,
        info.multiprocessors,
        info.compute_capability.0,
        info.compute_capability.1,
        info.driver_version.0,
        info.driver_version.1
    );
    let limits = RunLimits { timeout_ms: 600_000, ..RunLimits::default() };

    println!("\nGEMM, TFLOP/s (job = backend.run of a gemm spec; direct = cuBLAS on the same stream, back-to-back)");
    println!(
        "{:<6} {:>6} {:>10} {:>12} {:>12} {:>10} {:>9}",
        "dtype", "dim", "direct", "job (event)", "job (meter)", "job wall", "job/dir"
    );
    let dims: &[u32] = if quick { &[1024, 2048] } else { &[4096, 8192] };
    for &dim in dims {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let iterations = if dim >= 8192 { 5 } else { 20 };
            let direct = match cuda.measure_gemm(dtype, dim, iterations) {
                Ok(m) => m,
                Err(error) => {
                    println!("{:<6} {:>6} failed: {error}", dtype_name(dtype), dim);
                    continue;
                }
            };
            let spec = gemm_spec(dim, dtype);
            // The first job of a shape pays cuBLAS's heuristics; time the second.
            let job = cuda.run(&spec, &limits).and_then(|_| cuda.run(&spec, &limits));
            match job {
                Ok(out) => {
                    let event_ms = f64::from(cuda.last_event_ms().expect("a job completed"));
                    let job_tflops = tflops(dim, event_ms);
                    println!(
                        "{:<6} {:>6} {:>10.1} {:>12.1} {:>12.1} {:>8} ms {:>8.0}%",
                        dtype_name(dtype),
                        dim,
                        direct.tflops,
                        job_tflops,
                        tflops(dim, out.device_ms as f64),
                        out.wall_ms,
                        100.0 * job_tflops / direct.tflops
                    );
                }
                Err(error) => println!("{:<6} {:>6} {:>10.1} job failed: {error}", dtype_name(dtype), dim, direct.tflops),
            }
        }
    }

    kernel_latency(cuda, &limits);
    metering(cuda, &limits, quick);
}

/// saxpy that also copies the first 16 values of y into a small output buffer: a job returns at
/// most RESULT_VALUES_MAX values, so the 2^20-element y itself cannot be an output.
const SAXPY: &str = "extern \"C\" __global__ void saxpy(unsigned int n, float a, const float* x, float* y, float* head) {\n\
                     unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                     if (i < n) { y[i] = a * x[i] + y[i]; if (i < 16) { head[i] = y[i]; } }\n}\n";

fn saxpy_spec(source: String, n: u32) -> JobSpec {
    JobSpec::Kernel {
        source,
        entry_point: "saxpy".into(),
        grid: [n.div_ceil(256), 1, 1],
        block: [256, 1, 1],
        args: vec![
            KernelArg::U32 { value: n },
            KernelArg::F32 { value: 2.0 },
            KernelArg::Buffer { elements: u64::from(n), init: BufferInit::Seed, output: false },
            KernelArg::Buffer { elements: u64::from(n), init: BufferInit::Seed, output: false },
            KernelArg::Buffer { elements: 16, init: BufferInit::Zeros, output: true },
        ],
        seed: 1,
    }
}

fn kernel_latency(cuda: &mut CudaBackend, limits: &RunLimits) {
    println!("\nkernel job latency (saxpy over 2^20 elements), wall ms per job");
    println!("{:<10} {:>6} {:>10} {:>10} {:>12}", "module", "jobs", "mean", "min", "device_ms");
    let n = 1 << 20;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let stats_before = cuda.kernel_cache_stats();
    let mut row = |label: &str, runs: u32, source_for: &dyn Fn(u32) -> String| {
        let mut walls = Vec::new();
        let mut device_ms = 0u64;
        for i in 0..runs {
            let started = Instant::now();
            match cuda.run(&saxpy_spec(source_for(i), n), limits) {
                Ok(out) => {
                    walls.push(started.elapsed().as_secs_f64() * 1e3);
                    device_ms += out.device_ms;
                }
                Err(error) => {
                    println!("{label:<10} failed: {error}");
                    return;
                }
            }
        }
        let mean = walls.iter().sum::<f64>() / walls.len() as f64;
        let min = walls.iter().cloned().fold(f64::MAX, f64::min);
        println!("{:<10} {:>6} {:>10.2} {:>10.2} {:>12.2}", label, runs, mean, min, device_ms as f64 / f64::from(runs));
    };
    // A comment makes each source, and so its SHA-256, unique: every job compiles.
    row("uncached", KERNEL_UNCACHED_RUNS, &|i| format!("{SAXPY}// {nonce} {i}\n"));
    row("cached", KERNEL_CACHED_RUNS, &|_| SAXPY.to_string());
    let stats = cuda.kernel_cache_stats();
    println!("cache: {} entries, {} hits, {} misses this bench", stats.entries, stats.hits - stats_before.hits, stats.misses - stats_before.misses);
}

fn metering(cuda: &mut CudaBackend, limits: &RunLimits, quick: bool) {
    println!("\nmetering: device_ms (billed) vs the CUDA event time it is rounded up from, and vs wall time");
    println!("{:<26} {:>10} {:>10} {:>10} {:>10} {:>10}", "job", "event ms", "device_ms", "round err", "wall ms", "wall-event");
    let gemm_dim = if quick { 1024 } else { 4096 };
    let jobs = [
        ("vector_add n=2^24".to_string(), JobSpec::VectorAdd { n: 1 << 24, seed: 1 }),
        ("reduction n=2^24".to_string(), JobSpec::Reduction { n: 1 << 24, seed: 1 }),
        (format!("gemm {gemm_dim}^3 bf16"), gemm_spec(gemm_dim, Dtype::Bf16)),
        ("saxpy 2^20 (cached)".to_string(), saxpy_spec(SAXPY.to_string(), 1 << 20)),
        ("vector_add n=1024".to_string(), JobSpec::VectorAdd { n: 1024, seed: 1 }),
    ];
    for (name, spec) in &jobs {
        match cuda.run(spec, limits) {
            Ok(out) => {
                let event = f64::from(cuda.last_event_ms().expect("a job completed"));
                println!(
                    "{:<26} {:>10.3} {:>10} {:>10.3} {:>10} {:>10.1}",
                    name,
                    event,
                    out.device_ms,
                    out.device_ms as f64 - event,
                    out.wall_ms,
                    out.wall_ms as f64 - event
                );
            }
            Err(error) => println!("{name:<26} failed: {error}"),
        }
    }
}
