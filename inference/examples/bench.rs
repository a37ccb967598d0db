//! Prefill and decode tokens/s of this engine and of llama.cpp (llama-cpp-python) on the same
//! GGUF file, same prompt, same thread count, in one run.
//!
//! cargo run --release -p aitbc-inference --example bench -- --model PATH [--python PY]
//!     [--prompt-tokens 128] [--decode-tokens 128] [--threads 2]
//!
//! Threads: candle's pool reads RAYON_NUM_THREADS / CANDLE_NUM_THREADS at first use; this
//! program sets them from --threads before any model code runs.

use std::path::PathBuf;
use std::process::Command;

use aitbc_inference::Model;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = PathBuf::from(arg(&args, "--model").ok_or("--model PATH is required")?);
    let threads: usize = arg(&args, "--threads").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let prompt_tokens: usize = arg(&args, "--prompt-tokens").map(|s| s.parse()).transpose()?.unwrap_or(128);
    let decode_tokens: usize = arg(&args, "--decode-tokens").map(|s| s.parse()).transpose()?.unwrap_or(128);
    let python = arg(&args, "--python").or_else(|| std::env::var("AITBC_TEST_PYTHON").ok());
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());

    let model = Model::load(&model_path)?;
    let text = "The history of computing is a story of people and machines. ".repeat(64);
    let mut prompt = model.tokenizer().encode(&text, true, true)?;
    prompt.truncate(prompt_tokens);

    // Warm-up (thread pool start, page faults), then the best of three runs.
    model.debug_bench(&prompt, 8)?;
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (p, d, _) = model.debug_bench(&prompt, decode_tokens)?;
        best = (best.0.min(p), best.1.min(d));
    }
    let ours_prefill = prompt.len() as f64 / (best.0 / 1e3);
    let ours_decode = decode_tokens as f64 / (best.1 / 1e3);
    let rss_mib = peak_rss_kib() as f64 / 1024.0;

    let mut reference = None;
    if let Some(python) = python {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/llama_cpp_bench.py");
        let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
        let out = Command::new(&python)
            .arg(&script)
            .arg(&model_path)
            .arg(threads.to_string())
            .arg(decode_tokens.to_string())
            .arg(ids.join(","))
            .output()?;
        if out.status.success() {
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() >= 2 {
                reference = Some((v[0], v[1]));
            }
        } else {
            eprintln!("llama.cpp bench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    } else {
        eprintln!("no --python / AITBC_TEST_PYTHON: llama.cpp is not measured");
    }

    println!("model: {} ({}, {}), {threads} threads, prompt {} tokens, decode {decode_tokens} tokens", model.name(), model.arch(), model.quantization(), prompt.len());
    println!("| engine             | prefill tok/s | decode tok/s |");
    println!("|--------------------|--------------:|-------------:|");
    println!("| aitbc-inference    | {ours_prefill:13.1} | {ours_decode:12.1} |");
    if let Some((p, d)) = reference {
        println!("| llama.cpp          | {p:13.1} | {d:12.1} |");
        println!("| ratio (ours/llama) | {:13.2} | {:12.2} |", ours_prefill / p, ours_decode / d);
    }
    println!("aitbc-inference peak RSS (VmHWM): {rss_mib:.0} MiB");
    Ok(())
}
