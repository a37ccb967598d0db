//! Prints the token ids of a text and writes every position's logits as JSON to a file
//! (debugging the tokenizer and the forward pass against llama.cpp):
//! cargo run -p aitbc-inference --example tokens -- MODEL TEXT [OUT.json]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = aitbc_inference::Model::load(std::path::Path::new(&args[1]))?;
    let t = model.tokenizer();
    let ids = t.encode(&args[2], false, true)?;
    println!("{ids:?}");
    let logits = model.debug_logits(&ids, true)?;
    let vocab = t.vocab_size();
    let argmax: Vec<u32> = logits.chunks(vocab).map(aitbc_inference::sampler::argmax).collect();
    println!("argmax per position: {argmax:?}");
    if let Some(out) = args.get(3) {
        let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
        let json = format!("[{}]", rows.iter().map(|r| format!("[{}]", r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))).collect::<Vec<_>>().join(","));
        std::fs::write(out, json)?;
    }
    Ok(())
}
