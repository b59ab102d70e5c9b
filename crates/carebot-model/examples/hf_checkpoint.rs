//! Writes the tiny Llama-3 checkpoint of the converter tests in Hugging Face layout (bf16 in two
//! safetensors shards with an index, config, generation config, and the Llama-3 tokenizer files
//! from `CAREBOT_LLAMA3_TOKENIZER`), for the browser test that prepares it from a local "hub".
//! With FRONT_BYTES, the second shard starts with that many bytes of a tensor converters skip,
//! written as a hole: a shard over 4 GiB whose weights lie past 4 GiB, on a few MB of disk.
//!
//! With `llama3-8b` instead, the checkpoint has Llama-3.1-8B's shapes (16 GB of bf16 in 17
//! shards), for measuring `carebot convert`'s memory and speed at full size.
//!
//!     cargo run --release -p carebot-model --example hf_checkpoint -- OUT_DIR [FRONT_BYTES | llama3-8b]

use carebot_model::synthetic::SyntheticSpec;
use std::path::PathBuf;

fn main() {
    let (Some(out), Ok(tokenizer)) = (std::env::args().nth(1), std::env::var("CAREBOT_LLAMA3_TOKENIZER")) else {
        eprintln!("usage: CAREBOT_LLAMA3_TOKENIZER=… hf_checkpoint OUT_DIR [FRONT_BYTES | llama3-8b]");
        std::process::exit(2);
    };
    let full_size = std::env::args().nth(2).as_deref() == Some("llama3-8b");
    let front = match std::env::args().nth(2).filter(|_| !full_size).map(|n| n.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) if n % 4 == 0 => n,
        Some(_) => {
            eprintln!("FRONT_BYTES: a whole number of bytes, a multiple of 4 (or llama3-8b)");
            std::process::exit(2);
        }
    };
    let tokenizer = PathBuf::from(tokenizer);
    let tokenizer_dir =
        if tokenizer.is_dir() { tokenizer } else { tokenizer.parent().unwrap_or(&tokenizer).to_path_buf() };
    let (spec, shards) = if full_size {
        (SyntheticSpec::llama3_8b(), 17)
    } else {
        (SyntheticSpec { vocab: 128_256, ..SyntheticSpec::tiny_llama3() }, 2)
    };
    if let Err(e) = spec.write_hf_checkpoint_with_front(&PathBuf::from(&out), &tokenizer_dir, shards, front) {
        eprintln!("error: {out}: {e}");
        std::process::exit(1);
    }
}
