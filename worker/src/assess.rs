//! `aitbc-worker assess`: what this machine offers a GPU listing, as JSON.
//!
//! For CUDA: the GPU's name, memory, multiprocessors, compute capability and the CUDA version
//! its driver supports, and the measured throughput of cuBLAS GEMMs ([`ASSESS_GPU_GEMM_DIM`]
//! cubed, f32 and bf16, [`ASSESS_GPU_GEMM_ITERATIONS`] back-to-back after a warm-up, timed with
//! CUDA events). For CPU: the model, cores and memory (`/proc/cpuinfo`, `/proc/meminfo`), and
//! the throughput of an f32 GEMM job of [`ASSESS_CPU_GEMM_DIM`] cubed through the CPU backend
//! (best of several runs, wall time).
//!
//! `performance_score` = the best measured GEMM throughput in TFLOP/s divided by
//! [`ASSESS_REFERENCE_TFLOPS`]: 1.0 is 100 dense TFLOP/s measured, roughly an A100's bf16
//! through cuBLAS; CPUs score in the thousandths. One scale for both backends, so listings
//! compare. `max_concurrent_jobs`: GPU memory divided by [`JOB_SLOT_DEVICE_BYTES`], within
//! 1..=[`CONCURRENT_JOBS_MAX`]; 1 on CPU, where one job already uses every core.

use std::time::{Duration, Instant};

use aitbc_core::jobspec::{Dtype, JobKind, JobSpec, MatrixInput};
use serde::Serialize;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::{auto_picks_cuda, Backend, BackendChoice, RunError, RunLimits, SelectError};

/// The throughput a performance score of 1.0 stands for, TFLOP/s.
pub const ASSESS_REFERENCE_TFLOPS: f64 = 100.0;
/// m = n = k of the GPU's timed GEMMs: large enough to reach cuBLAS's steady state.
pub const ASSESS_GPU_GEMM_DIM: u32 = 4_096;
/// GEMMs timed per dtype on the GPU (about 20 ms each on a large GPU).
pub const ASSESS_GPU_GEMM_ITERATIONS: u32 = 20;
/// m = n = k of the CPU's timed GEMM job: a fraction of a second on a few cores.
pub const ASSESS_CPU_GEMM_DIM: u32 = 256;
/// The CPU GEMM is repeated until this much wall time has passed...
pub const ASSESS_CPU_MEASURE_MS: u64 = 300;
/// ...or this many runs, whichever comes first.
pub const ASSESS_CPU_RUNS_MAX: u32 = 16;
/// GPU memory one concurrent job slot assumes, bytes.
pub const JOB_SLOT_DEVICE_BYTES: u64 = 16 << 30;
/// Concurrent jobs a worker offers, at most.
pub const CONCURRENT_JOBS_MAX: u32 = 8;

const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;

/// What `assess` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// "cuda" or "cpu".
    pub backend: &'static str,
    /// The GPU, for the CUDA backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuFigures>,
    /// The host, for the CPU backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuFigures>,
    /// The timed GEMMs.
    pub gemm: Vec<GemmFigure>,
    /// Best measured TFLOP/s over [`ASSESS_REFERENCE_TFLOPS`].
    pub performance_score: f64,
    /// [`ASSESS_REFERENCE_TFLOPS`], so the score can be read without this source.
    pub score_reference_tflops: f64,
    /// Jobs this worker offers to run at once.
    pub max_concurrent_jobs: u32,
    /// Job kinds it runs.
    pub kinds: Vec<JobKind>,
}

/// A GPU's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuFigures {
    pub index: usize,
    pub name: String,
    pub memory_gib: f64,
    pub multiprocessors: u32,
    /// "major.minor".
    pub compute_capability: String,
    /// The CUDA version the driver supports, "major.minor".
    pub cuda_driver_version: String,
}

/// A host's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuFigures {
    /// `model name` from /proc/cpuinfo, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Logical cores the OS offers this process.
    pub cores: usize,
    /// Threads a CPU job uses.
    pub threads_used: usize,
    /// `MemTotal` from /proc/meminfo, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
}

/// One timed GEMM configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GemmFigure {
    pub dtype: Dtype,
    /// m = n = k.
    pub dim: u32,
    /// Time per GEMM, milliseconds.
    pub ms: f64,
    /// 2 dim^3 / time, TFLOP/s.
    pub tflops: f64,
}

/// Why `assess` could not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AssessError {
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("measuring GEMM throughput failed: {0}")]
    Run(#[from] RunError),
}

/// Assesses the backend `choice` resolves to (as [`crate::select`] would resolve it).
pub fn assess(choice: BackendChoice, gpu_index: usize) -> Result<Assessment, AssessError> {
    match choice {
        BackendChoice::Cpu => assess_cpu(&mut CpuBackend::new()),
        BackendChoice::Cuda => assess_cuda(&mut CudaBackend::new(gpu_index)?),
        BackendChoice::Auto if auto_picks_cuda(gpu_index) => assess_cuda(&mut CudaBackend::new(gpu_index)?),
        BackendChoice::Auto => assess_cpu(&mut CpuBackend::new()),
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `value` to `digits` significant digits: a CPU's score is in the thousandths or below, a
/// GPU's above 1, and both should print readably.
fn round_significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    round_to(value, digits - 1 - magnitude)
}

fn score(gemm: &[GemmFigure]) -> f64 {
    let best = gemm.iter().map(|g| g.tflops).fold(0.0, f64::max);
    round_significant(best / ASSESS_REFERENCE_TFLOPS, 4)
}

/// Assesses a CUDA backend.
pub fn assess_cuda(backend: &mut CudaBackend) -> Result<Assessment, AssessError> {
    let mut gemm = Vec::new();
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let measured = backend.measure_gemm(dtype, ASSESS_GPU_GEMM_DIM, ASSESS_GPU_GEMM_ITERATIONS)?;
        gemm.push(GemmFigure { dtype, dim: measured.dim, ms: round_to(measured.ms_per_gemm, 4), tflops: round_significant(measured.tflops, 4) });
    }
    let info = backend.info();
    let slots = (info.total_memory_bytes / JOB_SLOT_DEVICE_BYTES).clamp(1, u64::from(CONCURRENT_JOBS_MAX)) as u32;
    Ok(Assessment {
        backend: "cuda",
        gpu: Some(GpuFigures {
            index: info.index,
            name: info.name.clone(),
            memory_gib: round_to(info.total_memory_bytes as f64 / BYTES_PER_GIB, 2),
            multiprocessors: info.multiprocessors,
            compute_capability: format!("{}.{}", info.compute_capability.0, info.compute_capability.1),
            cuda_driver_version: format!("{}.{}", info.driver_version.0, info.driver_version.1),
        }),
        cpu: None,
        performance_score: score(&gemm),
        score_reference_tflops: ASSESS_REFERENCE_TFLOPS,
        gemm,
        max_concurrent_jobs: slots,
        kinds: backend.kinds().to_vec(),
    })
}

/// Measures the CPU backend's GEMM throughput: an f32 job of `dim` cubed, repeated (after a
/// warm-up) until [`ASSESS_CPU_MEASURE_MS`] or [`ASSESS_CPU_RUNS_MAX`] runs; the best run.
pub fn measure_cpu_gemm(backend: &mut CpuBackend, dtype: Dtype, dim: u32) -> Result<GemmFigure, RunError> {
    let spec = JobSpec::Gemm { m: dim, n: dim, k: dim, dtype, seed: 1, a: MatrixInput::Seed, b: MatrixInput::Seed, return_values: 0 };
    let limits = RunLimits::default();
    backend.run(&spec, &limits)?;
    let budget = Duration::from_millis(ASSESS_CPU_MEASURE_MS);
    let started = Instant::now();
    let mut best = Duration::MAX;
    for _ in 0..ASSESS_CPU_RUNS_MAX {
        let run_start = Instant::now();
        backend.run(&spec, &limits)?;
        best = best.min(run_start.elapsed());
        if started.elapsed() >= budget {
            break;
        }
    }
    let seconds = best.as_secs_f64().max(1e-9);
    let tflops = 2.0 * f64::from(dim).powi(3) / seconds / 1e12;
    Ok(GemmFigure { dtype, dim, ms: round_to(seconds * 1e3, 4), tflops: round_significant(tflops, 4) })
}

/// Assesses a CPU backend.
pub fn assess_cpu(backend: &mut CpuBackend) -> Result<Assessment, AssessError> {
    let gemm = vec![measure_cpu_gemm(backend, Dtype::F32, ASSESS_CPU_GEMM_DIM)?];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Assessment {
        backend: "cpu",
        gpu: None,
        cpu: Some(CpuFigures { model: cpu_model(), cores, threads_used: backend.threads(), memory_gib: host_memory_gib() }),
        performance_score: score(&gemm),
        score_reference_tflops: ASSESS_REFERENCE_TFLOPS,
        gemm,
        max_concurrent_jobs: 1,
        kinds: backend.kinds().to_vec(),
    })
}

/// `model name` of the first processor in /proc/cpuinfo.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_model(&text)
}

fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// `MemTotal` from /proc/meminfo, GiB.
fn host_memory_gib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_gib(&text)
}

fn parse_mem_total_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(round_to(kib as f64 * 1024.0 / BYTES_PER_GIB, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_mem_total_gib("MemTotal:       16777216 kB\nMemFree: 1 kB\n"), Some(16.0));
        assert_eq!(parse_mem_total_gib("MemFree: 1 kB\n"), None);
        let cpuinfo = "processor\t: 0\nmodel name\t: Example CPU @ 3.00GHz\nflags\t: sse\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("Example CPU @ 3.00GHz"));
    }

    #[test]
    fn the_score_is_the_best_throughput_over_the_reference() {
        let figure = |tflops| GemmFigure { dtype: Dtype::F32, dim: 1, ms: 1.0, tflops };
        assert_eq!(score(&[figure(50.0), figure(200.0)]), 2.0);
        assert_eq!(score(&[]), 0.0);
        assert_eq!(round_significant(0.000123456, 3), 0.000123);
        assert_eq!(round_significant(654.321, 4), 654.3);
    }
}
