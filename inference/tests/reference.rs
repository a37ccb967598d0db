//! Against llama.cpp (llama-cpp-python) on the real model, SmolLM2-135M-Instruct Q4_1:
//! identical token ids on a corpus of 200+ strings, identical greedy tokens on five prompts.
//!
//! Needs AITBC_TEST_MODEL (the .gguf) and a python with llama_cpp (AITBC_TEST_PYTHON); both come
//! from scripts/setup-inference.sh. Without them the test skips loudly, or fails under CI=true.

mod common;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aitbc_inference::{GenerateRequest, Message, Model, Prompt};

fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("AITBC_TEST_MODEL")?);
    p.exists().then_some(p)
}

fn corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "Hello world", " Hello world", "Hello World!", "hello, world.", "The quick brown fox jumps over the lazy dog.",
        "I'm sure you've heard they'll say it's what we'd do", "DON'T SHOUT", "don't", "'s 't 're 've 'm 'll 'd",
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", " \n", "\n ", "\t\t\tindented", "a  b   c    d",
        "trailing space ", "trailing spaces   ", "   leading", "mixed \t \n whitespace \r\n runs", "\r\n\r\n",
        "fn main() {\n    println!(\"hi\");\n}\n", "def f(x):\n\treturn x ** 2  # square\n",
        "for (int i = 0; i < n; ++i) { sum += a[i]; }", "<div class=\"x\">&amp;</div>", "SELECT * FROM t WHERE id = 42;",
        "x=>x*2", "a->b", "#include <stdio.h>", "{\"key\": [1, 2.5, -3e10, null]}", "https://example.com/path?q=1&r=2",
        "user@example.com", "C:\\Windows\\System32", "$HOME/.config", "~~~ *** ___ --- +++ ===", "!!!???...,,,;;;",
        "0", "1", "42", "123", "1234", "12345678901234567890", "3.14159265358979", "-273.15", "1,000,000", "1e-9",
        "2026-12-03", "10:30pm", "v1.2.3", "0x7fffffff", "0b1010", "007", "a1b2c3", "ab12cd34", "½ ¾ ²³",
        "٣٤٥ (Arabic-Indic digits)", "一二三 123", "①②③", "phone: +1 (555) 010-9999",
        "café", "naïve résumé", "Ærøskøbing", "Straße", "ñandú", "Ça va? Oui!", "İstanbul", "ǅemal",
        "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет, мир!", "Γειά σου κόσμε", "שלום עולם", "مرحبا بالعالم",
        "हिन्दी पाठ", "ภาษาไทย", "Tiếng Việt có dấu", "🙂", "🙂🙂", "emoji 🚀 in text", "👨‍👩‍👧‍👦 family", "🇫🇷 flag",
        "e\u{301} combining", "zero\u{200b}width", "non\u{a0}breaking", "\u{feff}bom", "tab\u{b}vt", "\u{3000}ideographic space",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
        "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>assistant\n", "text<|im_end|>text",
        "<|im_start|><|im_start|>", "<|im_start", "im_start|>", "<repo_name>x<file_sep>y", "<|endoftext|><|endoftext|>",
        "a<|im_start|>b c", " <|im_end|> ", "<|unknown|>", "<s></s>", "[INST] hi [/INST]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Numbers of every length and in context: each digit is its own piece.
    for n in [7u64, 98, 765, 4321, 56789, 123456, 9876543, 31415926, 271828182, 1000000000, u64::MAX] {
        c.push(n.to_string());
        c.push(format!("about {n} items"));
        c.push(format!("{n}th"));
    }
    // Whitespace runs of every length before words, digits, punctuation and the end.
    for n in 1..=8 {
        let ws = " ".repeat(n);
        c.push(format!("a{ws}b"));
        c.push(format!("a{ws}1"));
        c.push(format!("a{ws}!"));
        c.push(format!("a{ws}"));
        c.push(format!("{}x", "\n".repeat(n)));
        c.push(format!("x{}y", "\t".repeat(n)));
    }
    // Sentences in several registers.
    for s in [
        "What is the capital of France?", "Explain photosynthesis in simple terms.",
        "Write a haiku about the sea.", "Translate 'good morning' into Spanish.", "List three prime numbers.",
        "The GPU marketplace settles escrow in batches.", "Mr. O'Neil's dog's bone", "e.g. i.e. etc. vs.",
        "It costs $5.99 (or €5,49).", "50% off!!! Buy now???", "snake_case camelCase PascalCase kebab-case",
        "CONSTANT_VALUE = 0xFF", "αβγ δεζ", "∑ ∫ √ ∞ ≠ ≤ ≥", "→ ← ↑ ↓", "“quotes” ‘single’ «guillemets»",
        "em—dash en–dash", "ellipsis…", "© ® ™", "tab\tseparated\tvalues", "line1\nline2\nline3",
        "  indented code\n    more\n", "a\n\n\nb", "End.",
    ] {
        c.push(s.to_string());
        c.push(format!(" {s}"));
        c.push(s.to_uppercase());
    }
    c
}

#[test]
fn tokenizer_matches_llama_cpp() {
    run(false);
}

/// Greedy decoding of five prompts (English, code, digits, unicode, a chat) gives llama.cpp's
/// token ids for the first 32 tokens: the engine reproduces ggml's CPU arithmetic (quantized
/// products, RMS norm, SwiGLU, softmax, f16 attention, RoPE's fused multiply-adds), so the
/// logits are bit-identical and no near-tie can part the two.
#[test]
fn greedy_matches_llama_cpp() {
    run(true);
}

fn run(greedy: bool) {
    let (Some(model_path), Some(python)) = (model_path(), common::python_with("llama_cpp")) else {
        common::missing("AITBC_TEST_MODEL or a python with llama_cpp is absent");
        return;
    };
    let model = Model::load(&model_path).expect("the model loads");
    let texts = corpus();
    assert!(texts.len() >= 200, "{} strings", texts.len());

    // With the template's default system prompt ("You are a helpful AI assistant named SmolLM,
    // ...") this 135M model, in llama.cpp as here, answers the question with French nonsense;
    // with a short system prompt of the caller's it answers it.
    let chat = vec![Message::new("system", "Answer concisely."), Message::new("user", "What is the capital of France?")];
    let chat_text = model.chat_template().expect("SmolLM2 has a ChatML template").render(&chat).unwrap();
    let prompts = vec![
        "The history of the Roman Empire began".to_string(),
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n".to_string(),
        "The numbers 17, 34, 51, 68 and".to_string(),
        "Le café à Paris est très".to_string(),
        chat_text.clone(),
    ];
    const N: usize = 32;
    let prompts = if greedy { prompts } else { vec![] };
    let request = serde_json::json!({"model": model_path, "texts": texts, "prompts": prompts, "n": N});
    let mut child = Command::new(&python)
        .arg(common::tests_dir().join("llama_cpp_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run llama_cpp_reference.py");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "llama_cpp_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };

    let mut mismatches = Vec::new();
    for (text, theirs) in texts.iter().zip(reply["tokens"].as_array().unwrap()) {
        let ours = model.tokenizer().encode(text, false, true).unwrap();
        if ours != ids(theirs) {
            mismatches.push(format!("{text:?}: ours {ours:?} llama.cpp {:?}", ids(theirs)));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} strings tokenize differently:\n{}", mismatches.len(), texts.len(), mismatches.join("\n"));
    eprintln!("tokenizer: {} strings identical to llama.cpp", texts.len());

    if !greedy {
        return;
    }
    let mut differ = Vec::new();
    for (prompt, theirs) in prompts.iter().zip(reply["greedy"].as_array().unwrap()) {
        let req = GenerateRequest { prompt: Prompt::Text(prompt.clone()), max_tokens: N as u32, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] };
        let g = model.generate(&req, Instant::now() + Duration::from_secs(300), &mut |_| ControlFlow::Continue(())).unwrap();
        let theirs = ids(theirs);
        let same = g.tokens.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
        eprintln!("greedy: {same} of {} tokens identical on {prompt:?}: {:?}", theirs.len(), g.text);
        if g.tokens != theirs {
            differ.push(format!("{prompt:?}: first {same} identical\nours      {:?}\nllama.cpp {:?}", g.text, model.tokenizer().decode(&theirs, false)));
        }
    }
    assert!(differ.is_empty(), "greedy tokens differ:\n{}", differ.join("\n"));

    // The chat request through the Messages API gives the same answer, and it is right.
    let req = GenerateRequest { prompt: Prompt::Messages(chat), max_tokens: N as u32, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] };
    let g = model.generate(&req, Instant::now() + Duration::from_secs(300), &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
}
