//! A GGUF tokenizer built from arbitrary metadata that has the right shape: tokens split from the
//! input, merges of adjacent tokens, byte-level or not, special ids anywhere; then it encodes and
//! decodes text that comes from the input too. Any panic or runaway loop is a bug.
#![no_main]

use carebot_model::gguf::{Metadata, Value};
use carebot_model::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\u{0}');
    let sample = parts.next().unwrap_or_default().to_string();
    let tokens: Vec<String> = parts.take(512).map(str::to_string).collect();
    let n = tokens.len() as u32;
    let mut m = Metadata::default();
    m.insert("tokenizer.ggml.model", Value::String(if control & 1 == 0 { "gpt2" } else { "llama" }.into()));
    m.insert("tokenizer.ggml.pre", Value::String(if control & 2 == 0 { "llama-bpe" } else { "default" }.into()));
    let merges: Vec<String> = tokens.windows(2).take(256).map(|w| format!("{} {}", w[0], w[1])).collect();
    let types: Vec<i32> = (0..n).map(|i| ((i + u32::from(control)) % 7) as i32).collect();
    m.insert("tokenizer.ggml.tokens", Value::Array(tokens.into()));
    m.insert("tokenizer.ggml.merges", Value::Array(merges.into()));
    m.insert("tokenizer.ggml.token_type", Value::Array(types.into()));
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(u32::from(control) % n.max(1)));
    m.insert("tokenizer.ggml.eos_token_id", Value::U32(u32::from(control >> 2)));
    let Ok(tok) = Tokenizer::from_gguf(&m) else { return };
    if let Ok(ids) = tok.encode(&sample, control & 4 != 0) {
        let _ = tok.decode(&ids);
    }
    let _ = tok.decode(&[u32::from(control), n, u32::MAX]);
});
