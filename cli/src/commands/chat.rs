//! `aitbc chat`: a question to a model through the OpenAI-compatible API, the answer streamed
//! into the terminal as the worker writes it.

use crate::commands::models::DEFAULT_MODEL;
use crate::{CliError, Ctx};
use clap::Args;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc chat \"What is the capital of France?\"\n  aitbc chat --model smollm2:135m --system \"Answer concisely.\" \"What is 12 times 12?\"")]
pub struct ChatArgs {
    /// The question.
    question: String,
    /// The model, as `aitbc models list` and GET /v1/models name it.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// A system prompt before the question [default: the model's own].
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate, at most.
    #[arg(long, default_value_t = aitbc_core::jobspec::MAX_TOKENS_DEFAULT)]
    max_tokens: u32,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// The market region [default: the API's].
    #[arg(long)]
    region: Option<String>,
}

pub async fn run(args: ChatArgs, ctx: Ctx) -> Result<(), CliError> {
    if args.question.trim().is_empty() {
        return Err(CliError::Usage("the question is empty".into()));
    }
    let client = ctx.client();
    if client.api_key().is_none() {
        return Err(CliError::Usage("no API key: run `aitbc init --role client` first".into()));
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": args.question}));
    let mut body = json!({
        "model": args.model, "messages": messages, "max_tokens": args.max_tokens, "temperature": args.temperature,
        "stream": true, "stream_options": {"include_usage": true},
    });
    if let Some(seed) = args.seed {
        body["seed"] = json!(seed);
    }
    if let Some(region) = &args.region {
        body["region"] = json!(region);
    }
    // A fresh key: this question is asked once, and a retry of the same request cannot pay twice.
    let key = format!("chat-{}", uuid::Uuid::now_v7());
    let mut last: Option<Value> = None;
    let mut failure: Option<String> = None;
    let json_out = ctx.json;
    let mut text = String::new();
    client
        .post_events("/v1/chat/completions", &body, &key, &mut |event, data| {
            if data == "[DONE]" {
                return false;
            }
            let Ok(value) = serde_json::from_str::<Value>(data) else {
                failure = Some(format!("unexpected event data: {data}"));
                return false;
            };
            if event == "error" {
                failure = Some(value["error"]["message"].as_str().unwrap_or("the job failed").to_string());
                return false;
            }
            if let Some(piece) = value["choices"][0]["delta"]["content"].as_str() {
                text.push_str(piece);
                if !json_out {
                    print!("{piece}");
                    let _ = std::io::stdout().flush();
                }
            }
            if value.get("usage").is_some() {
                last = Some(value);
            }
            true
        })
        .await?;
    if let Some(reason) = failure {
        if !json_out {
            println!();
        }
        return Err(CliError::Failed(reason));
    }
    let last = last.ok_or_else(|| CliError::Failed("the stream ended without its usage".into()))?;
    let aitbc = &last["aitbc"];
    if json_out {
        crate::output::json(&json!({"answer": text, "usage": last["usage"], "aitbc": aitbc}));
    } else {
        println!();
        eprintln!(
            "{} prompt + {} completion tokens; job {}, receipt {}, price {} AITBC",
            last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"],
            aitbc["job_id"].as_str().unwrap_or("-"), aitbc["receipt_id"].as_str().unwrap_or("-"), aitbc["price"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}
