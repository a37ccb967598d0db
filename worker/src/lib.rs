//! `aitbc-worker`: the compute side of aitbc's GPU worker.
//!
//! - [`backend`]: the [`Backend`] trait and its two implementations, CUDA ([`CudaBackend`],
//!   cudarc: NVRTC kernels and cuBLAS) and CPU ([`CpuBackend`]), with [`select`] to pick one.
//!   A backend runs one [`JobSpec`](aitbc_core::jobspec::JobSpec) within [`RunLimits`] and
//!   returns a metered [`JobOutput`](aitbc_core::jobspec::JobOutput).
//! - [`assess`]: what this machine offers a GPU listing: device figures, measured GEMM
//!   throughput, a performance score and the job kinds it serves.
//!
//! Running a spec:
//!
//! ```no_run
//! use aitbc_worker::{select, BackendChoice, RunLimits};
//! let spec: aitbc_core::jobspec::JobSpec =
//!     serde_json::from_str(r#"{"kind": "vector_add", "n": 1024, "seed": 42}"#).unwrap();
//! let mut backend = select(BackendChoice::Auto, 0).unwrap();
//! let output = backend.run(&spec, &RunLimits::default()).unwrap();
//! println!("{} {} ms", output.checksum, output.device_ms);
//! ```
//!
//! The queue polling, leases, heartbeats and receipt signing of DESIGN.md's worker build on
//! this and live elsewhere in the crate.

pub mod assess;
pub mod backend;

pub use backend::{
    auto_picks_cuda, probe_cuda, select, Backend, BackendChoice, CpuBackend, CudaAvailability, CudaBackend, RunError, RunLimits,
    SelectError,
};
