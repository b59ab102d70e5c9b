//! Writes the Q4_K_M GGUF `carebot convert` would make of a Llama-3-8B checkpoint with the real
//! Llama-3 tokenizer (from `CAREBOT_LLAMA3_TOKENIZER`), with random weights: CareBot's size
//! (≈ 4.9 GB, past 4 GiB), header (128k-token vocabulary, merges, chat template) and type mix,
//! written in seconds, for the tests that load a model at its real size.
//!
//!     cargo run --release -p carebot-model --example converted_gguf -- OUT.gguf [llama3-8b|llama3-1b]

use carebot_model::convert::Quant;
use carebot_model::synthetic::SyntheticSpec;
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(out), Ok(tokenizer)) = (args.next(), std::env::var("CAREBOT_LLAMA3_TOKENIZER")) else {
        eprintln!("usage: CAREBOT_LLAMA3_TOKENIZER=… converted_gguf OUT.gguf [llama3-8b|llama3-1b]");
        std::process::exit(2);
    };
    let spec = match args.next().as_deref().unwrap_or("llama3-8b") {
        "llama3-8b" => SyntheticSpec::llama3_8b(),
        "llama3-1b" => SyntheticSpec::llama3_1b(),
        other => {
            eprintln!("unknown shape {other:?} (llama3-8b, llama3-1b)");
            std::process::exit(2);
        }
    };
    let tokenizer = PathBuf::from(tokenizer);
    let tokenizer_dir =
        if tokenizer.is_dir() { tokenizer } else { tokenizer.parent().unwrap_or(&tokenizer).to_path_buf() };
    match spec.write_converted_random(&PathBuf::from(&out), &tokenizer_dir, Quant::Q4KM, "carebot-real-size") {
        Ok(size) => eprintln!("wrote {out}: {size} bytes"),
        Err(e) => {
            eprintln!("error: {out}: {e}");
            std::process::exit(1);
        }
    }
}
