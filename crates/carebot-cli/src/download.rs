//! `carebot convert --hf-repo`: fetch a checkpoint from the Hugging Face hub (or the mirror named by
//! `HF_ENDPOINT`) into the standard HF cache, with progress, and return its local directory.

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use std::path::PathBuf;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The files a conversion reads, besides the weight shards the index names.
const FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "model.safetensors.index.json",
];

/// Downloads what a conversion needs from `repo` at `revision` (files already cached are not
/// downloaded again) and returns the snapshot directory holding them.
pub fn snapshot(repo: &str, revision: &str) -> Result<PathBuf> {
    let api = ApiBuilder::from_env().with_progress(true).build()?;
    let hub = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()));
    let info = hub.info().map_err(|e| format!("{repo}@{revision}: {e}"))?;
    let present: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let get = |f: &str| hub.get(f).map_err(|e| format!("{repo}@{revision}: downloading {f}: {e}"));
    let config = get("config.json")?;
    for f in FILES.iter().skip(1).filter(|f| present.contains(f)) {
        get(f)?;
    }
    let mut shards: Vec<String> = if present.contains(&"model.safetensors.index.json") {
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(get("model.safetensors.index.json")?)?)?;
        let map = index["weight_map"].as_object().ok_or("model.safetensors.index.json has no weight_map")?;
        map.values().filter_map(|v| v.as_str().map(String::from)).collect()
    } else {
        vec!["model.safetensors".into()]
    };
    shards.sort();
    shards.dedup();
    for s in &shards {
        get(s)?;
    }
    Ok(config.parent().ok_or("the HF cache returned a path with no directory")?.to_path_buf())
}
