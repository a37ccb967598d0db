//! The CUDA backend: cudarc on one GPU.
//!
//! # Device setup
//!
//! The backend owns a CUDA context of its own on its GPU (a non-primary context, so that it can
//! be thrown away and rebuilt without touching anyone else's), one stream on it, a cuBLAS
//! handle bound to that stream, and the built-in kernels (`vector_add`, `reduction`), compiled
//! once with NVRTC when the backend is created. All work of a job goes onto that one stream in
//! order, so cudarc's cross-stream event tracking is switched off.
//!
//! # Kinds
//!
//! - `vector_add`: a grid-stride kernel, `c[i] = a[i] + b[i]` in f32 (bit-identical to the CPU).
//! - `reduction`: each block sums its grid-stride share in f64 and writes one f64 partial; the
//!   host adds the (at most [`REDUCE_GRID_BLOCKS_MAX`]) partials in f64 and rounds once to f32.
//!   Generated inputs make every f64 partial sum exact (see [`super::cpu`]), so the result is
//!   bit-identical to the CPU backend's.
//! - `gemm`: cuBLAS. cuBLAS is column-major, and a row-major `r x c` matrix is the column-major
//!   `c x r` matrix of its transpose with leading dimension `c`. So the row-major product
//!   `C = A B` is computed as the column-major `C^T = B^T A^T`: cuBLAS's (m, n, k) are the job's
//!   (n, m, k), its first operand is B (ld n), its second A (ld k), and C comes out with ld n,
//!   i.e. row-major `m x n`, with no transposition anywhere. f32 uses `cublasSgemm` (true f32:
//!   the handle's default math mode does not use TF32); f16 and bf16 use `cublasGemmEx` with
//!   16-bit A and B (rounded on the host with the `half` crate, as the CPU backend does),
//!   f32 C, `CUBLAS_COMPUTE_32F`.
//! - `kernel`: the client's CUDA C source, compiled with NVRTC into PTX and loaded as a module,
//!   cached by the SHA-256 of the source ([`KERNEL_CACHE_ENTRIES_MAX`] entries, least recently
//!   used evicted), launched with the job's grid and block over its arguments: buffers as device
//!   `float*` (`CudaSlice<f32>`), scalars by value. A source that does not compile fails the job
//!   with the compiler's log. Sources may not include files (see [`check_kernel_source`]).
//!
//! Inputs are generated on the host with [`generate_f32`](aitbc_core::jobspec::generate_f32)
//! (over the host's cores) and uploaded; a device-side generator would save the upload but
//! must be shown bit-identical first.
//!
//! # Metering
//!
//! Two CUDA events (timing enabled) are recorded on the stream: after the inputs are uploaded
//! and right after the job's compute (kernel or cuBLAS call). `device_ms` is the time between
//! them ([`CudaEvent::elapsed_ms`], resolution about half a microsecond) rounded UP to whole
//! milliseconds and at least 1. Compilation, host-side input generation and the uploads and
//! downloads are in `wall_ms` only.
//!
//! # Limits and timeouts
//!
//! Before allocating, a job's [`JobSpec::device_bytes`] is checked against the limit
//! ([`RunError::TooLarge`]) and against the device's free memory less
//! [`DEVICE_MEMORY_HEADROOM_BYTES`] ([`RunError::OutOfMemory`], retryable).
//!
//! A running kernel cannot be preempted. So the backend never blocks on device work: it polls
//! the end event until the job's deadline. If the deadline passes first, the job fails with
//! [`RunError::Timeout`] and the whole device state (context, stream, cuBLAS handle, modules,
//! the job's buffers) is handed to a detached "reaper" thread that drops it there; the next job
//! gets a freshly built context. What the driver does with a kernel still running in a context
//! being destroyed (wait for it, or kill it) is the driver's business: either way only the
//! reaper thread waits. Meanwhile the stuck kernel still occupies the GPU (contexts time-share
//! it), so at most [`REAPERS_IN_FLIGHT_MAX`] such teardowns may be pending; beyond that the
//! backend refuses jobs with a retryable device error until they finish (or the worker
//! restarts). Any other error from device work (a faulting kernel leaves the context unusable)
//! retires the context the same way; a launch the driver refuses outright (bad block shape,
//! too many registers) and a compile error do not, since nothing ran. NVRTC compilation cannot be interrupted either: it runs on its
//! own thread, waited on until the deadline, with at most [`COMPILES_IN_FLIGHT_MAX`] such
//! threads alive.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use aitbc_core::jobspec::{BufferInit, Dtype, JobKind, JobOutput, JobSpec, KernelArg, MatrixInput, SpecError, GEMM_DIM_MAX};
use cudarc::cublas::sys as blas_sys;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys as driver_sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, Ptx};
use sha2::{Digest, Sha256};

use super::inputs::{generate_into, half_bits, host_threads_default};
use super::{admit, job_output, ms_ceil, probe_cuda, Backend, CudaAvailability, RunError, RunLimits, SelectError};

/// Compiled client kernels kept per backend, at most (least recently used evicted).
pub const KERNEL_CACHE_ENTRIES_MAX: usize = 64;
/// A compiler log returned in [`RunError::Compile`], at most (bytes; longer logs are cut).
pub const COMPILE_LOG_BYTES_MAX: usize = 16 * 1024;
/// NVRTC compilations alive at once, at most; more than one means earlier ones outlived their
/// job's deadline and are still running on their threads.
pub const COMPILES_IN_FLIGHT_MAX: usize = 4;
/// Retired device states still being torn down (see the module comment), at most.
pub const REAPERS_IN_FLIGHT_MAX: usize = 2;
/// Free device memory a job must leave: cuBLAS workspace, modules, allocator granularity.
pub const DEVICE_MEMORY_HEADROOM_BYTES: u64 = 512 << 20;
/// The first pause while polling a job's end event; pauses double from here.
pub const EVENT_POLL_INTERVAL_MIN_US: u64 = 20;
/// The longest pause while polling a job's end event: bounds the latency it adds.
pub const EVENT_POLL_INTERVAL_MAX_US: u64 = 1_000;
/// Threads per block of the built-in vector kernel.
pub const VECTOR_BLOCK_THREADS: u32 = 256;
/// Blocks of the built-in vector kernel, at most (it strides over the rest).
pub const VECTOR_GRID_BLOCKS_MAX: u32 = 65_535;
/// Threads per block of the built-in reduction (a power of two: the tree halves it).
pub const REDUCE_BLOCK_THREADS: u32 = 256;
/// Blocks of the built-in reduction, at most: the f64 partials the host adds.
pub const REDUCE_GRID_BLOCKS_MAX: u32 = 1_024;
/// GEMMs one [`CudaBackend::measure_gemm`] call may time, at most.
pub const MEASURE_ITERATIONS_MAX: u32 = 1_000;
/// How long one [`CudaBackend::measure_gemm`] call may take, at most.
pub const MEASURE_TIMEOUT_MS: u64 = 120_000;

const _: () = assert!(REDUCE_BLOCK_THREADS.is_power_of_two() && REDUCE_BLOCK_THREADS <= 1024);
const _: () = assert!(VECTOR_BLOCK_THREADS <= 1024);

const KINDS: [JobKind; 4] = JobKind::COMPUTE;
const VECTOR_ADD_ENTRY: &str = "aitbc_vector_add";
const REDUCE_SUM_ENTRY: &str = "aitbc_reduce_sum";

/// The built-in kernels; `AITBC_REDUCE_THREADS` is replaced by [`REDUCE_BLOCK_THREADS`].
const BUILTIN_SOURCE: &str = r#"
extern "C" __global__ void aitbc_vector_add(const float* __restrict__ a, const float* __restrict__ b,
                                            float* __restrict__ c, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        c[i] = a[i] + b[i];
    }
}

extern "C" __global__ void aitbc_reduce_sum(const float* __restrict__ x, unsigned long long n,
                                            double* __restrict__ partial) {
    __shared__ double sums[AITBC_REDUCE_THREADS];
    double acc = 0.0;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        acc += (double)x[i];
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int width = blockDim.x / 2; width > 0; width >>= 1) {
        if (threadIdx.x < width) {
            sums[threadIdx.x] += sums[threadIdx.x + width];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = sums[0];
    }
}
"#;

fn builtin_source() -> String {
    BUILTIN_SOURCE.replace("AITBC_REDUCE_THREADS", &REDUCE_BLOCK_THREADS.to_string())
}

/// What the backend's GPU is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The device ordinal.
    pub index: usize,
    /// The driver's name for it.
    pub name: String,
    /// Total device memory, bytes.
    pub total_memory_bytes: u64,
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// (major, minor).
    pub compute_capability: (u32, u32),
    /// The CUDA version the driver supports, (major, minor).
    pub driver_version: (u32, u32),
}

/// How the kernel cache has fared since the backend was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCacheStats {
    /// Modules held now.
    pub entries: usize,
    /// Kernel jobs whose source was already compiled.
    pub hits: u64,
    /// Kernel jobs that compiled their source.
    pub misses: u64,
}

/// One timed run of back-to-back cuBLAS GEMMs ([`CudaBackend::measure_gemm`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmMeasurement {
    /// The element type of A and B (C is f32).
    pub dtype: Dtype,
    /// m = n = k.
    pub dim: u32,
    /// GEMMs timed.
    pub iterations: u32,
    /// Device time per GEMM, milliseconds (CUDA events).
    pub ms_per_gemm: f64,
    /// 2 dim^3 / time, in 10^12 floating-point operations per second.
    pub tflops: f64,
}

/// A job's failure, and whether it left the device unusable (so the context must be retired).
struct Failure {
    error: RunError,
    poisoned: bool,
}

impl From<RunError> for Failure {
    fn from(error: RunError) -> Self {
        Failure { error, poisoned: false }
    }
}

fn device_failure(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure { error: RunError::Device(format!("{what}: {error}")), poisoned: true }
}

/// Errors a client kernel causes itself (bad launch configuration, faults, traps): the job's
/// fault, not the device's.
fn is_kernel_fault(error: &DriverError) -> bool {
    use driver_sys::cudaError_enum as E;
    matches!(
        error.0,
        E::CUDA_ERROR_ILLEGAL_ADDRESS
            | E::CUDA_ERROR_LAUNCH_FAILED
            | E::CUDA_ERROR_MISALIGNED_ADDRESS
            | E::CUDA_ERROR_ILLEGAL_INSTRUCTION
            | E::CUDA_ERROR_INVALID_PC
            | E::CUDA_ERROR_INVALID_ADDRESS_SPACE
            | E::CUDA_ERROR_HARDWARE_STACK_ERROR
            | E::CUDA_ERROR_ASSERT
            | E::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
            | E::CUDA_ERROR_LAUNCH_TIMEOUT
            | E::CUDA_ERROR_INVALID_VALUE
    )
}

fn kernel_failure(what: &str, error: DriverError) -> Failure {
    if is_kernel_fault(&error) {
        Failure { error: RunError::KernelFault(format!("{what}: {error}")), poisoned: true }
    } else {
        device_failure(what, error)
    }
}

/// A launch the driver refused outright (bad configuration, too many registers or shared
/// memory for the block): the kernel's fault, but nothing ran and the context is still usable.
fn launch_failure(error: DriverError) -> Failure {
    use driver_sys::cudaError_enum as E;
    let refused = matches!(error.0, E::CUDA_ERROR_INVALID_VALUE | E::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    let mut failure = kernel_failure("launching the kernel", error);
    if refused {
        failure.poisoned = false;
    }
    failure
}

fn alloc_failure(error: DriverError, needed_bytes: u64, free_bytes: u64) -> Failure {
    if error.0 == driver_sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        // Not sticky: the context stays usable.
        Failure { error: RunError::OutOfMemory { needed_bytes, free_bytes }, poisoned: false }
    } else {
        device_failure("allocating device memory", error)
    }
}

/// Refuses kernel sources the compiler cannot take or that could read the provider's files.
///
/// NVRTC reads any file a source `#include`s (or probes with `__has_include`), and its error
/// log would carry the file's lines back to the client. Directives can be hidden from a naive
/// scan by line splices (`#inc\<newline>lude`), comments between `#` and the directive name,
/// trigraphs (`??=`) or universal character names, so the rule is blunt: after removing line
/// splices, the text may not contain `include` or `embed` anywhere, nor `\u`/`\U` escapes.
/// Kernels needing headers are not supported.
pub fn check_kernel_source(source: &str) -> Result<(), SpecError> {
    let refuse = |reason: &str| Err(SpecError { field: "source", reason: reason.to_string() });
    if source.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let spliced = source.replace("\\\r\n", "").replace("\\\n", "");
    if spliced.contains("include") || spliced.contains("embed") {
        return refuse("may not include files (no `include` or `embed` anywhere in the source)");
    }
    if spliced.contains("\\u") || spliced.contains("\\U") {
        return refuse("may not contain universal character names (\\u, \\U)");
    }
    Ok(())
}

fn truncate_log(mut log: String) -> String {
    if log.len() > COMPILE_LOG_BYTES_MAX {
        let mut cut = COMPILE_LOG_BYTES_MAX;
        while !log.is_char_boundary(cut) {
            cut -= 1;
        }
        log.truncate(cut);
        log.push_str("\n... (log truncated)");
    }
    log
}

/// Compiles `source` to PTX with NVRTC on a thread of its own, waiting at most until
/// `deadline` (NVRTC cannot be interrupted; a compile that outlives it finishes unobserved).
/// cudarc's NVRTC wrapper unwraps a few internal results, so a panic there is caught and
/// reported rather than taking the worker down.
fn compile_with_deadline(source: String, deadline: Instant, timeout_ms: u64, in_flight: &Arc<AtomicUsize>) -> Result<Ptx, RunError> {
    let alive = in_flight.fetch_add(1, Ordering::SeqCst);
    if alive >= COMPILES_IN_FLIGHT_MAX {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(RunError::Device(format!("{alive} kernel compilations are still running past their deadlines")));
    }
    let (sender, receiver) = mpsc::sync_channel(1);
    let counter = Arc::clone(in_flight);
    let spawned = std::thread::Builder::new().name("aitbc-nvrtc".into()).spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cudarc::nvrtc::compile_ptx(&source)));
        counter.fetch_sub(1, Ordering::SeqCst);
        // The receiver is gone if the job already timed out; nothing to tell then.
        let _ = sender.send(outcome);
    });
    if let Err(error) = spawned {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(RunError::Device(format!("starting the compiler thread: {error}")));
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    match receiver.recv_timeout(wait) {
        Ok(Ok(Ok(ptx))) => Ok(ptx),
        Ok(Ok(Err(CompileError::CompileError { log, .. }))) => {
            Err(RunError::Compile { log: truncate_log(log.to_string_lossy().into_owned()) })
        }
        Ok(Ok(Err(other))) => Err(RunError::Device(format!("NVRTC failed: {other}"))),
        Ok(Err(_panic)) => Err(RunError::Device("NVRTC panicked while compiling".into())),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(RunError::Timeout { timeout_ms }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(RunError::Device("the compiler thread ended without a result".into())),
    }
}

/// Compiled client modules (`T`) by the SHA-256 of their source, least recently used evicted.
/// Generic so its bookkeeping can be tested without a GPU.
struct KernelCache<T> {
    entries: HashMap<[u8; 32], (T, u64)>,
    clock: u64,
}

impl<T: Clone> KernelCache<T> {
    fn new() -> Self {
        KernelCache { entries: HashMap::with_capacity(KERNEL_CACHE_ENTRIES_MAX), clock: 0 }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<T> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    fn insert(&mut self, key: [u8; 32], value: T) {
        if self.entries.len() >= KERNEL_CACHE_ENTRIES_MAX && !self.entries.contains_key(&key) {
            let oldest = *self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k).expect("the cache is full, so not empty");
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.entries.insert(key, (value, self.clock));
        assert!(self.entries.len() <= KERNEL_CACHE_ENTRIES_MAX);
    }
}

/// Everything that lives in one CUDA context. Fields drop in declaration order: buffers of
/// abandoned jobs first, the context last.
struct Device {
    /// Buffers of jobs that failed while the device may still use them: dropped with the device.
    graveyard: Vec<Box<dyn Any + Send>>,
    kernels: KernelCache<Arc<CudaModule>>,
    vector_add: CudaFunction,
    reduce_sum: CudaFunction,
    blas: CudaBlas,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

impl Device {
    /// Opens the device state; a panic inside cudarc (it panics on a driver symbol it cannot
    /// load, for one) becomes an error here rather than taking the worker down.
    fn open(ordinal: usize, builtin: &Ptx) -> Result<Device, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Device::open_unguarded(ordinal, builtin)))
            .unwrap_or_else(|_| Err("the CUDA driver wrapper panicked while opening the device".to_string()))
    }

    fn open_unguarded(ordinal: usize, builtin: &Ptx) -> Result<Device, String> {
        let ctx = CudaContext::new_non_primary(ordinal, 0).map_err(|e| format!("creating a context: {e}"))?;
        // SAFETY: every buffer of this context is used on the one stream created below, in
        // stream order, so cudarc need not track uses across streams with events.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| format!("creating a stream: {e}"))?;
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(|e| format!("creating a cuBLAS handle: {e}"))?;
        let module = ctx.load_module(builtin.clone()).map_err(|e| format!("loading the built-in kernels: {e}"))?;
        let vector_add = module.load_function(VECTOR_ADD_ENTRY).map_err(|e| format!("{VECTOR_ADD_ENTRY}: {e}"))?;
        let reduce_sum = module.load_function(REDUCE_SUM_ENTRY).map_err(|e| format!("{REDUCE_SUM_ENTRY}: {e}"))?;
        Ok(Device { graveyard: Vec::new(), kernels: KernelCache::new(), vector_add, reduce_sum, blas, stream, ctx })
    }

    /// Keeps a failed job's buffers until the device is retired when the failure may have left
    /// work running on them (freeing them now could block on that work); otherwise frees them.
    fn keep_if_poisoned(&mut self, failure: &Failure, buffers: impl Any + Send) {
        if failure.poisoned {
            self.graveyard.push(Box::new(buffers));
        }
    }

    fn timing_event(&self) -> Result<CudaEvent, Failure> {
        self.stream
            .record_event(Some(driver_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| device_failure("recording an event", e))
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>, DriverError> {
        self.stream.clone_htod(host)
    }
}

/// Polls `end` until it completes or `deadline` passes, pausing between polls (doubling from
/// [`EVENT_POLL_INTERVAL_MIN_US`] to [`EVENT_POLL_INTERVAL_MAX_US`]) so a long job does not
/// spin a core. A timeout poisons the device: the work is still running on it.
fn await_event(end: &CudaEvent, deadline: Instant, timeout_ms: u64, kernel: bool) -> Result<(), Failure> {
    let mut pause = Duration::from_micros(EVENT_POLL_INTERVAL_MIN_US);
    loop {
        match end.try_is_complete() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) if kernel => return Err(kernel_failure("running the kernel", error)),
            Err(error) => return Err(device_failure("running the job", error)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure { error: RunError::Timeout { timeout_ms }, poisoned: true });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_micros(EVENT_POLL_INTERVAL_MAX_US));
    }
}

/// Elapsed GPU time between two completed events.
fn event_ms(start: &CudaEvent, end: &CudaEvent) -> Result<f32, Failure> {
    let ms = start.elapsed_ms(end).map_err(|e| device_failure("reading the job's events", e))?;
    assert!(ms.is_finite() && ms >= 0.0, "CUDA events gave {ms} ms");
    Ok(ms)
}

/// A GEMM's inputs on the device: f32, or the 16-bit encodings of f16/bf16.
enum GemmInputs {
    F32 { a: CudaSlice<f32>, b: CudaSlice<f32> },
    Half { dtype: Dtype, a: CudaSlice<u16>, b: CudaSlice<u16> },
}

/// Enqueues `C = A B` (row-major m x k times k x n) as the column-major `C^T = B^T A^T`.
fn enqueue_gemm(device: &Device, inputs: &GemmInputs, c: &mut CudaSlice<f32>, (m, n, k): (u32, u32, u32)) -> Result<(), Failure> {
    assert!(m <= GEMM_DIM_MAX && n <= GEMM_DIM_MAX && k <= GEMM_DIM_MAX);
    assert_eq!(c.len() as u64, u64::from(m) * u64::from(n));
    // GEMM_DIM_MAX fits a C int, which cuBLAS takes.
    let (m, n, k) = (m as i32, n as i32, k as i32);
    let op = blas_sys::cublasOperation_t::CUBLAS_OP_N;
    match inputs {
        GemmInputs::F32 { a, b } => {
            let cfg = GemmConfig { transa: op, transb: op, m: n, n: m, k, alpha: 1.0f32, lda: n, ldb: k, beta: 0.0f32, ldc: n };
            // SAFETY: B is k x n (ld n) and A is m x k (ld k) elements as allocated from the
            // validated spec, C is m x n (ld n); all three live on this handle's stream.
            unsafe { device.blas.gemm(cfg, b, a, c) }.map_err(|e| device_failure("cublasSgemm", e))
        }
        GemmInputs::Half { dtype, a, b } => {
            let data_type = match dtype {
                Dtype::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
                Dtype::Bf16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
                Dtype::F32 => unreachable!("f32 inputs are GemmInputs::F32"),
            };
            let (alpha, beta) = (1.0f32, 0.0f32);
            let (a_ptr, _a_record) = a.device_ptr(&device.stream);
            let (b_ptr, _b_record) = b.device_ptr(&device.stream);
            let (c_ptr, _c_record) = c.device_ptr_mut(&device.stream);
            // SAFETY: as for Sgemm; A and B hold 16-bit values of `data_type`, C f32, alpha and
            // beta are f32 as CUBLAS_COMPUTE_32F requires, and live until the call returns
            // (cuBLAS reads host scalars before returning in the default pointer mode).
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *device.blas.handle(),
                    op,
                    op,
                    n,
                    m,
                    k,
                    (&alpha) as *const f32 as *const c_void,
                    b_ptr as *const c_void,
                    data_type,
                    n,
                    a_ptr as *const c_void,
                    data_type,
                    k,
                    (&beta) as *const f32 as *const c_void,
                    c_ptr as *mut c_void,
                    blas_sys::cudaDataType_t::CUDA_R_32F,
                    n,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| device_failure("cublasGemmEx", e))
        }
    }
}

/// Uploads a GEMM operand: `values` (f32) as f32, or rounded to f16/bf16.
fn upload_operand(device: &Device, dtype: Dtype, values: &[f32]) -> Result<GemmOperand, DriverError> {
    match dtype {
        Dtype::F32 => device.upload(values).map(GemmOperand::F32),
        Dtype::F16 | Dtype::Bf16 => device.stream.clone_htod(half_bits(dtype, values).as_slice()).map(GemmOperand::Half),
    }
}

enum GemmOperand {
    F32(CudaSlice<f32>),
    Half(CudaSlice<u16>),
}

fn gemm_inputs(dtype: Dtype, a: GemmOperand, b: GemmOperand) -> GemmInputs {
    match (a, b) {
        (GemmOperand::F32(a), GemmOperand::F32(b)) => GemmInputs::F32 { a, b },
        (GemmOperand::Half(a), GemmOperand::Half(b)) => GemmInputs::Half { dtype, a, b },
        _ => unreachable!("both operands are uploaded with the same dtype"),
    }
}

/// A kernel argument on the device side.
enum DeviceArg {
    Buffer { slice: CudaSlice<f32>, output: bool },
    U32(u32),
    F32(f32),
}

/// Per-job context the kind functions share.
struct Job {
    deadline: Instant,
    timeout_ms: u64,
    host_threads: usize,
    free_bytes: u64,
}

impl Job {
    fn generated(&self, seed: u64, stream: u64, len: usize) -> Result<Vec<f32>, RunError> {
        let mut values = vec![0.0f32; len];
        generate_into(seed, stream, &mut values, self.host_threads, self.deadline, self.timeout_ms)?;
        Ok(values)
    }
}

fn run_vector_add(device: &mut Device, job: &Job, n: u64, seed: u64) -> Result<(Vec<f32>, f32), Failure> {
    let len = n as usize;
    let bytes = 12 * n;
    let a = device.upload(&job.generated(seed, 0, len)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let b = device.upload(&job.generated(seed, 1, len)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let mut c = device.stream.alloc_zeros::<f32>(len).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let blocks = n.div_ceil(u64::from(VECTOR_BLOCK_THREADS)).min(u64::from(VECTOR_GRID_BLOCKS_MAX)) as u32;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (VECTOR_BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 };
    let start = device.timing_event()?;
    let launched = {
        let mut launch = device.stream.launch_builder(&device.vector_add);
        launch.arg(&a).arg(&b).arg(&mut c).arg(&n);
        // SAFETY: aitbc_vector_add(const float*, const float*, float*, unsigned long long) with
        // three buffers of n elements each.
        unsafe { launch.launch(cfg) }
    };
    let end = launched.map_err(|e| device_failure("launching vector_add", e)).and_then(|_| device.timing_event());
    let waited = end.and_then(|end| await_event(&end, job.deadline, job.timeout_ms, false).map(|()| end));
    let end = match waited {
        Ok(end) => end,
        Err(failure) => {
            device.keep_if_poisoned(&failure, (a, b, c));
            return Err(failure);
        }
    };
    let ms = event_ms(&start, &end)?;
    let result = device.stream.clone_dtoh(&c).map_err(|e| device_failure("downloading the result", e))?;
    Ok((result, ms))
}

fn run_reduction(device: &mut Device, job: &Job, n: u64, seed: u64) -> Result<(Vec<f32>, f32), Failure> {
    let len = n as usize;
    let blocks = n.div_ceil(u64::from(REDUCE_BLOCK_THREADS)).min(u64::from(REDUCE_GRID_BLOCKS_MAX)) as u32;
    let bytes = 4 * n + 8 * u64::from(blocks);
    let x = device.upload(&job.generated(seed, 0, len)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let mut partials = device.stream.alloc_zeros::<f64>(blocks as usize).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (REDUCE_BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 };
    let start = device.timing_event()?;
    let launched = {
        let mut launch = device.stream.launch_builder(&device.reduce_sum);
        launch.arg(&x).arg(&n).arg(&mut partials);
        // SAFETY: aitbc_reduce_sum(const float*, unsigned long long, double*) with n floats and
        // one double per block; the block size is the kernel's static shared array size.
        unsafe { launch.launch(cfg) }
    };
    let end = launched.map_err(|e| device_failure("launching reduction", e)).and_then(|_| device.timing_event());
    let waited = end.and_then(|end| await_event(&end, job.deadline, job.timeout_ms, false).map(|()| end));
    let end = match waited {
        Ok(end) => end,
        Err(failure) => {
            device.keep_if_poisoned(&failure, (x, partials));
            return Err(failure);
        }
    };
    let ms = event_ms(&start, &end)?;
    let partials = device.stream.clone_dtoh(&partials).map_err(|e| device_failure("downloading the partial sums", e))?;
    // Exact in f64 for generated inputs (see the module comment), so the order does not matter.
    let sum: f64 = partials.iter().sum();
    Ok((vec![sum as f32], ms))
}

#[allow(clippy::too_many_arguments)]
fn run_gemm(
    device: &mut Device,
    job: &Job,
    (m, n, k): (u32, u32, u32),
    dtype: Dtype,
    seed: u64,
    a_input: &MatrixInput,
    b_input: &MatrixInput,
) -> Result<(Vec<f32>, f32), Failure> {
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let bytes = dtype.size_bytes() * (u64::from(m) * u64::from(k) + u64::from(k) * u64::from(n)) + 4 * u64::from(m) * u64::from(n);
    let host = |input: &MatrixInput, stream: u64, len: usize| -> Result<Vec<f32>, RunError> {
        match input {
            MatrixInput::Seed => job.generated(seed, stream, len),
            MatrixInput::Inline { values } => {
                assert_eq!(values.len(), len, "validate() checks inline sizes");
                Ok(values.clone())
            }
        }
    };
    let a = upload_operand(device, dtype, &host(a_input, 0, mu * ku)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let b = upload_operand(device, dtype, &host(b_input, 1, ku * nu)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let inputs = gemm_inputs(dtype, a, b);
    let mut c = device.stream.alloc_zeros::<f32>(mu * nu).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
    let start = device.timing_event()?;
    let end = enqueue_gemm(device, &inputs, &mut c, (m, n, k)).and_then(|()| device.timing_event());
    let waited = end.and_then(|end| await_event(&end, job.deadline, job.timeout_ms, false).map(|()| end));
    let end = match waited {
        Ok(end) => end,
        Err(failure) => {
            device.keep_if_poisoned(&failure, (inputs, c));
            return Err(failure);
        }
    };
    let ms = event_ms(&start, &end)?;
    let result = device.stream.clone_dtoh(&c).map_err(|e| device_failure("downloading C", e))?;
    Ok((result, ms))
}

struct KernelJob<'a> {
    source: &'a str,
    entry_point: &'a str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &'a [KernelArg],
    seed: u64,
}

fn run_kernel(
    device: &mut Device,
    job: &Job,
    kernel: &KernelJob<'_>,
    compiles: &Arc<AtomicUsize>,
    stats: &mut KernelCacheStats,
) -> Result<(Vec<f32>, f32), Failure> {
    check_kernel_source(kernel.source).map_err(RunError::Invalid)?;
    let key: [u8; 32] = Sha256::digest(kernel.source.as_bytes()).into();
    let module = match device.kernels.get(&key) {
        Some(module) => {
            stats.hits += 1;
            module
        }
        None => {
            stats.misses += 1;
            let ptx = compile_with_deadline(kernel.source.to_string(), job.deadline, job.timeout_ms, compiles)?;
            let module = device.ctx.load_module(ptx).map_err(|e| {
                use driver_sys::cudaError_enum as E;
                match e.0 {
                    // The PTX JIT refused what NVRTC produced: the source's fault.
                    E::CUDA_ERROR_INVALID_PTX | E::CUDA_ERROR_UNSUPPORTED_PTX_VERSION | E::CUDA_ERROR_NO_BINARY_FOR_GPU | E::CUDA_ERROR_INVALID_IMAGE => {
                        Failure::from(RunError::Compile { log: format!("loading the compiled module: {e}") })
                    }
                    _ => device_failure("loading the compiled module", e),
                }
            })?;
            device.kernels.insert(key, Arc::clone(&module));
            module
        }
    };
    stats.entries = device.kernels.len();
    let function = module.load_function(kernel.entry_point).map_err(|e| {
        if e.0 == driver_sys::cudaError_enum::CUDA_ERROR_NOT_FOUND {
            Failure::from(RunError::Compile {
                log: format!("entry point `{}` not found: declare it `extern \"C\" __global__`", kernel.entry_point),
            })
        } else {
            device_failure("loading the entry point", e)
        }
    })?;

    let bytes: u64 = kernel.args.iter().map(|arg| if let KernelArg::Buffer { elements, .. } = arg { 4 * elements } else { 0 }).sum();
    let mut args = Vec::with_capacity(kernel.args.len());
    // Seeded buffers draw from stream 0, 1, ... in the order of the buffers among the arguments.
    let mut buffer_ordinal = 0u64;
    for arg in kernel.args {
        match arg {
            KernelArg::Buffer { elements, init, output } => {
                let len = *elements as usize;
                let slice = match init {
                    BufferInit::Zeros => device.stream.alloc_zeros::<f32>(len),
                    BufferInit::Seed => device.upload(&job.generated(kernel.seed, buffer_ordinal, len)?),
                    BufferInit::Inline { values } => device.upload(values),
                }
                .map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
                buffer_ordinal += 1;
                args.push(DeviceArg::Buffer { slice, output: *output });
            }
            KernelArg::U32 { value } => args.push(DeviceArg::U32(*value)),
            KernelArg::F32 { value } => args.push(DeviceArg::F32(*value)),
        }
    }
    let [gx, gy, gz] = kernel.grid;
    let [bx, by, bz] = kernel.block;
    let cfg = LaunchConfig { grid_dim: (gx, gy, gz), block_dim: (bx, by, bz), shared_mem_bytes: 0 };
    let start = device.timing_event()?;
    let launched = {
        let mut launch = device.stream.launch_builder(&function);
        for arg in args.iter_mut() {
            match arg {
                DeviceArg::Buffer { slice, .. } => launch.arg(slice),
                DeviceArg::U32(value) => launch.arg(&*value),
                DeviceArg::F32(value) => launch.arg(&*value),
            };
        }
        // SAFETY: the arguments are pushed in the job's order with the job's types; a kernel
        // whose signature does not match them gets wrong values or faults on the device, which
        // surfaces as a kernel fault and retires the context. Buffers outlive the launch (they
        // are kept until the context is retired if the job fails while they may be in use).
        unsafe { launch.launch(cfg) }
    };
    let end = launched.map_err(launch_failure).and_then(|_| device.timing_event());
    let waited = end.and_then(|end| await_event(&end, job.deadline, job.timeout_ms, true).map(|()| end));
    let end = match waited {
        Ok(end) => end,
        Err(failure) => {
            device.keep_if_poisoned(&failure, args);
            return Err(failure);
        }
    };
    let ms = event_ms(&start, &end)?;
    let mut result = Vec::new();
    for arg in &args {
        if let DeviceArg::Buffer { slice, output: true } = arg {
            result.extend(device.stream.clone_dtoh(slice).map_err(|e| device_failure("downloading an output buffer", e))?);
        }
    }
    Ok((result, ms))
}

/// The CUDA backend on one GPU. See the module comment for what it does and how it meters.
pub struct CudaBackend {
    info: CudaDeviceInfo,
    builtin_ptx: Ptx,
    /// `None` after a failure retired the device; rebuilt before the next job.
    device: Option<Device>,
    /// Retired devices whose teardown has not finished (or never will: a leaked one).
    reapers: Arc<AtomicUsize>,
    /// NVRTC threads alive.
    compiles: Arc<AtomicUsize>,
    host_threads: usize,
    stats: KernelCacheStats,
    last_event_ms: Option<f32>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend").field("info", &self.info).field("ready", &self.device.is_some()).field("stats", &self.stats).finish()
    }
}

impl CudaBackend {
    /// The backend on GPU `index`: probes CUDA first ([`probe_cuda`]: cudarc is never called
    /// where its libraries are missing), then creates the context, stream, cuBLAS handle and
    /// built-in kernels.
    pub fn new(index: usize) -> Result<CudaBackend, SelectError> {
        match probe_cuda() {
            CudaAvailability::Unavailable { reason } => return Err(SelectError::CudaUnavailable { reason }),
            CudaAvailability::Available { devices } if index >= devices => return Err(SelectError::NoSuchDevice { index, devices }),
            CudaAvailability::Available { .. } => {}
        }
        let init = |reason: String| SelectError::CudaInit { index, reason };
        let compiles = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_millis(MEASURE_TIMEOUT_MS);
        let builtin_ptx = compile_with_deadline(builtin_source(), deadline, MEASURE_TIMEOUT_MS, &compiles)
            .map_err(|e| init(format!("compiling the built-in kernels: {e}")))?;
        let device = Device::open(index, &builtin_ptx).map_err(init)?;
        let info = read_info(index, &device.ctx).map_err(|e| init(format!("reading device attributes: {e}")))?;
        Ok(CudaBackend {
            info,
            builtin_ptx,
            device: Some(device),
            reapers: Arc::new(AtomicUsize::new(0)),
            compiles,
            host_threads: host_threads_default(),
            stats: KernelCacheStats::default(),
            last_event_ms: None,
        })
    }

    /// What the GPU is.
    pub fn info(&self) -> &CudaDeviceInfo {
        &self.info
    }

    /// How the kernel cache has fared.
    pub fn kernel_cache_stats(&self) -> KernelCacheStats {
        self.stats
    }

    /// The unrounded event time of the last job that completed, milliseconds: what its
    /// `device_ms` was rounded up from.
    pub fn last_event_ms(&self) -> Option<f32> {
        self.last_event_ms
    }

    fn ready_device(&mut self) -> Result<&mut Device, RunError> {
        if self.device.is_none() {
            let pending = self.reapers.load(Ordering::SeqCst);
            if pending >= REAPERS_IN_FLIGHT_MAX {
                return Err(RunError::Device(format!(
                    "{pending} retired contexts on GPU {} are still being torn down (kernels past their timeouts?); refusing work until they finish or the worker restarts",
                    self.info.index
                )));
            }
            self.device = Some(Device::open(self.info.index, &self.builtin_ptx).map_err(RunError::Device)?);
        }
        Ok(self.device.as_mut().expect("the device was just opened"))
    }

    /// Hands the device state to a reaper thread (see the module comment); the next job builds
    /// a new one. If no thread can be started, the state is leaked rather than dropped here,
    /// because dropping it may block on a kernel that never ends.
    fn retire_device(&mut self) {
        let Some(device) = self.device.take() else { return };
        // The cached modules belonged to the retired context.
        self.stats.entries = 0;
        self.reapers.fetch_add(1, Ordering::SeqCst);
        let reapers = Arc::clone(&self.reapers);
        let device = ManuallyDrop::new(device);
        let spawned = std::thread::Builder::new().name("aitbc-cuda-reaper".into()).spawn(move || {
            let device = ManuallyDrop::into_inner(device);
            // Drops bind the context themselves; binding first makes cuBLAS's teardown (which
            // does not) act on the right one. cudarc unwraps cuBLAS's teardown status, which a
            // faulted context may fail: a panic here must not leave the count raised forever.
            let _ = device.ctx.bind_to_thread();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(device)));
            reapers.fetch_sub(1, Ordering::SeqCst);
        });
        // On failure the closure, and with it the ManuallyDrop, is dropped: the device leaks
        // and stays counted in `reapers`.
        let _ = spawned;
    }

    /// Times `iterations` back-to-back cuBLAS GEMMs of `dim` cubed in `dtype` on this backend's
    /// stream (after one untimed warm-up), with the same call a `gemm` job makes: the figure
    /// `assess` reports and the bench compares jobs against.
    pub fn measure_gemm(&mut self, dtype: Dtype, dim: u32, iterations: u32) -> Result<GemmMeasurement, RunError> {
        assert!((1..=GEMM_DIM_MAX).contains(&dim), "dim {dim} outside 1..={GEMM_DIM_MAX}");
        assert!((1..=MEASURE_ITERATIONS_MAX).contains(&iterations), "iterations {iterations} outside 1..={MEASURE_ITERATIONS_MAX}");
        let host_threads = self.host_threads;
        let device = self.ready_device()?;
        let (free, _) = device.ctx.mem_get_info().map_err(|e| RunError::Device(format!("querying free memory: {e}")))?;
        let d = u64::from(dim);
        let bytes = 2 * dtype.size_bytes() * d * d + 4 * d * d;
        if bytes + DEVICE_MEMORY_HEADROOM_BYTES > free as u64 {
            return Err(RunError::OutOfMemory { needed_bytes: bytes, free_bytes: free as u64 });
        }
        let deadline = Instant::now() + Duration::from_millis(MEASURE_TIMEOUT_MS);
        let job = Job { deadline, timeout_ms: MEASURE_TIMEOUT_MS, host_threads, free_bytes: free as u64 };
        let outcome = (|| -> Result<f32, Failure> {
            let len = (d * d) as usize;
            let a = upload_operand(device, dtype, &job.generated(1, 0, len)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
            let b = upload_operand(device, dtype, &job.generated(1, 1, len)?).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
            let inputs = gemm_inputs(dtype, a, b);
            let mut c = device.stream.alloc_zeros::<f32>(len).map_err(|e| alloc_failure(e, bytes, job.free_bytes))?;
            let mut enqueue_all = |count: u32| -> Result<(), Failure> {
                for _ in 0..count {
                    enqueue_gemm(device, &inputs, &mut c, (dim, dim, dim))?;
                }
                Ok(())
            };
            enqueue_all(1)?;
            let start = device.timing_event()?;
            enqueue_all(iterations)?;
            let end = device.timing_event();
            let waited = end.and_then(|end| await_event(&end, job.deadline, job.timeout_ms, false).map(|()| end));
            let end = match waited {
                Ok(end) => end,
                Err(failure) => {
                    device.keep_if_poisoned(&failure, (inputs, c));
                    return Err(failure);
                }
            };
            event_ms(&start, &end)
        })();
        match outcome {
            Ok(ms) => {
                let ms_per_gemm = f64::from(ms) / f64::from(iterations);
                let flops = 2.0 * (d as f64).powi(3);
                let tflops = if ms_per_gemm > 0.0 { flops / (ms_per_gemm * 1e-3) / 1e12 } else { 0.0 };
                Ok(GemmMeasurement { dtype, dim, iterations, ms_per_gemm, tflops })
            }
            Err(failure) => {
                if failure.poisoned {
                    self.retire_device();
                }
                Err(failure.error)
            }
        }
    }
}

fn read_info(index: usize, ctx: &Arc<CudaContext>) -> Result<CudaDeviceInfo, DriverError> {
    let name = ctx.name()?;
    let total_memory_bytes = ctx.total_mem()? as u64;
    let multiprocessors = ctx.attribute(driver_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let (major, minor) = ctx.compute_capability()?;
    let mut version: std::ffi::c_int = 0;
    // SAFETY: `version` is a valid out pointer; the driver only writes it.
    unsafe { driver_sys::cuDriverGetVersion(&mut version) }.result()?;
    // The driver encodes 12.4 as 12040.
    let driver_version = ((version / 1000) as u32, ((version % 1000) / 10) as u32);
    Ok(CudaDeviceInfo {
        index,
        name,
        total_memory_bytes,
        multiprocessors: multiprocessors.max(0) as u32,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        driver_version,
    })
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn kinds(&self) -> &[JobKind] {
        &KINDS
    }

    fn run(&mut self, spec: &JobSpec, limits: &RunLimits) -> Result<JobOutput, RunError> {
        let wall_start = Instant::now();
        admit(self.name(), &KINDS, spec, limits)?;
        let host_threads = self.host_threads;
        let compiles = Arc::clone(&self.compiles);
        let mut stats = self.stats;
        let device = self.ready_device()?;
        assert!(device.graveyard.is_empty(), "a device holding a failed job's buffers is retired before the next job");
        // The context may be used from another thread than the one that made it.
        device.ctx.bind_to_thread().map_err(|e| RunError::Device(format!("binding the context: {e}")))?;
        let (free, _) = device.ctx.mem_get_info().map_err(|e| RunError::Device(format!("querying free memory: {e}")))?;
        let needed = spec.device_bytes();
        if needed.saturating_add(DEVICE_MEMORY_HEADROOM_BYTES) > free as u64 {
            return Err(RunError::OutOfMemory { needed_bytes: needed, free_bytes: free as u64 });
        }
        let job = Job { deadline: wall_start + limits.timeout(), timeout_ms: limits.timeout_ms, host_threads, free_bytes: free as u64 };
        let outcome = match spec {
            JobSpec::VectorAdd { n, seed } => run_vector_add(device, &job, *n, *seed),
            JobSpec::Reduction { n, seed } => run_reduction(device, &job, *n, *seed),
            JobSpec::Gemm { m, n, k, dtype, seed, a, b, .. } => run_gemm(device, &job, (*m, *n, *k), *dtype, *seed, a, b),
            JobSpec::Kernel { source, entry_point, grid, block, args, seed } => {
                let kernel = KernelJob { source, entry_point, grid: *grid, block: *block, args, seed: *seed };
                run_kernel(device, &job, &kernel, &compiles, &mut stats)
            }
            JobSpec::TextGeneration { .. } => unreachable!("admit() refuses text generation: the inference engine runs it"),
        };
        self.stats = stats;
        match outcome {
            Ok((result, ms)) => {
                self.last_event_ms = Some(ms);
                let device_ms = ms_ceil((f64::from(ms) * 1e6).ceil() as u128);
                Ok(job_output(self.name(), spec, limits, &result, device_ms, wall_start))
            }
            Err(failure) => {
                if failure.poisoned {
                    self.retire_device();
                }
                Err(failure.error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sources_that_could_read_files_are_refused() {
        let ok = "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }";
        assert!(check_kernel_source(ok).is_ok());
        for bad in [
            "#include </etc/passwd>\n",
            "#/**/include \"x\"\n",
            "#inc\\\nlude <x>\n",
            "#if __has_include(<x>)\n#endif\n",
            "#embed \"x\"\n",
            "#\\u0069nclude <x>\n",
            "extern \"C\" __global__ void k() {}\0",
        ] {
            let error = check_kernel_source(bad).unwrap_err();
            assert_eq!(error.field, "source", "{bad:?}");
        }
    }

    #[test]
    fn compiler_logs_are_cut_at_a_character_boundary() {
        let long = "é".repeat(COMPILE_LOG_BYTES_MAX);
        let cut = truncate_log(long);
        assert!(cut.len() <= COMPILE_LOG_BYTES_MAX + 32);
        assert!(cut.ends_with("(log truncated)"));
        assert_eq!(truncate_log("short".into()), "short");
    }

    #[test]
    fn the_kernel_cache_is_bounded_and_evicts_the_least_recently_used() {
        let key = |i: usize| -> [u8; 32] { Sha256::digest(i.to_le_bytes()).into() };
        let mut cache = KernelCache::<usize>::new();
        for i in 0..KERNEL_CACHE_ENTRIES_MAX {
            cache.insert(key(i), i);
        }
        assert_eq!(cache.len(), KERNEL_CACHE_ENTRIES_MAX);
        // Touch entry 0 so entry 1 becomes the oldest.
        assert_eq!(cache.get(&key(0)), Some(0));
        cache.insert(key(KERNEL_CACHE_ENTRIES_MAX), KERNEL_CACHE_ENTRIES_MAX);
        assert_eq!(cache.len(), KERNEL_CACHE_ENTRIES_MAX);
        assert_eq!(cache.get(&key(1)), None);
        assert_eq!(cache.get(&key(0)), Some(0));
        assert_eq!(cache.get(&key(KERNEL_CACHE_ENTRIES_MAX)), Some(KERNEL_CACHE_ENTRIES_MAX));
        // Re-inserting a present key evicts nothing.
        cache.insert(key(2), 2);
        assert_eq!(cache.len(), KERNEL_CACHE_ENTRIES_MAX);
        assert_eq!(cache.get(&key(3)), Some(3));
    }

    #[test]
    fn the_builtin_source_carries_the_block_size() {
        let source = builtin_source();
        assert!(source.contains(&format!("sums[{REDUCE_BLOCK_THREADS}]")));
        assert!(!source.contains("AITBC_REDUCE_THREADS"));
        assert!(source.contains(VECTOR_ADD_ENTRY) && source.contains(REDUCE_SUM_ENTRY));
    }
}
