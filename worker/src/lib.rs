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
//! - [`agent`]: the worker loop: queue polling, claims, leases and heartbeats, receipt signing,
//!   completion through the API, graceful shutdown. [`config`]: its file, flags and environment.

pub mod agent;
pub mod assess;
pub mod backend;
pub mod config;
pub mod health;
pub mod models;
pub mod upstream;

pub use backend::{
    auto_picks_cuda, probe_cuda, select, Backend, BackendChoice, CpuBackend, CudaAvailability, CudaBackend, RunError, RunLimits,
    SelectError,
};

/// Runs the worker loop with `settings` until `shutdown` turns true.
pub async fn run(settings: config::WorkerSettings, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<agent::Stats, String> {
    let queue: std::sync::Arc<dyn aitbc_store::Queue> = match &settings.queue {
        config::QueueSource::Sqlite(path) => {
            let db = aitbc_store::SqliteDb::open(path).map_err(|e| format!("queue database {}: {e}", path.display()))?;
            std::sync::Arc::new(db.queue())
        }
        #[cfg(feature = "sqs")]
        config::QueueSource::Sqs => {
            let aws = aitbc_store::AwsConfig::from_env()?;
            std::sync::Arc::new(aitbc_store::SqsQueue::connect(&aws).await.map_err(|e| e.to_string())?)
        }
        #[cfg(not(feature = "sqs"))]
        config::QueueSource::Sqs => return Err("this build has no SQS support (feature `sqs`)".into()),
    };
    let backends = (0..settings.agent.max_concurrent_jobs)
        .map(|_| select(settings.backend, settings.gpu_index).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let client = aitbc_client::Client::new(&settings.api_url, Some(settings.api_key.clone()));
    // Loading a model takes seconds and is never billed: it happens once, before any claim.
    let mut models = tokio::task::spawn_blocking(move || models::Models::load(&settings.models)).await.map_err(|e| e.to_string())?;
    // Models on the provider's own inference server: advertised only if the server lists them.
    models.add_upstreams(&settings.upstream_models).await;
    let models = std::sync::Arc::new(models);
    let mut agent = agent::Agent::new(client, queue, settings.key, settings.agent, backends)?.with_models(models).with_gpu_index(settings.gpu_index);
    // With a config file, its quality_check is read again for each result (a change applies
    // to the next one); its value now was checked by `settings()`.
    if let Some(path) = settings.config_path {
        agent = agent.with_quality_check_file(path);
    } else if let Some(argv) = settings.quality_check {
        agent = agent.with_quality_check(argv);
    }
    agent.run(shutdown).await
}
