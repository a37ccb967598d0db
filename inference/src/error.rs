//! The one error type of the crate: every bad input and every bad file ends here, never in a
//! panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model file {path} is not a valid GGUF file: {why}")]
    BadModelFile { path: PathBuf, why: String },
    #[error("model file {path} has sha256 {actual}, expected {expected}")]
    ModelHashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{what} is {actual}, the limit is {limit}")]
    LimitExceeded { what: &'static str, actual: u64, limit: u64 },
    #[error("the prompt is {prompt_tokens} tokens and max_tokens {max_tokens}: more than the context of {context_tokens} tokens")]
    ContextOverflow { prompt_tokens: u32, max_tokens: u32, context_tokens: u32 },
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
    #[error("compute: {0}")]
    Compute(String),
}

impl From<candle_core::Error> for InferenceError {
    fn from(e: candle_core::Error) -> Self {
        InferenceError::Compute(e.to_string())
    }
}
