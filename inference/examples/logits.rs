//! Debugging parity: writes our logits for token ids to a file of little-endian f32.
//! `--incremental`: one token at a time (the decode path), the last position's logits after
//! each token; otherwise one prefill, every position's logits.
//! cargo run --release -p aitbc-inference --example logits -- MODEL OUT ID,ID,... [--incremental]
use std::io::Write;

use aitbc_inference::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(out), Some(ids)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: logits MODEL OUT ID,ID,... [--incremental]".into());
    };
    let ids: Vec<u32> = ids.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let model = Model::load(std::path::Path::new(path))?;
    let mut all = Vec::new();
    if args.iter().any(|a| a == "--incremental") {
        for n in 1..=ids.len() {
            all.extend(model.debug_logits_incremental(&ids[..n])?);
        }
    } else {
        all = model.debug_logits(&ids, true)?;
    }
    let mut f = std::fs::File::create(out)?;
    for v in all {
        f.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}
