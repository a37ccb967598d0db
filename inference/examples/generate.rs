//! One generation from the command line:
//! cargo run --release -p aitbc-inference --example generate -- MODEL "question" [max_tokens]

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use aitbc_inference::{GenerateRequest, Message, Model, Prompt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(question)) = (args.get(1), args.get(2)) else {
        return Err("usage: generate MODEL QUESTION [MAX_TOKENS]".into());
    };
    let max_tokens = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let model = Model::load(std::path::Path::new(path))?;
    let req = GenerateRequest {
        prompt: Prompt::Messages(vec![Message::new("user", question)]),
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    };
    let g = model.generate(&req, Instant::now() + Duration::from_secs(120), &mut |piece| {
        print!("{piece}");
        ControlFlow::Continue(())
    })?;
    println!("\n[{} prompt + {} completion tokens, {:?}, prefill {} ms, decode {} ms, cpu {} ms]", g.prompt_tokens, g.completion_tokens, g.finish_reason, g.prefill_ms, g.decode_ms, g.cpu_ns / 1_000_000);
    Ok(())
}
