//! Models served by an OpenAI-compatible server the provider already runs (vLLM, Ollama,
//! llama.cpp's server, llama-cpp-python's): the way GPUs serve inference today. The worker's
//! configuration points a model name at the server's base URL (`[[upstream_models]]`); the
//! worker forwards each `text_generation` job of that model to it, meters the time the server
//! took to answer, takes the token counts from the server's `usage`, and signs the receipt.
//!
//! # What the receipt says
//!
//! The worker cannot see inside the server (which GPU, how busy), so it meters what it can
//! measure honestly: the wall-clock time of the request, receipted as `wall_seconds`, with
//! `upstream:<base URL>` as the device. Token counts are the server's own `usage`; a server that
//! answers without them fails the job rather than have the worker guess.
//!
//! # Streaming
//!
//! A job is forwarded with `stream: false`, because not every server puts `usage` in a stream
//! (llama-cpp-python's does not), and the receipt needs it. So a client's stream of an upstream
//! model receives the answer in one piece when the server has finished.
//!
//! # Availability
//!
//! At start the worker asks the server for its models (`GET {base}/models`); a model the server
//! does not list, or a server that does not answer, is not advertised, so the marketplace never
//! routes a job to it.

use std::time::{Duration, Instant};

use aitbc_core::jobspec::{ChatMessage, FinishReason, TEXT_BYTES_MAX};
use aitbc_core::values::ModelName;
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest base URL accepted.
pub const BASE_URL_BYTES_MAX: usize = 512;
/// The longest model name on the server.
pub const UPSTREAM_MODEL_BYTES_MAX: usize = 256;
/// The most a server's answer may be: the text's limit plus room for the envelope.
pub const RESPONSE_BYTES_MAX: usize = TEXT_BYTES_MAX + 64 * 1024;
/// How long the start-up probe waits for the server's model list.
pub const PROBE_TIMEOUT_MS: u64 = 5_000;
/// The most models a server's list is read for.
pub const PROBE_MODELS_MAX: usize = 1_024;

/// A model in the worker's configuration served by an upstream server (`[[upstream_models]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name on the rate card and in jobs, e.g. `llama3.2`.
    pub name: ModelName,
    /// The server's OpenAI base URL, e.g. `http://127.0.0.1:8000/v1` (http or https).
    pub base_url: String,
    /// The model's name on that server, when it differs (e.g. `llama3.2:1b` on Ollama).
    #[serde(default)]
    pub model: Option<String>,
}

impl UpstreamConfig {
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.base_url;
        if url.len() > BASE_URL_BYTES_MAX || !(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("upstream_models {}: base_url must be an http(s) URL of at most {BASE_URL_BYTES_MAX} bytes", self.name));
        }
        if let Some(model) = &self.model {
            if model.is_empty() || model.len() > UPSTREAM_MODEL_BYTES_MAX || model.chars().any(char::is_control) {
                return Err(format!("upstream_models {}: model must be 1..={UPSTREAM_MODEL_BYTES_MAX} bytes", self.name));
            }
        }
        Ok(())
    }
}

/// Why a forwarded job did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The server could not be reached or did not answer in time: worth another attempt.
    #[error("upstream server unreachable: {0}")]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("upstream server answered {status}: {detail}")]
    Status { status: u16, detail: String },
    /// The server's answer is not one this worker can receipt honestly.
    #[error("upstream answer refused: {0}")]
    BadAnswer(String),
}

impl UpstreamError {
    /// Transport failures and the server's own 5xx and 429 may pass; its 4xx will not.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 429,
            UpstreamError::BadAnswer(_) => false,
        }
    }
}

/// One generation's request, as the job states it.
pub struct UpstreamRequest<'a> {
    pub prompt: Option<&'a str>,
    pub messages: Option<&'a [ChatMessage]>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: &'a [String],
}

/// The server's answer, with what the worker measured.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamAnswer {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// From sending the request to the last byte of the answer.
    pub wall_ms: u64,
}

/// A model served by an upstream server.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: ModelName,
    base: String,
    model: String,
    http: reqwest::Client,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, String> {
        config.validate()?;
        let http = reqwest::Client::builder().build().map_err(|e| e.to_string())?;
        Ok(Upstream {
            name: config.name.clone(),
            base: config.base_url.trim_end_matches('/').to_string(),
            model: config.model.clone().unwrap_or_else(|| config.name.as_str().to_string()),
            http,
        })
    }

    /// What receipts and outputs name as the device: `upstream:<base URL>`.
    pub fn device(&self) -> String {
        format!("upstream:{}", self.base)
    }

    /// Whether the server lists the model (`GET {base}/models`).
    pub async fn probe(&self) -> Result<(), String> {
        let response = self.http.get(format!("{}/models", self.base)).timeout(Duration::from_millis(PROBE_TIMEOUT_MS)).send().await.map_err(|e| format!("{}: {e}", self.base))?;
        let status = response.status();
        let body = read_bounded(response).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{}/models answered {status}", self.base));
        }
        let list: Value = serde_json::from_slice(&body).map_err(|e| format!("{}/models: {e}", self.base))?;
        let ids: Vec<&str> = list["data"].as_array().map(|d| d.iter().take(PROBE_MODELS_MAX).filter_map(|m| m["id"].as_str()).collect()).unwrap_or_default();
        if ids.contains(&self.model.as_str()) {
            Ok(())
        } else {
            Err(format!("{} does not serve {:?} (it lists {ids:?})", self.base, self.model))
        }
    }

    /// Forwards one generation: chat messages to `/chat/completions`, a prompt to
    /// `/completions`, with the job's limits; waits at most until `deadline`.
    pub async fn generate(&self, request: &UpstreamRequest<'_>, deadline: Instant) -> Result<UpstreamAnswer, UpstreamError> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stream": false,
        });
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        let (path, chat) = match (request.prompt, request.messages) {
            (Some(prompt), _) => {
                body["prompt"] = json!(prompt);
                ("completions", false)
            }
            (None, Some(messages)) => {
                body["messages"] = serde_json::to_value(messages).map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
                ("chat/completions", true)
            }
            (None, None) => return Err(UpstreamError::BadAnswer("the job has neither a prompt nor messages".into())),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UpstreamError::Unreachable("the job's time ran out before the request".into()));
        }
        let started = Instant::now();
        let response = self.http.post(format!("{}/{path}", self.base)).json(&body).timeout(left).send().await.map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = read_bounded(response).await?;
        let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        if !status.is_success() {
            let detail = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(UpstreamError::Status { status: status.as_u16(), detail });
        }
        parse_answer(&bytes, chat, request.max_tokens, wall_ms)
    }
}

/// The body of a response, refused past [`RESPONSE_BYTES_MAX`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| UpstreamError::Unreachable(e.to_string()))? {
        if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(UpstreamError::BadAnswer(format!("the answer exceeds {RESPONSE_BYTES_MAX} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// An OpenAI completion or chat completion as the receipt needs it: the first choice's text,
/// why it stopped, and the server's `usage`.
fn parse_answer(bytes: &[u8], chat: bool, max_tokens: u32, wall_ms: u64) -> Result<UpstreamAnswer, UpstreamError> {
    let bad = |why: String| Err(UpstreamError::BadAnswer(why));
    let answer: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return bad(format!("not JSON: {e}")),
    };
    let choice = &answer["choices"][0];
    let text = if chat { choice["message"]["content"].as_str() } else { choice["text"].as_str() };
    let Some(text) = text else {
        return bad("no text in choices[0]".into());
    };
    if text.len() > TEXT_BYTES_MAX {
        return bad(format!("the text exceeds {TEXT_BYTES_MAX} bytes"));
    }
    let count = |name: &str| answer["usage"][name].as_u64().and_then(|n| u32::try_from(n).ok());
    let (Some(prompt_tokens), Some(completion_tokens)) = (count("prompt_tokens"), count("completion_tokens")) else {
        return bad("no usage.prompt_tokens and usage.completion_tokens: the receipt's token counts come from the server".into());
    };
    if completion_tokens > max_tokens {
        return bad(format!("usage.completion_tokens {completion_tokens} exceeds the job's max_tokens {max_tokens}"));
    }
    let finish_reason = match choice["finish_reason"].as_str() {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    Ok(UpstreamAnswer { text: text.to_string(), finish_reason, prompt_tokens, completion_tokens, wall_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_url: &str, model: Option<&str>) -> UpstreamConfig {
        UpstreamConfig { name: ModelName::parse("llama3.2").unwrap(), base_url: base_url.into(), model: model.map(String::from) }
    }

    #[test]
    fn configurations_are_checked() {
        assert!(config("http://127.0.0.1:8000/v1", None).validate().is_ok());
        assert!(config("https://gpu.example/v1", Some("llama3.2:1b")).validate().is_ok());
        for bad in ["ftp://x/v1", "127.0.0.1:8000", "http://a b/v1", ""] {
            assert!(config(bad, None).validate().is_err(), "{bad:?}");
        }
        assert!(config(&format!("http://{}", "a".repeat(BASE_URL_BYTES_MAX)), None).validate().is_err());
        assert!(config("http://x/v1", Some("")).validate().is_err());
        assert!(config("http://x/v1", Some(&"m".repeat(UPSTREAM_MODEL_BYTES_MAX + 1))).validate().is_err());
    }

    #[test]
    fn answers_are_read_with_the_servers_usage() {
        let chat = br#"{"choices":[{"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let answer = parse_answer(chat, true, 16, 40).unwrap();
        assert_eq!(answer, UpstreamAnswer { text: "Paris.".into(), finish_reason: FinishReason::Stop, prompt_tokens: 12, completion_tokens: 3, wall_ms: 40 });
        let completion = br#"{"choices":[{"text":" Paris","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let answer = parse_answer(completion, false, 2, 9).unwrap();
        assert_eq!((answer.text.as_str(), answer.finish_reason), (" Paris", FinishReason::Length));
    }

    #[test]
    fn answers_that_cannot_be_receipted_honestly_are_refused() {
        let cases: [(&[u8], bool); 6] = [
            (b"not json", true),
            (br#"{"choices":[]}"#, true),
            // No usage: the worker does not guess token counts.
            (br#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}]}"#, true),
            (br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":-1,"completion_tokens":1}}"#, true),
            // More tokens than the job allowed.
            (br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":17}}"#, true),
            // A chat answer read as a completion has no text.
            (br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#, false),
        ];
        for (body, chat) in cases {
            let result = parse_answer(body, chat, 16, 1);
            assert!(matches!(result, Err(UpstreamError::BadAnswer(_))), "{}: {result:?}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"choices":[{{"text":"{}"}}],"usage":{{"prompt_tokens":1,"completion_tokens":1}}}}"#, "a".repeat(TEXT_BYTES_MAX + 1));
        assert!(matches!(parse_answer(long.as_bytes(), false, 16, 1), Err(UpstreamError::BadAnswer(_))));
    }

    #[test]
    fn only_transport_failures_and_server_faults_are_retried() {
        assert!(UpstreamError::Unreachable("refused".into()).retryable());
        assert!(UpstreamError::Status { status: 503, detail: String::new() }.retryable());
        assert!(UpstreamError::Status { status: 429, detail: String::new() }.retryable());
        assert!(!UpstreamError::Status { status: 400, detail: String::new() }.retryable());
        assert!(!UpstreamError::BadAnswer("x".into()).retryable());
    }
}
