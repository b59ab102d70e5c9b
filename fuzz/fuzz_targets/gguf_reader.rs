//! Feeds arbitrary bytes to the GGUF reader, then to everything that reads a parsed header
//! (model config, tokenizer, chat template, dequantization of every tensor in range). Any panic,
//! overflow or runaway allocation is a bug.
#![no_main]

use carebot_model::chat::ChatTemplate;
use carebot_model::config::LlamaConfig;
use carebot_model::gguf::GgufFile;
use carebot_model::quant;
use carebot_model::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a complete file, and as a prefix of a larger one (the browser's case).
    let _ = GgufFile::parse(data, data.len() as u64 * 2);
    let Ok(file) = GgufFile::parse(data, data.len() as u64) else { return };
    let _ = LlamaConfig::from_gguf(&file);
    let _ = Tokenizer::from_gguf(&file.metadata);
    let _ = ChatTemplate::from_gguf(&file.metadata);
    for t in file.tensors.iter().filter(|t| t.ty.is_supported() && t.n_elements() <= 1 << 16) {
        let bytes = &data[t.offset as usize..(t.offset + t.n_bytes) as usize];
        let mut out = vec![0.0f32; t.n_elements() as usize];
        let _ = quant::dequantize(t.ty, bytes, &mut out);
    }
});
