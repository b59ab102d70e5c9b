//! Writes the deterministic tiny Llama-3 test model (the one the CLI and GPU tests build in
//! memory) to a file, for tests that need it on disk (the browser end-to-end test).
//!
//!     cargo run --release -p carebot-model --example synthetic_gguf -- OUT.gguf [q4_k|q8_0|…] [TEMPLATE]
//!
//! With TEMPLATE (a file), its text becomes `tokenizer.chat_template` (tests of hostile templates).

use carebot_model::gguf::Value;
use carebot_model::synthetic::SyntheticSpec;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: synthetic_gguf OUT.gguf [TYPE]");
        std::process::exit(2);
    };
    let name = args.next().unwrap_or_else(|| "q4_k".into());
    let Some(ty) = carebot_model::quant::SUPPORTED_TYPES.into_iter().find(|t| t.name().eq_ignore_ascii_case(&name))
    else {
        eprintln!("unknown weight type {name}");
        std::process::exit(2);
    };
    let extra = match args.next().map(std::fs::read_to_string) {
        None => Vec::new(),
        Some(Ok(template)) => vec![("tokenizer.chat_template".to_string(), Value::String(template))],
        Some(Err(e)) => {
            eprintln!("error: the template file: {e}");
            std::process::exit(1);
        }
    };
    let bytes = SyntheticSpec::tiny_llama3().to_gguf_with(ty, extra);
    if let Err(e) = std::fs::write(&out, bytes) {
        eprintln!("error: {out}: {e}");
        std::process::exit(1);
    }
}
