//! Arbitrary bytes as a safetensors shard (length prefix, JSON header), then as a checkpoint's
//! config.json planned against that shard's tensor names: the paths by which a hub repository
//! reaches the converter. Any panic or runaway allocation is a bug.
#![no_main]

use carebot_model::convert::{
    Conversion, HfConfig, HfFiles, Quant, SAFETENSORS_PREFIX, parse_safetensors_header, safetensors_header_len,
    weight_map,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let mut names = Vec::new();
    if let Ok(n) = safetensors_header_len(data, size) {
        if let Some(json) = data.get(SAFETENSORS_PREFIX..SAFETENSORS_PREFIX + n) {
            if let Ok(tensors) = parse_safetensors_header(json, size) {
                names = tensors.into_keys().collect();
            }
        }
    }
    let Ok(json) = serde_json::from_slice::<Json>(data) else { return };
    let _ = weight_map(&json);
    if HfConfig::from_json(&json).is_err() {
        return;
    }
    // A small BPE vocabulary, so the plan reaches the tokenizer checks without a big file.
    let vocab: serde_json::Map<String, Json> = (0..64u64).map(|i| (format!("t{i}"), Json::from(i))).collect();
    let files = HfFiles {
        config: json,
        tokenizer: serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": ["t1 t2"]}}),
        tokenizer_config: Json::Null,
        generation_config: Json::Null,
        chat_template: None,
        dir_name: "fuzz".into(),
    };
    if let Ok(mut c) = Conversion::plan(&files, Quant::Q4KM, names.iter().map(String::as_str)) {
        let header = c.header();
        let _ = c.layout(header.len() as u64);
    }
});
