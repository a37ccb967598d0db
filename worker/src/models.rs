//! The language models a worker serves: loaded once from GGUF files named in its configuration,
//! each verified against the sha256 the configuration gives, and kept in memory between jobs
//! (loading is never billed). `text_generation` jobs run here, on the project's own inference
//! engine (`aitbc-inference`), beside the compute backends, or are forwarded to the provider's
//! own OpenAI-compatible server for the models configured as upstream ([`crate::upstream`]).
//!
//! A model that fails to load or to verify is not served: the worker logs why and reports only
//! the models it holds in its listings' heartbeats, so the marketplace never routes a job to a
//! model this worker cannot run.
//!
//! # Metering
//!
//! The engine reports the CPU time of the process during a generation (its thread pool is
//! process-wide). So that this is the job's own time, generations run one at a time per worker
//! ([`Models::run`] holds a lock); a compute job on a CPU backend slot running at the same time
//! would be counted too, which is why the local marketplace gives text generation listings of
//! their own. The receipt says `cpu_seconds`: this engine runs on the CPU.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aitbc_core::jobspec::{checksum_bytes, ChatMessage, FinishReason, JobOutput, JobSpec, TextOutput};
use aitbc_core::values::ModelName;
use aitbc_inference::{GenerateRequest, InferenceError, Message, Model, Prompt};
use serde::Deserialize;

use crate::backend::{ms_ceil, RunError, RunLimits};
use crate::upstream::{Upstream, UpstreamAnswer, UpstreamConfig, UpstreamRequest};
use aitbc_core::receipt::UPSTREAM_BACKEND;

/// Models one worker holds at most.
pub const MODELS_MAX: usize = 8;
/// What `JobOutput::backend` and the receipt's unit type say of this engine: it runs on the CPU.
pub const ENGINE_BACKEND: &str = "cpu";

/// A model in the worker's configuration (`[[models]]` in its TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name on the rate card and in jobs, e.g. `smollm2:135m`.
    pub name: ModelName,
    /// The GGUF file.
    pub path: PathBuf,
    /// Its sha256, hex: a file that differs is refused.
    pub sha256: String,
}

/// The models loaded and verified, by name, and those an upstream server serves.
#[derive(Default)]
pub struct Models {
    loaded: BTreeMap<ModelName, Arc<Model>>,
    upstream: BTreeMap<ModelName, Upstream>,
    /// One generation at a time: see the module's note on metering.
    running: Mutex<()>,
}

impl Models {
    /// Loads each configured model; one that fails is logged and left out.
    pub fn load(configs: &[ModelConfig]) -> Models {
        assert!(configs.len() <= MODELS_MAX, "at most {MODELS_MAX} models (checked with the configuration)");
        let mut loaded = BTreeMap::new();
        for config in configs {
            let started = Instant::now();
            match Model::load_verified(&config.path, &config.sha256) {
                Ok(model) => {
                    tracing::info!(model = %config.name, path = %config.path.display(), quantization = model.quantization(), load_ms = started.elapsed().as_millis() as u64, "model loaded");
                    loaded.insert(config.name.clone(), Arc::new(model));
                }
                Err(e) => tracing::error!(model = %config.name, path = %config.path.display(), error = %e, "model refused: not served"),
            }
        }
        Models { loaded, upstream: BTreeMap::new(), running: Mutex::new(()) }
    }

    /// Adds the models of the provider's own servers that answer and list them; one that does
    /// not is logged and left out, as a model file that fails to load is. A name the worker
    /// already serves from a file stays with the file.
    pub async fn add_upstreams(&mut self, configs: &[UpstreamConfig]) {
        for config in configs {
            if self.loaded.contains_key(&config.name) || self.upstream.contains_key(&config.name) {
                tracing::error!(model = %config.name, "upstream model refused: the name is already served");
                continue;
            }
            if self.loaded.len() + self.upstream.len() >= MODELS_MAX {
                tracing::error!(model = %config.name, "upstream model refused: at most {MODELS_MAX} models");
                continue;
            }
            let upstream = match Upstream::new(config) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(model = %config.name, error = %e, "upstream model refused: not served");
                    continue;
                }
            };
            match upstream.probe().await {
                Ok(()) => {
                    tracing::info!(model = %config.name, device = %upstream.device(), "upstream model served");
                    self.upstream.insert(config.name.clone(), upstream);
                }
                Err(e) => tracing::error!(model = %config.name, error = %e, "upstream model refused: not served"),
            }
        }
    }

    /// The names of the models held, as heartbeats report them.
    pub fn names(&self) -> Vec<ModelName> {
        let mut names: Vec<ModelName> = self.loaded.keys().chain(self.upstream.keys()).cloned().collect();
        names.sort();
        names
    }

    /// Runs a `text_generation` job, calling `on_text` with each piece of text as it is produced
    /// (for streaming); `on_text` may stop the generation.
    pub fn run(&self, spec: &JobSpec, limits: &RunLimits, on_text: &mut dyn FnMut(&str) -> ControlFlow<()>) -> Result<JobOutput, RunError> {
        limits.assert_valid();
        let wall_start = Instant::now();
        let JobSpec::TextGeneration { model, prompt, messages, max_tokens, temperature, top_p, seed, stop } = spec else {
            return Err(RunError::Unsupported { backend: "inference", kind: spec.kind() });
        };
        spec.validate()?;
        if let Some(upstream) = self.upstream.get(model) {
            let request = UpstreamRequest { prompt: prompt.as_deref(), messages: messages.as_deref(), max_tokens: *max_tokens, temperature: *temperature, top_p: *top_p, seed: *seed, stop };
            // Called on a blocking thread of the worker's runtime (the agent's spawn_blocking).
            let answer = tokio::runtime::Handle::current().block_on(upstream.generate(&request, wall_start + limits.timeout()))?;
            // The whole answer at once: see `upstream`'s note on streaming.
            let _ = on_text(&answer.text);
            return Ok(upstream_output(upstream, answer, wall_start));
        }
        let engine = self.loaded.get(model).ok_or_else(|| RunError::Invalid(aitbc_core::jobspec::SpecError { field: "model", reason: format!("this worker has not loaded {model}") }))?;
        let prompt = match (prompt, messages) {
            (Some(text), _) => Prompt::Text(text.clone()),
            (None, Some(messages)) => Prompt::Messages(messages.iter().map(message).collect()),
            (None, None) => unreachable!("validate() requires a prompt or messages"),
        };
        let request = GenerateRequest { prompt, max_tokens: *max_tokens, temperature: *temperature, top_p: *top_p, seed: *seed, stop: stop.clone() };
        let _one_at_a_time = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let generation = engine.generate(&request, wall_start + limits.timeout(), on_text).map_err(run_error)?;
        let text = TextOutput {
            finish_reason: match generation.finish_reason {
                aitbc_inference::FinishReason::Stop => FinishReason::Stop,
                aitbc_inference::FinishReason::Length => FinishReason::Length,
                aitbc_inference::FinishReason::Timeout => FinishReason::Timeout,
            },
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.completion_tokens,
            load_ms: 0,
            prefill_ms: generation.prefill_ms,
            decode_ms: generation.decode_ms,
            device: generation.device.clone(),
            text: generation.text,
        };
        Ok(JobOutput {
            checksum: checksum_bytes(text.text.as_bytes()),
            values: Vec::new(),
            backend: ENGINE_BACKEND.to_string(),
            device_ms: ms_ceil(u128::from(generation.cpu_ns)),
            wall_ms: ms_ceil(wall_start.elapsed().as_nanos()),
            text: Some(text),
        })
    }
}

/// An upstream answer as a job's output: metered as the request's wall time (the receipt says
/// `wall_seconds`), the server's token counts, the server as the device. The server does not
/// split its time, so all of it is `decode_ms`.
fn upstream_output(upstream: &Upstream, answer: UpstreamAnswer, wall_start: Instant) -> JobOutput {
    let text = TextOutput {
        finish_reason: answer.finish_reason,
        prompt_tokens: answer.prompt_tokens,
        completion_tokens: answer.completion_tokens,
        load_ms: 0,
        prefill_ms: 0,
        decode_ms: answer.wall_ms,
        device: upstream.device(),
        text: answer.text,
    };
    JobOutput {
        checksum: checksum_bytes(text.text.as_bytes()),
        values: Vec::new(),
        backend: UPSTREAM_BACKEND.to_string(),
        device_ms: answer.wall_ms,
        wall_ms: ms_ceil(wall_start.elapsed().as_nanos()),
        text: Some(text),
    }
}

fn message(m: &ChatMessage) -> Message {
    Message { role: m.role.name().to_string(), content: m.content.clone() }
}

/// The engine's refusals are the job's fault (too long for the context, bad parameters) and fail
/// it for good; anything else is this worker's and may succeed elsewhere.
fn run_error(e: InferenceError) -> RunError {
    let text = e.to_string();
    match e {
        InferenceError::Io { .. } | InferenceError::Compute(_) => RunError::Device(text),
        _ => RunError::Invalid(aitbc_core::jobspec::SpecError { field: "prompt", reason: text }),
    }
}
