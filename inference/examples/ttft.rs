//! The engine alone, as a stream's client sees a model: time to the first piece of text and
//! time per token after it, for one chat (median of `runs`). `scripts/chat-bench.sh` sets this
//! beside the same chat streamed through `aitbc up`.
//!
//! cargo run --release -p aitbc-inference --example ttft -- MODEL SYSTEM QUESTION MAX_TOKENS RUNS
//! prints one JSON line: {"ttft_ms": .., "per_token_ms": .., "completion_tokens": ..}

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use aitbc_inference::{GenerateRequest, Message, Model, Prompt};

/// Runs, at most: a bench, not a soak.
const RUNS_MAX: usize = 50;

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, system, question, max_tokens, runs] = args.as_slice() else {
        return Err("usage: ttft MODEL SYSTEM QUESTION MAX_TOKENS RUNS".into());
    };
    let max_tokens: u32 = max_tokens.parse()?;
    let runs: usize = runs.parse()?;
    if runs == 0 || runs > RUNS_MAX {
        return Err(format!("RUNS must be 1..={RUNS_MAX}").into());
    }
    let model = Model::load(std::path::Path::new(path))?;
    let req = GenerateRequest {
        prompt: Prompt::Messages(vec![Message::new("system", system), Message::new("user", question)]),
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    };
    let (mut ttft, mut per_token, mut tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let start = Instant::now();
        let mut first: Option<Instant> = None;
        let g = model.generate(&req, start + Duration::from_secs(120), &mut |_| {
            first.get_or_insert_with(Instant::now);
            ControlFlow::Continue(())
        })?;
        let end = Instant::now();
        let first = first.ok_or("no text")?;
        ttft.push((first - start).as_secs_f64() * 1e3);
        if g.completion_tokens > 1 {
            per_token.push((end - first).as_secs_f64() * 1e3 / f64::from(g.completion_tokens - 1));
        }
        tokens = g.completion_tokens;
    }
    println!("{{\"ttft_ms\": {:.2}, \"per_token_ms\": {:.3}, \"completion_tokens\": {tokens}}}", median(ttft), if per_token.is_empty() { 0.0 } else { median(per_token) });
    Ok(())
}
