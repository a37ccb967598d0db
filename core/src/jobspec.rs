//! Job specifications: what a client asks a GPU to run, validated before anything is allocated.
//!
//! Kinds (examples in `samples/jobs/`):
//! - `vector_add`: `c = a + b` over `n` f32 elements generated from a seed; both backends.
//! - `reduction`: the sum of `n` f32 elements generated from a seed; both backends.
//! - `gemm`: `C = A x B` with `A` m x k and `B` k x n in f32, f16 or bf16 (f32 accumulation),
//!   inputs generated from a seed or given inline; cuBLAS on CUDA, a reference loop on CPU.
//! - `kernel`: CUDA C source compiled with NVRTC, launched with the given grid and block over
//!   typed buffers; CUDA only.
//! - `text_generation`: a prompt, or chat messages rendered with the model's own template, run
//!   through a language model the worker has loaded (the `inference` crate), with sampling
//!   parameters; the result is text with its token counts and timings.
//!
//! Generated inputs are defined here ([`generate_f32`]) so both backends, the tests and any
//! client can reproduce them: element `i` of buffer `stream` from `seed` is a SplitMix64 draw
//! mapped to [-1, 1).

use crate::values::ModelName;
use serde::{Deserialize, Serialize};

/// Elements of a vector job, at most (256 MiB of f32 per buffer).
pub const VECTOR_ELEMENTS_MAX: u64 = 1 << 26;
/// Each GEMM dimension, at most.
pub const GEMM_DIM_MAX: u32 = 16_384;
/// A CPU backend refuses GEMMs above this many multiply-adds (m x n x k): about a second there.
pub const GEMM_CPU_FMA_MAX: u64 = 1 << 33;
/// Inline input values in one job, at most (1 MiB of f32 inside a 256 KiB message is already
/// impossible; this bounds the API's body parsing).
pub const INLINE_VALUES_MAX: usize = 65_536;
/// Kernel source, at most.
pub const KERNEL_SOURCE_BYTES_MAX: usize = 64 * 1024;
/// Buffers of a kernel job, at most.
pub const KERNEL_BUFFERS_MAX: usize = 16;
/// Elements of one kernel buffer, at most.
pub const KERNEL_BUFFER_ELEMENTS_MAX: u64 = 1 << 26;
/// Threads per block, at most (CUDA's limit).
pub const BLOCK_THREADS_MAX: u64 = 1_024;
/// Grid size in each dimension, at most (a conservative bound below CUDA's).
pub const GRID_DIM_MAX: u32 = 65_535;
/// Output values returned with a result, at most.
pub const RESULT_VALUES_MAX: usize = 4_096;
/// A job may ask for at most this much wall time.
pub const JOB_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// And gets this much unless it asks.
pub const JOB_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// The name of an entry point, at most.
pub const ENTRY_POINT_BYTES_MAX: usize = 128;
/// A text-generation prompt (or all its messages' contents together), at most, in bytes: far
/// more than the default model's context holds; the worker refuses what its model cannot.
pub const PROMPT_BYTES_MAX: usize = 32 * 1024;
/// Chat messages in one job, at most.
pub const MESSAGES_MAX: usize = 64;
/// Tokens a job may ask to generate, at most.
pub const MAX_TOKENS_MAX: u32 = 2_048;
/// And generates unless it asks.
pub const MAX_TOKENS_DEFAULT: u32 = 128;
/// Stop strings, at most, and the bytes of each.
pub const STOP_MAX: usize = 4;
pub const STOP_BYTES_MAX: usize = 64;
/// Sampling temperature, at most (0 is greedy).
pub const TEMPERATURE_MAX: f32 = 2.0;
/// Generated text returned with a result, at most, in bytes (a bound on the message, not on
/// the model: 2,048 tokens of text stay well below it).
pub const TEXT_BYTES_MAX: usize = 64 * 1024;
/// A running text job's output goes out in chunks (for clients' streams): bytes of text in one
/// chunk, at most, and chunks of one job, at most (numbered 0..STREAM_CHUNKS_MAX).
pub const STREAM_CHUNK_BYTES_MAX: usize = 4 * 1024;
pub const STREAM_CHUNKS_MAX: u32 = 4_096;

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

/// The job kinds, as listings name the kinds they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    VectorAdd,
    Reduction,
    Gemm,
    Kernel,
    TextGeneration,
}

impl JobKind {
    pub const ALL: [JobKind; 5] = [JobKind::VectorAdd, JobKind::Reduction, JobKind::Gemm, JobKind::Kernel, JobKind::TextGeneration];
    /// The compute kinds: what the CUDA and CPU backends run (text generation runs on an
    /// inference engine beside them).
    pub const COMPUTE: [JobKind; 4] = [JobKind::VectorAdd, JobKind::Reduction, JobKind::Gemm, JobKind::Kernel];

    pub fn name(self) -> &'static str {
        match self {
            JobKind::VectorAdd => "vector_add",
            JobKind::Reduction => "reduction",
            JobKind::Gemm => "gemm",
            JobKind::Kernel => "kernel",
            JobKind::TextGeneration => "text_generation",
        }
    }

    /// Whether the CPU compute backend runs this kind (text generation runs on the inference
    /// engine, on the CPU or elsewhere, never on a compute backend).
    pub fn runs_on_cpu(self) -> bool {
        matches!(self, JobKind::VectorAdd | JobKind::Reduction | JobKind::Gemm)
    }
}

/// A chat message of a `text_generation` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn name(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// Where a matrix's values come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum MatrixInput {
    /// Generated by [`generate_f32`] from the job's seed.
    Seed,
    /// Row-major values.
    Inline { values: Vec<f32> },
}

/// A kernel buffer's initial contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "init")]
pub enum BufferInit {
    Zeros,
    Seed,
    Inline { values: Vec<f32> },
}

/// A kernel argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum KernelArg {
    /// A device buffer of f32 elements; `output` ones are returned.
    Buffer { elements: u64, init: BufferInit, #[serde(default)] output: bool },
    /// A scalar u32 passed by value (sizes, strides).
    U32 { value: u32 },
    /// A scalar f32 passed by value.
    F32 { value: f32 },
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum JobSpec {
    VectorAdd {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 67108864))]
        n: u64,
        seed: u64,
    },
    Reduction {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 67108864))]
        n: u64,
        seed: u64,
    },
    Gemm {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16384))]
        m: u32,
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16384))]
        n: u32,
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16384))]
        k: u32,
        dtype: Dtype,
        seed: u64,
        #[serde(default = "seed_input")]
        a: MatrixInput,
        #[serde(default = "seed_input")]
        b: MatrixInput,
        /// Return up to [`RESULT_VALUES_MAX`] leading values of C.
        #[serde(default)]
        return_values: u32,
    },
    Kernel {
        source: String,
        entry_point: String,
        #[cfg_attr(feature = "openapi", schema(min_items = 3, max_items = 3))]
        grid: [u32; 3],
        #[cfg_attr(feature = "openapi", schema(min_items = 3, max_items = 3))]
        block: [u32; 3],
        args: Vec<KernelArg>,
        seed: u64,
    },
    /// Text from a language model: a `prompt`, or chat `messages` (exactly one of the two).
    TextGeneration {
        /// The model, as the rate card and the listing name it (e.g. `smollm2:135m`).
        model: ModelName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        messages: Option<Vec<ChatMessage>>,
        /// Tokens to generate, at most.
        #[serde(default = "max_tokens_default")]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2048))]
        max_tokens: u32,
        /// 0 is greedy (the default); higher samples more freely.
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 2.0))]
        temperature: f32,
        /// Nucleus sampling: the smallest set of tokens whose probabilities reach this.
        #[serde(default = "top_p_default")]
        #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, maximum = 1.0))]
        top_p: f32,
        /// The sampler's seed: the same seed and inputs give the same text on the same backend.
        #[serde(default)]
        seed: u64,
        /// Generation stops before any of these strings.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stop: Vec<String>,
    },
}

fn max_tokens_default() -> u32 {
    MAX_TOKENS_DEFAULT
}

fn top_p_default() -> f32 {
    1.0
}

fn seed_input() -> MatrixInput {
    MatrixInput::Seed
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job spec: {field}: {reason}")]
pub struct SpecError {
    pub field: &'static str,
    pub reason: String,
}

fn spec_err(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { field, reason: reason.into() }
}

fn bounded(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(spec_err(field, format!("{value} is outside {min}..={max}")))
    }
}

fn finite(field: &'static str, values: &[f32]) -> Result<(), SpecError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(spec_err(field, format!("value {i} is not finite"))),
    }
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::VectorAdd { .. } => JobKind::VectorAdd,
            JobSpec::Reduction { .. } => JobKind::Reduction,
            JobSpec::Gemm { .. } => JobKind::Gemm,
            JobSpec::Kernel { .. } => JobKind::Kernel,
            JobSpec::TextGeneration { .. } => JobKind::TextGeneration,
        }
    }

    /// The model a `text_generation` job runs.
    pub fn model(&self) -> Option<&ModelName> {
        match self {
            JobSpec::TextGeneration { model, .. } => Some(model),
            _ => None,
        }
    }

    /// Checks every bound, so a backend can allocate what the spec asks without further checks.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            JobSpec::VectorAdd { n, .. } | JobSpec::Reduction { n, .. } => bounded("n", *n, 1, VECTOR_ELEMENTS_MAX),
            JobSpec::Gemm { m, n, k, a, b, return_values, .. } => {
                for (field, dim) in [("m", m), ("n", n), ("k", k)] {
                    bounded(field, u64::from(*dim), 1, u64::from(GEMM_DIM_MAX))?;
                }
                let (m, n, k) = (u64::from(*m), u64::from(*n), u64::from(*k));
                let mut inline_total = 0usize;
                for (field, input, len) in [("a", a, m * k), ("b", b, k * n)] {
                    if let MatrixInput::Inline { values } = input {
                        if values.len() as u64 != len {
                            return Err(spec_err(field, format!("has {} values, needs {len}", values.len())));
                        }
                        finite(field, values)?;
                        inline_total += values.len();
                    }
                }
                if inline_total > INLINE_VALUES_MAX {
                    return Err(spec_err("a", format!("inline values exceed {INLINE_VALUES_MAX}")));
                }
                bounded("return_values", u64::from(*return_values), 0, (RESULT_VALUES_MAX as u64).min(m * n))
            }
            JobSpec::Kernel { source, entry_point, grid, block, args, .. } => {
                if source.is_empty() || source.len() > KERNEL_SOURCE_BYTES_MAX {
                    return Err(spec_err("source", format!("must be 1..={KERNEL_SOURCE_BYTES_MAX} bytes")));
                }
                let identifier = |s: &str| {
                    !s.is_empty()
                        && s.len() <= ENTRY_POINT_BYTES_MAX
                        && !s.as_bytes()[0].is_ascii_digit()
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                };
                if !identifier(entry_point) {
                    return Err(spec_err("entry_point", "must be a C identifier"));
                }
                for dim in grid {
                    bounded("grid", u64::from(*dim), 1, u64::from(GRID_DIM_MAX))?;
                }
                let threads: u64 = block.iter().map(|&d| u64::from(d)).product();
                if block.contains(&0) || threads > BLOCK_THREADS_MAX {
                    return Err(spec_err("block", format!("needs 1..={BLOCK_THREADS_MAX} threads, each dimension at least 1")));
                }
                if args.is_empty() || args.len() > KERNEL_BUFFERS_MAX {
                    return Err(spec_err("args", format!("needs 1..={KERNEL_BUFFERS_MAX} arguments")));
                }
                let mut inline_total = 0usize;
                let mut returned = 0u64;
                for arg in args {
                    if let KernelArg::Buffer { elements, init, output } = arg {
                        bounded("args.elements", *elements, 1, KERNEL_BUFFER_ELEMENTS_MAX)?;
                        if let BufferInit::Inline { values } = init {
                            if values.len() as u64 != *elements {
                                return Err(spec_err("args.init", format!("has {} values, needs {elements}", values.len())));
                            }
                            finite("args.init", values)?;
                            inline_total += values.len();
                        }
                        if *output {
                            returned += *elements;
                        }
                    }
                    if let KernelArg::F32 { value } = arg {
                        finite("args.value", std::slice::from_ref(value))?;
                    }
                }
                if inline_total > INLINE_VALUES_MAX {
                    return Err(spec_err("args.init", format!("inline values exceed {INLINE_VALUES_MAX}")));
                }
                if returned > RESULT_VALUES_MAX as u64 {
                    return Err(spec_err("args.output", format!("outputs exceed {RESULT_VALUES_MAX} values")));
                }
                Ok(())
            }
            JobSpec::TextGeneration { prompt, messages, max_tokens, temperature, top_p, stop, .. } => {
                let prompt_bytes = match (prompt, messages) {
                    (Some(prompt), None) => prompt.len(),
                    (None, Some(messages)) => {
                        if messages.is_empty() || messages.len() > MESSAGES_MAX {
                            return Err(spec_err("messages", format!("needs 1..={MESSAGES_MAX} messages")));
                        }
                        messages.iter().map(|m| m.content.len()).sum()
                    }
                    _ => return Err(spec_err("prompt", "give a prompt or messages, not both")),
                };
                if prompt_bytes == 0 || prompt_bytes > PROMPT_BYTES_MAX {
                    return Err(spec_err("prompt", format!("must be 1..={PROMPT_BYTES_MAX} bytes")));
                }
                bounded("max_tokens", u64::from(*max_tokens), 1, u64::from(MAX_TOKENS_MAX))?;
                if !(temperature.is_finite() && (0.0..=TEMPERATURE_MAX).contains(temperature)) {
                    return Err(spec_err("temperature", format!("must be 0..={TEMPERATURE_MAX}")));
                }
                if !(top_p.is_finite() && *top_p > 0.0 && *top_p <= 1.0) {
                    return Err(spec_err("top_p", "must be in (0, 1]"));
                }
                if stop.len() > STOP_MAX || stop.iter().any(|s| s.is_empty() || s.len() > STOP_BYTES_MAX) {
                    return Err(spec_err("stop", format!("at most {STOP_MAX} strings of 1..={STOP_BYTES_MAX} bytes")));
                }
                Ok(())
            }
        }
    }

    /// Device memory the job needs, in bytes (inputs and outputs), for per-job memory limits.
    /// Saturates at u64::MAX: a spec that has not passed [`JobSpec::validate`] may name sizes
    /// whose product overflows, and such a spec needs more memory than any limit anyway.
    pub fn device_bytes(&self) -> u64 {
        match self {
            JobSpec::VectorAdd { n, .. } => n.saturating_mul(3 * 4),
            JobSpec::Reduction { n, .. } => n.saturating_mul(4).saturating_add(4),
            JobSpec::Gemm { m, n, k, dtype, .. } => {
                // Below 2^32 each, so each product of two fits; their sums and scalings may not.
                let (m, n, k) = (u64::from(*m), u64::from(*n), u64::from(*k));
                dtype.size_bytes().saturating_mul((m * k).saturating_add(k * n)).saturating_add((m * n).saturating_mul(4))
            }
            JobSpec::Kernel { args, .. } => args
                .iter()
                .map(|a| if let KernelArg::Buffer { elements, .. } = a { elements.saturating_mul(4) } else { 0 })
                .fold(0u64, u64::saturating_add),
            // The model is loaded once and shared by every job; a job adds only its KV cache,
            // which the engine bounds by its own context limit.
            JobSpec::TextGeneration { .. } => 0,
        }
    }
}

/// The outcome of a job, as the worker reports it and the client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOutput {
    /// FNV-1a 64 over the little-endian bytes of the result's f32 values, hex.
    pub checksum: String,
    /// Leading values of the result (as many as the spec asked, within [`RESULT_VALUES_MAX`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f32>,
    /// The backend that ran it: "cuda" or "cpu".
    pub backend: String,
    /// Metered device (or CPU) time, milliseconds.
    pub device_ms: u64,
    /// Wall time from start to finish on the worker, milliseconds.
    pub wall_ms: u64,
    /// The answer of a `text_generation` job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextOutput>,
}

/// What a language model produced, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TextOutput {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Loading the model (0 when it was already loaded: loading is never billed).
    pub load_ms: u64,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    /// What ran it, e.g. `cpu` or `upstream:http://127.0.0.1:8000`.
    pub device: String,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer, or a stop string came.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The job's time ran out.
    Timeout,
}

impl FinishReason {
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Timeout => "timeout",
        }
    }
}

/// FNV-1a 64 over bytes (the checksum of a text result: its UTF-8 bytes).
pub fn checksum_bytes(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// FNV-1a 64 over the values' little-endian bytes.
pub fn checksum_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    checksum_bytes(&bytes)
}

/// Element `index` of input stream `stream` generated from `seed`: SplitMix64 mapped to [-1, 1)
/// with 24 bits of mantissa, so the value is exact in f32 (and representable enough in f16).
pub fn generate_f32(seed: u64, stream: u64, index: u64) -> f32 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 40) as f32) / ((1u64 << 23) as f32) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> JobSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn specs_parse_from_their_json_form() {
        let gemm = parse(json!({"kind": "gemm", "m": 64, "n": 32, "k": 16, "dtype": "bf16", "seed": 7}));
        assert_eq!(gemm.kind(), JobKind::Gemm);
        assert!(gemm.validate().is_ok());
        assert_eq!(gemm.device_bytes(), 2 * (64 * 16 + 16 * 32) + 4 * 64 * 32);
        let vadd = parse(json!({"kind": "vector_add", "n": 1024, "seed": 1}));
        assert!(vadd.validate().is_ok());
        assert!(serde_json::from_value::<JobSpec>(json!({"kind": "mine_bitcoin"})).is_err());
        assert!(serde_json::from_value::<JobSpec>(json!({"kind": "gemm", "m": -1, "n": 1, "k": 1, "dtype": "f32", "seed": 1})).is_err());
    }

    #[test]
    fn bounds_are_checked_before_any_allocation() {
        let bad = [
            json!({"kind": "vector_add", "n": 0, "seed": 1}),
            json!({"kind": "reduction", "n": VECTOR_ELEMENTS_MAX + 1, "seed": 1}),
            json!({"kind": "gemm", "m": 0, "n": 1, "k": 1, "dtype": "f32", "seed": 1}),
            json!({"kind": "gemm", "m": 20000, "n": 1, "k": 1, "dtype": "f32", "seed": 1}),
            json!({"kind": "gemm", "m": 2, "n": 2, "k": 2, "dtype": "f32", "seed": 1, "a": {"from": "inline", "values": [1.0, 2.0]}}),
            json!({"kind": "gemm", "m": 2, "n": 2, "k": 2, "dtype": "f32", "seed": 1, "return_values": 5}),
            json!({"kind": "kernel", "source": "", "entry_point": "k", "grid": [1,1,1], "block": [1,1,1], "args": [{"type": "u32", "value": 1}], "seed": 1}),
            json!({"kind": "kernel", "source": "x", "entry_point": "1k", "grid": [1,1,1], "block": [1,1,1], "args": [{"type": "u32", "value": 1}], "seed": 1}),
            json!({"kind": "kernel", "source": "x", "entry_point": "k", "grid": [0,1,1], "block": [1,1,1], "args": [{"type": "u32", "value": 1}], "seed": 1}),
            json!({"kind": "kernel", "source": "x", "entry_point": "k", "grid": [1,1,1], "block": [64,32,1], "args": [{"type": "u32", "value": 1}], "seed": 1}),
            json!({"kind": "kernel", "source": "x", "entry_point": "k", "grid": [1,1,1], "block": [1,1,1], "args": [], "seed": 1}),
            json!({"kind": "kernel", "source": "x", "entry_point": "k", "grid": [1,1,1], "block": [1,1,1], "args": [{"type": "buffer", "elements": 8192, "init": {"init": "zeros"}, "output": true}], "seed": 1}),
        ];
        for spec in bad {
            let parsed: JobSpec = serde_json::from_value(spec.clone()).unwrap();
            assert!(parsed.validate().is_err(), "{spec}");
        }
    }

    #[test]
    fn generated_inputs_are_reproducible_and_in_range() {
        let a: Vec<f32> = (0..1000).map(|i| generate_f32(42, 0, i)).collect();
        let b: Vec<f32> = (0..1000).map(|i| generate_f32(42, 0, i)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(generate_f32(42, 0, 0), generate_f32(42, 1, 0));
        assert_ne!(generate_f32(42, 0, 0), generate_f32(43, 0, 0));
        // The values spread over the range rather than clumping.
        let mean: f32 = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1, "{mean}");
        assert_eq!(checksum_f32(&[]), "cbf29ce484222325");
        assert_ne!(checksum_f32(&[1.0]), checksum_f32(&[2.0]));
    }
}
