//! Compute backends: what runs a [`JobSpec`] and meters it.
//!
//! Two backends serve the same built-in job kinds:
//! - [`cuda::CudaBackend`]: cudarc on one GPU. NVRTC-compiled kernels for `vector_add` and
//!   `reduction`, cuBLAS for `gemm`, client kernels (`kernel`) compiled with NVRTC and cached.
//! - [`cpu::CpuBackend`]: plain Rust on the host, for machines without a GPU and for CI; it
//!   refuses `kernel` jobs.
//!
//! [`select`] picks one. cudarc panics (rather than returning an error) when `libcuda` is
//! missing, so every path into cudarc goes through [`probe_cuda`] first, which asks
//! `is_culib_present()` before anything else (DESIGN.md, "Workers").
//!
//! # Results
//!
//! Every job's result is a list of f32 values: `vector_add` the `n` sums, `reduction` the one
//! sum, `gemm` the `m x n` values of C in row-major order, `kernel` the values of its `output`
//! buffers concatenated in argument order. [`JobOutput::checksum`] is [`checksum_f32`] over that
//! whole list; [`JobOutput::values`] carries its leading values (see [`leading_values_count`]).
//!
//! Which checksums agree across backends: `vector_add` and `reduction` are bit-identical on
//! both (f32 additions are correctly rounded everywhere, and the reduction accumulates in f64,
//! which is exact for generated inputs, see [`cpu`]); `gemm` is not (summation order and fused
//! multiply-adds differ), so compare GEMMs with a tolerance.
//!
//! # Metering
//!
//! [`JobOutput::device_ms`] is what a receipt bills: on CUDA the GPU time between CUDA events
//! recorded on the job's stream around its compute (after inputs are on the device, before
//! results come back); on CPU the CPU time of every thread that worked on the job. Both are
//! rounded UP to whole milliseconds, and a job that ran is never metered 0 ms: [`ms_ceil`].
//! [`JobOutput::wall_ms`] is the wall time of the whole `run` call, rounded the same way.

pub mod cpu;
pub mod cuda;
pub(crate) mod inputs;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use aitbc_core::jobspec::{
    checksum_f32, JobKind, JobOutput, JobSpec, SpecError, JOB_TIMEOUT_MS_DEFAULT, JOB_TIMEOUT_MS_MAX,
    RESULT_VALUES_MAX,
};

pub use cpu::CpuBackend;
pub use cuda::CudaBackend;
pub use inputs::{thread_cpu_ns, HOST_THREADS_MAX};

/// Memory (device memory on CUDA, host memory on CPU) one job may take unless the worker's
/// configuration says otherwise: 8 GiB holds the largest vector job (768 MiB) and an f32 GEMM
/// of 16,384 cubed (3 GiB), with room for a kernel job's buffers.
pub const DEVICE_BYTES_MAX_DEFAULT: u64 = 8 << 30;

/// Leading values a `vector_add` job returns, at most: a few to spot-check against
/// [`aitbc_core::jobspec::generate_f32`]; the checksum covers the rest.
pub const VECTOR_ADD_VALUES_RETURNED_MAX: usize = 16;

/// What one job may consume on this worker, set by the worker's configuration (not the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Memory the job may allocate, bytes, checked against [`JobSpec::device_bytes`] before
    /// anything is allocated.
    pub device_bytes_max: u64,
    /// Wall time from the start of `run` until the job must have finished, milliseconds.
    pub timeout_ms: u64,
    /// Values returned in [`JobOutput::values`], at most (never above [`RESULT_VALUES_MAX`]).
    pub result_values_max: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            device_bytes_max: DEVICE_BYTES_MAX_DEFAULT,
            timeout_ms: JOB_TIMEOUT_MS_DEFAULT,
            result_values_max: RESULT_VALUES_MAX,
        }
    }
}

impl RunLimits {
    /// Panics on limits no configuration may set: they are the worker's own, so a bad one is a
    /// programming error, not a job's fault.
    pub fn assert_valid(&self) {
        assert!(self.device_bytes_max > 0, "device_bytes_max must be positive");
        assert!(
            (1..=JOB_TIMEOUT_MS_MAX).contains(&self.timeout_ms),
            "timeout_ms {} is outside 1..={JOB_TIMEOUT_MS_MAX}",
            self.timeout_ms
        );
        assert!(
            self.result_values_max <= RESULT_VALUES_MAX,
            "result_values_max {} is above {RESULT_VALUES_MAX}",
            self.result_values_max
        );
    }

    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Why a job did not run to completion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The spec breaks a bound of [`JobSpec::validate`] (or a backend's own rule on its text).
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// This backend does not run this kind (the CPU backend and `kernel`).
    #[error("the {backend} backend does not run {} jobs", kind.name())]
    Unsupported { backend: &'static str, kind: JobKind },
    /// The job asks for more than this worker's limits allow.
    #[error("job too large: {what} is {needed}, the limit is {limit}")]
    TooLarge { what: &'static str, needed: u64, limit: u64 },
    /// The job fits the limits but the device has not enough free memory right now.
    #[error("not enough free device memory: the job needs {needed_bytes} bytes plus headroom, {free_bytes} are free")]
    OutOfMemory { needed_bytes: u64, free_bytes: u64 },
    /// The job did not finish within its timeout.
    #[error("job exceeded its timeout of {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The kernel's source did not compile (or its entry point was not found); `log` is the
    /// compiler's log, truncated to [`cuda::COMPILE_LOG_BYTES_MAX`].
    #[error("kernel compilation failed:\n{log}")]
    Compile { log: String },
    /// A client kernel failed on the device (illegal address, bad launch configuration, trap):
    /// the kernel's fault, so another attempt would fail the same way.
    #[error("kernel fault: {0}")]
    KernelFault(String),
    /// The device or its driver failed; another attempt (here or elsewhere) may succeed.
    #[error("device error: {0}")]
    Device(String),
    /// The provider's own inference server failed the job (`crate::upstream`).
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
}

impl RunError {
    /// Whether another attempt at the same job may succeed: timeouts (the worker may have been
    /// loaded), device errors and momentary lack of device memory. A bad spec, an unsupported
    /// kind, a job above the limits, a compile error or a faulting kernel fail the same way
    /// every time.
    pub fn retryable(&self) -> bool {
        match self {
            RunError::Timeout { .. } | RunError::Device(_) | RunError::OutOfMemory { .. } => true,
            RunError::Upstream(e) => e.retryable(),
            RunError::Invalid(_)
            | RunError::Unsupported { .. }
            | RunError::TooLarge { .. }
            | RunError::Compile { .. }
            | RunError::KernelFault(_) => false,
        }
    }

    /// A stable short name for reports and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Invalid(_) => "invalid",
            RunError::Unsupported { .. } => "unsupported",
            RunError::TooLarge { .. } => "too_large",
            RunError::OutOfMemory { .. } => "out_of_memory",
            RunError::Timeout { .. } => "timeout",
            RunError::Compile { .. } => "compile",
            RunError::KernelFault(_) => "kernel_fault",
            RunError::Device(_) => "device",
            RunError::Upstream(_) => "upstream",
        }
    }
}

/// Something that runs jobs. One job at a time (`&mut self`); a worker that runs several at
/// once holds several backends. `Send` so the worker may move it onto the thread that runs it.
pub trait Backend: Send {
    /// "cuda" or "cpu", as [`JobOutput::backend`] and receipts name it.
    fn name(&self) -> &'static str;

    /// The kinds this backend runs.
    fn kinds(&self) -> &[JobKind];

    /// Validates `spec`, checks it against `limits` before allocating anything, runs it and
    /// meters it. Panics only if `limits` breaks [`RunLimits::assert_valid`].
    fn run(&mut self, spec: &JobSpec, limits: &RunLimits) -> Result<JobOutput, RunError>;
}

/// Which backend the worker asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// CUDA or an error: never falls back.
    Cuda,
    /// The CPU backend.
    Cpu,
    /// CUDA where its libraries load and the device exists, else the CPU backend.
    Auto,
}

impl BackendChoice {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Cuda => "cuda",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Auto => "auto",
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cuda" => Ok(BackendChoice::Cuda),
            "cpu" => Ok(BackendChoice::Cpu),
            "auto" => Ok(BackendChoice::Auto),
            other => Err(format!("unknown backend {other:?}: expected cuda, cpu or auto")),
        }
    }
}

/// Why [`select`] gave no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A CUDA library is missing or the driver reports no device.
    #[error("CUDA backend unavailable: {reason}")]
    CudaUnavailable { reason: String },
    /// The GPU index is not among the devices.
    #[error("CUDA backend unavailable: GPU index {index} does not exist ({devices} device(s))")]
    NoSuchDevice { index: usize, devices: usize },
    /// The device exists but setting it up failed (context, stream, cuBLAS, built-in kernels).
    #[error("CUDA backend failed to start on GPU {index}: {reason}")]
    CudaInit { index: usize, reason: String },
}

/// What [`probe_cuda`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaAvailability {
    /// The driver, NVRTC and cuBLAS libraries load and the driver reports `devices` (> 0).
    Available { devices: usize },
    /// Why CUDA cannot be used here, in one line.
    Unavailable { reason: String },
}

/// Finds out, without ever letting cudarc panic, whether the CUDA backend can run here: the
/// driver library first (`is_culib_present`, before any other cudarc call), then the device
/// count, then the NVRTC and cuBLAS libraries the backend also loads.
pub fn probe_cuda() -> CudaAvailability {
    // SAFETY: is_culib_present only tries to dlopen the library and reports whether it loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return CudaAvailability::Unavailable { reason: "the CUDA driver library (libcuda) is not installed".into() };
    }
    let devices = match cudarc::driver::CudaContext::device_count() {
        Ok(count) => usize::try_from(count).unwrap_or(0),
        Err(error) => {
            return CudaAvailability::Unavailable { reason: format!("the CUDA driver found no usable device: {error}") };
        }
    };
    if devices == 0 {
        return CudaAvailability::Unavailable { reason: "the CUDA driver reports no device".into() };
    }
    // SAFETY: as above, dlopen attempts only.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return CudaAvailability::Unavailable { reason: "the NVRTC library (libnvrtc) is not installed".into() };
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return CudaAvailability::Unavailable { reason: "the cuBLAS library (libcublas) is not installed".into() };
    }
    CudaAvailability::Available { devices }
}

/// Whether `Auto` means CUDA here: its libraries load and GPU `gpu_index` exists.
pub fn auto_picks_cuda(gpu_index: usize) -> bool {
    matches!(probe_cuda(), CudaAvailability::Available { devices } if gpu_index < devices)
}

/// The backend for `choice` on GPU `gpu_index` (ignored for CPU). `Auto` picks CUDA only where
/// [`auto_picks_cuda`]; where CUDA is there but fails to start, `Auto` reports the failure
/// rather than quietly serving a GPU listing from the CPU.
pub fn select(choice: BackendChoice, gpu_index: usize) -> Result<Box<dyn Backend>, SelectError> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new())),
        BackendChoice::Cuda => Ok(Box::new(CudaBackend::new(gpu_index)?)),
        BackendChoice::Auto if auto_picks_cuda(gpu_index) => Ok(Box::new(CudaBackend::new(gpu_index)?)),
        BackendChoice::Auto => Ok(Box::new(CpuBackend::new())),
    }
}

/// Milliseconds from nanoseconds, rounded up, and at least 1: a job that ran is billed for
/// the part of a millisecond it used, never for nothing.
pub fn ms_ceil(nanos: u128) -> u64 {
    let ms = nanos.div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// How many leading result values a job returns: `vector_add` at most
/// [`VECTOR_ADD_VALUES_RETURNED_MAX`], `reduction` its one sum, `gemm` the `return_values` it
/// asked for, `kernel` all its output values (bounded by [`JobSpec::validate`]); never more
/// than `limits.result_values_max` or than the result holds.
pub fn leading_values_count(spec: &JobSpec, result_len: usize, limits: &RunLimits) -> usize {
    let asked = match spec {
        JobSpec::VectorAdd { .. } => VECTOR_ADD_VALUES_RETURNED_MAX,
        JobSpec::Reduction { .. } => 1,
        JobSpec::Gemm { return_values, .. } => *return_values as usize,
        JobSpec::Kernel { .. } => result_len,
        JobSpec::TextGeneration { .. } => 0,
    };
    asked.min(result_len).min(limits.result_values_max)
}

/// Assembles the output of a job from its whole result; the wall time runs from `wall_start`
/// to the end of this call, so it includes checksumming the result.
pub(crate) fn job_output(
    backend: &'static str,
    spec: &JobSpec,
    limits: &RunLimits,
    result: &[f32],
    device_ms: u64,
    wall_start: Instant,
) -> JobOutput {
    assert!(device_ms >= 1, "a job that ran is metered at least 1 ms");
    let values = result[..leading_values_count(spec, result.len(), limits)].to_vec();
    let checksum = checksum_f32(result);
    let wall_ms = ms_ceil(wall_start.elapsed().as_nanos());
    JobOutput { checksum, values, backend: backend.to_string(), device_ms, wall_ms, text: None }
}

/// The checks every backend makes before allocating: the kind, the spec's bounds, the memory
/// limit.
pub(crate) fn admit(backend: &'static str, kinds: &[JobKind], spec: &JobSpec, limits: &RunLimits) -> Result<(), RunError> {
    limits.assert_valid();
    let kind = spec.kind();
    if !kinds.contains(&kind) {
        return Err(RunError::Unsupported { backend, kind });
    }
    spec.validate()?;
    let needed = spec.device_bytes();
    if needed > limits.device_bytes_max {
        return Err(RunError::TooLarge { what: "memory in bytes", needed, limit: limits.device_bytes_max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_up_and_never_to_zero() {
        assert_eq!(ms_ceil(0), 1);
        assert_eq!(ms_ceil(1), 1);
        assert_eq!(ms_ceil(1_000_000), 1);
        assert_eq!(ms_ceil(1_000_001), 2);
        assert_eq!(ms_ceil(2_500_000_000), 2_500);
    }

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        assert!(RunError::Timeout { timeout_ms: 1 }.retryable());
        assert!(RunError::Device("lost".into()).retryable());
        assert!(RunError::OutOfMemory { needed_bytes: 2, free_bytes: 1 }.retryable());
        assert!(!RunError::Compile { log: "x".into() }.retryable());
        assert!(!RunError::KernelFault("x".into()).retryable());
        assert!(!RunError::Unsupported { backend: "cpu", kind: JobKind::Kernel }.retryable());
        assert!(!RunError::TooLarge { what: "x", needed: 2, limit: 1 }.retryable());
        let invalid = RunError::from(SpecError { field: "n", reason: "bad".into() });
        assert!(!invalid.retryable());
        assert_eq!(invalid.code(), "invalid");
    }

    #[test]
    fn choices_parse_from_their_names() {
        for choice in [BackendChoice::Cuda, BackendChoice::Cpu, BackendChoice::Auto] {
            assert_eq!(choice.as_str().parse::<BackendChoice>(), Ok(choice));
        }
        assert!("gpu".parse::<BackendChoice>().is_err());
    }

    #[test]
    #[should_panic(expected = "timeout_ms")]
    fn limits_outside_their_bounds_are_a_programming_error() {
        RunLimits { timeout_ms: 0, ..RunLimits::default() }.assert_valid();
    }
}
