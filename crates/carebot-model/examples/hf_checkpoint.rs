//! Writes the tiny Llama-3 checkpoint of the converter tests in Hugging Face layout (bf16 in two
//! safetensors shards with an index, config, generation config, and the Llama-3 tokenizer files
//! from `CAREBOT_LLAMA3_TOKENIZER`), for the browser test that prepares it from a local "hub".
//!
//!     cargo run --release -p carebot-model --example hf_checkpoint -- OUT_DIR

use carebot_model::synthetic::SyntheticSpec;
use std::path::PathBuf;

fn main() {
    let (Some(out), Ok(tokenizer)) = (std::env::args().nth(1), std::env::var("CAREBOT_LLAMA3_TOKENIZER")) else {
        eprintln!("usage: CAREBOT_LLAMA3_TOKENIZER=… hf_checkpoint OUT_DIR");
        std::process::exit(2);
    };
    let tokenizer = PathBuf::from(tokenizer);
    let tokenizer_dir =
        if tokenizer.is_dir() { tokenizer } else { tokenizer.parent().unwrap_or(&tokenizer).to_path_buf() };
    let spec = SyntheticSpec { vocab: 128_256, ..SyntheticSpec::tiny_llama3() };
    if let Err(e) = spec.write_hf_checkpoint(&PathBuf::from(&out), &tokenizer_dir, 2) {
        eprintln!("error: {out}: {e}");
        std::process::exit(1);
    }
}
