//! The CPU backend: the built-in job kinds in plain Rust, for machines without a GPU and CI.
//!
//! - `vector_add`: `c[i] = a[i] + b[i]` in f32, `a` from stream 0 and `b` from stream 1 of
//!   [`generate_f32`]; the sum of two f32 is correctly rounded, so the result is bit-identical
//!   to the CUDA backend's.
//! - `reduction`: the sum of stream 0, accumulated in f64 and rounded once to f32. Generated
//!   values are multiples of 2^-23 in [-1, 1), so every partial sum of at most
//!   [`VECTOR_ELEMENTS_MAX`] (2^26) of them is a multiple of 2^-23 below 2^26 in magnitude:
//!   49 significant bits, exact in f64's 53. The sum is therefore exact whatever the order (and
//!   the thread count), and the CUDA backend, which also accumulates in f64, gets the same f32.
//! - `gemm`: `C = A x B` (row-major; A from stream 0, B from stream 1, or inline), inputs
//!   rounded to the dtype with the `half` crate (round-to-nearest-even), products and sums in
//!   f32. The loop is i-k-j over tiles of B ([`GEMM_TILE_COLS`] x [`GEMM_TILE_DEPTH`], 256 KiB,
//!   which stays in L2) with rows of C split across threads; each C element is still summed in
//!   ascending k with separate multiply and add, exactly as the naive i-j-k loop does, so the
//!   result does not depend on tiling or threads. GEMMs above [`GEMM_CPU_FMA_MAX`]
//!   multiply-adds are refused.
//! - `kernel`: refused ([`RunError::Unsupported`]).
//!
//! Metering: `device_ms` is CPU time, the calling thread's plus that of every thread spawned
//! for the job (each read with `CLOCK_THREAD_CPUTIME_ID`), input generation included, rounded
//! up to whole milliseconds. With one thread it cannot exceed the wall time; with `t` threads
//! it is at most about `t` times the wall time.
//!
//! Timeouts are cooperative: every thread checks the deadline between blocks of work (a GEMM
//! row tile, a chunk of generated elements), so a job stops within one block of its deadline.

use std::time::Instant;

use aitbc_core::jobspec::{generate_f32, Dtype, JobKind, JobOutput, JobSpec, MatrixInput, GEMM_CPU_FMA_MAX, VECTOR_ELEMENTS_MAX};

use super::inputs::{check_deadline, fork_join, generate_into, host_threads_default, round_to, split_units, thread_cpu_ns, threads_for, HOST_THREADS_MAX};
use super::{admit, job_output, ms_ceil, Backend, RunError, RunLimits};

/// Columns of B in one tile of the CPU GEMM: with [`GEMM_TILE_DEPTH`] rows, 256 x 256 f32 =
/// 256 KiB, which fits a core's L2 while the tile is reused for every row of C.
pub const GEMM_TILE_COLS: usize = 256;
/// Rows of B (the k dimension) in one tile of the CPU GEMM.
pub const GEMM_TILE_DEPTH: usize = 256;
/// Multiply-adds below which a GEMM runs on one thread: starting threads costs more.
pub const GEMM_PARALLEL_FMA_MIN: u64 = 1 << 22;
/// Rows of C a GEMM thread takes at least.
pub const GEMM_ROWS_PER_THREAD_MIN: usize = 8;

const KINDS: [JobKind; 3] = [JobKind::VectorAdd, JobKind::Reduction, JobKind::Gemm];

/// The CPU backend. Cheap to create; holds only its thread bound.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    threads: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// A backend using the machine's cores, within [`HOST_THREADS_MAX`].
    pub fn new() -> Self {
        CpuBackend { threads: host_threads_default() }
    }

    /// A backend using at most `threads` threads per job (1..=[`HOST_THREADS_MAX`]).
    pub fn with_threads(threads: usize) -> Self {
        assert!((1..=HOST_THREADS_MAX).contains(&threads), "threads {threads} outside 1..={HOST_THREADS_MAX}");
        CpuBackend { threads }
    }

    /// Threads a job may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn vector_add(&self, n: u64, seed: u64, deadline: Instant, timeout_ms: u64) -> Result<(Vec<f32>, u64), RunError> {
        assert!((1..=VECTOR_ELEMENTS_MAX).contains(&n));
        let mut c = vec![0.0f32; n as usize];
        let threads = threads_for(c.len(), self.threads);
        let (_, cpu_ns) = fork_join(split_units(&mut c, 1, threads), |(first, chunk)| {
            check_deadline(deadline, timeout_ms)?;
            for (offset, value) in chunk.iter_mut().enumerate() {
                let i = (first + offset) as u64;
                *value = generate_f32(seed, 0, i) + generate_f32(seed, 1, i);
            }
            Ok(())
        })?;
        Ok((c, cpu_ns))
    }

    fn reduction(&self, n: u64, seed: u64, deadline: Instant, timeout_ms: u64) -> Result<(Vec<f32>, u64), RunError> {
        assert!((1..=VECTOR_ELEMENTS_MAX).contains(&n));
        let n = n as usize;
        let threads = threads_for(n, self.threads);
        // Ranges as (first, len) pairs: nothing is allocated, values are generated and summed.
        let ranges: Vec<(usize, usize)> = (0..threads)
            .map(|t| {
                let first = n / threads * t + t.min(n % threads);
                let len = n / threads + usize::from(t < n % threads);
                (first, len)
            })
            .collect();
        assert_eq!(ranges.iter().map(|r| r.1).sum::<usize>(), n);
        let (partials, cpu_ns) = fork_join(ranges, |(first, len)| {
            check_deadline(deadline, timeout_ms)?;
            // Exact: see the module comment.
            Ok((first..first + len).map(|i| f64::from(generate_f32(seed, 0, i as u64))).sum::<f64>())
        })?;
        let sum: f64 = partials.iter().sum();
        Ok((vec![sum as f32], cpu_ns))
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        dtype: Dtype,
        seed: u64,
        a_input: &MatrixInput,
        b_input: &MatrixInput,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<(Vec<f32>, u64), RunError> {
        let mut cpu_ns = 0;
        let mut matrix = |input: &MatrixInput, stream: u64, len: usize| -> Result<Vec<f32>, RunError> {
            let mut values = match input {
                MatrixInput::Inline { values } => {
                    assert_eq!(values.len(), len, "validate() checks inline sizes");
                    values.clone()
                }
                MatrixInput::Seed => {
                    let mut values = vec![0.0f32; len];
                    cpu_ns += generate_into(seed, stream, &mut values, self.threads, deadline, timeout_ms)?;
                    values
                }
            };
            if dtype != Dtype::F32 {
                values.iter_mut().for_each(|v| *v = round_to(dtype, *v));
            }
            Ok(values)
        };
        let a = matrix(a_input, 0, m * k)?;
        let b = matrix(b_input, 1, k * n)?;
        let mut c = vec![0.0f32; m * n];
        let fmas = (m * n * k) as u64;
        let threads = if fmas < GEMM_PARALLEL_FMA_MIN { 1 } else { (m / GEMM_ROWS_PER_THREAD_MIN).clamp(1, self.threads) };
        let (_, gemm_ns) = fork_join(split_units(&mut c, n, threads), |(first_row, rows)| {
            gemm_rows(&a, &b, rows, first_row, (n, k), deadline, timeout_ms)
        })?;
        Ok((c, cpu_ns + gemm_ns))
    }
}

/// C rows `first_row..` (the slice `c_rows`, row-major, `n` wide) of A (`.. x k`) times B
/// (`k x n`), tiled over B; each element summed over ascending k, multiply then add.
fn gemm_rows(a: &[f32], b: &[f32], c_rows: &mut [f32], first_row: usize, (n, k): (usize, usize), deadline: Instant, timeout_ms: u64) -> Result<(), RunError> {
    assert_eq!(c_rows.len() % n, 0);
    assert_eq!(b.len(), k * n);
    let rows = c_rows.len() / n;
    assert!((first_row + rows) * k <= a.len());
    for col_start in (0..n).step_by(GEMM_TILE_COLS) {
        let col_end = (col_start + GEMM_TILE_COLS).min(n);
        // Depth tiles in ascending order keep each element's summation order ascending in k.
        for depth_start in (0..k).step_by(GEMM_TILE_DEPTH) {
            let depth_end = (depth_start + GEMM_TILE_DEPTH).min(k);
            for row in 0..rows {
                check_deadline(deadline, timeout_ms)?;
                let a_row = &a[(first_row + row) * k..][..k];
                let c_row = &mut c_rows[row * n + col_start..row * n + col_end];
                for (p, &a_value) in a_row.iter().enumerate().take(depth_end).skip(depth_start) {
                    let b_row = &b[p * n + col_start..p * n + col_end];
                    for (c_value, &b_value) in c_row.iter_mut().zip(b_row) {
                        *c_value += a_value * b_value;
                    }
                }
            }
        }
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn kinds(&self) -> &[JobKind] {
        &KINDS
    }

    fn run(&mut self, spec: &JobSpec, limits: &RunLimits) -> Result<JobOutput, RunError> {
        let wall_start = Instant::now();
        let cpu_start = thread_cpu_ns();
        admit(self.name(), &KINDS, spec, limits)?;
        if let JobSpec::Gemm { m, n, k, .. } = spec {
            let fmas = u64::from(*m) * u64::from(*n) * u64::from(*k);
            if fmas > GEMM_CPU_FMA_MAX {
                return Err(RunError::TooLarge { what: "CPU GEMM multiply-adds", needed: fmas, limit: GEMM_CPU_FMA_MAX });
            }
        }
        let deadline = wall_start + limits.timeout();
        let timeout_ms = limits.timeout_ms;
        let (result, spawned_cpu_ns) = match spec {
            JobSpec::VectorAdd { n, seed } => self.vector_add(*n, *seed, deadline, timeout_ms)?,
            JobSpec::Reduction { n, seed } => self.reduction(*n, *seed, deadline, timeout_ms)?,
            JobSpec::Gemm { m, n, k, dtype, seed, a, b, .. } => {
                self.gemm((*m as usize, *n as usize, *k as usize), *dtype, *seed, a, b, deadline, timeout_ms)?
            }
            JobSpec::Kernel { .. } => unreachable!("admit() refuses kernel jobs on the CPU backend"),
            JobSpec::TextGeneration { .. } => unreachable!("admit() refuses text generation: the inference engine runs it"),
        };
        // The checksum that follows is the worker's own work, not the job's: not metered.
        let cpu_ns = u128::from(thread_cpu_ns() - cpu_start) + u128::from(spawned_cpu_ns);
        Ok(job_output(self.name(), spec, limits, &result, ms_ceil(cpu_ns), wall_start))
    }
}
