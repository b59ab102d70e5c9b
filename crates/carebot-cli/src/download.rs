//! Checkpoints from the Hugging Face hub (or the mirror named by `HF_ENDPOINT`), fetched into the
//! standard HF cache with progress, and the model `chat` and `generate` use when no `--model` is
//! given: a hub repository (CareBot's by default) converted once into CareBot's own cache, then
//! reused, also with no network.

use crate::convert::{self, Quant};
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The files a conversion reads, besides the weight shards the index names.
const FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "model.safetensors.index.json",
];

/// A repository's revision resolved to its commit: every file is then read at that commit, so a
/// push during a long download cannot mix two versions.
pub struct Snapshot {
    repo: String,
    pub commit: String,
    files: Vec<String>,
    hub: ApiRepo,
}

impl Snapshot {
    /// Asks the hub which commit `revision` of `repo` is, and which files it has.
    pub fn look_up(repo: &str, revision: &str) -> Result<Self> {
        let api = ApiBuilder::from_env().with_progress(true).build()?;
        let info = api
            .repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()))
            .info()
            .map_err(|e| format!("{repo}@{revision}: {e}"))?;
        let hub = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, info.sha.clone()));
        let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok(Snapshot { repo: repo.to_string(), commit: info.sha, files, hub })
    }

    /// Downloads what a conversion needs (files already cached are not downloaded again) and
    /// returns the snapshot directory holding them.
    pub fn download(&self) -> Result<PathBuf> {
        let (repo, commit) = (&self.repo, &self.commit);
        let present = |f: &str| self.files.iter().any(|p| p == f);
        let get = |f: &str| self.hub.get(f).map_err(|e| format!("{repo}@{commit}: downloading {f}: {e}"));
        let config = get("config.json")?;
        for f in FILES.iter().skip(1).filter(|f| present(f)) {
            get(f)?;
        }
        let mut shards: Vec<String> = if present("model.safetensors.index.json") {
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
}

/// Where converted models are kept: `$CAREBOT_CACHE`, else `$XDG_CACHE_HOME/carebot`, else
/// `~/.cache/carebot`.
fn cache_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("CAREBOT_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("carebot")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/carebot")))
        .ok_or_else(|| "no cache directory: set CAREBOT_CACHE, or give --model".into())
}

/// `OWNER/NAME` as a file name prefix.
fn file_stem(repo: &str) -> String {
    format!("{}--", repo.replace('/', "--"))
}

/// The GGUF of `repo` at `revision`, converted to Q4_K_M on first use (downloading the checkpoint
/// into the HF cache, with progress) and kept as `<cache>/<OWNER>--<NAME>--<commit>.q4_k_m.gguf`.
/// When the hub cannot be reached, the newest conversion of `repo` made earlier is used, and said.
pub fn converted_model(repo: &str, revision: &str) -> Result<PathBuf> {
    let dir = cache_dir()?;
    let snapshot = match Snapshot::look_up(repo, revision) {
        Ok(s) => s,
        Err(e) => {
            return match newest_conversion(&dir, repo) {
                Some(path) => {
                    eprintln!("note: the hub cannot be reached ({e}); using the conversion made earlier");
                    eprintln!("model: {}", path.display());
                    Ok(path)
                }
                None => Err(format!(
                    "no --model given, and {repo} cannot be fetched from the hub to convert it ({e}); \
                     nothing was converted before into {}",
                    dir.display()
                )
                .into()),
            };
        }
    };
    let path = dir.join(format!("{}{}.q4_k_m.gguf", file_stem(repo), snapshot.commit));
    if path.is_file() {
        eprintln!("model: {repo}@{}, converted earlier: {}", snapshot.commit, path.display());
        return Ok(path);
    }
    eprintln!(
        "model: {repo}@{} is downloaded (bf16; ≈ 16 GB for an 8B model) and converted to Q4_K_M once, into {}",
        snapshot.commit,
        path.display()
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let checkpoint = snapshot.download()?;
    convert::convert_dir(&checkpoint, Some(repo), &path, Quant::Q4KM)?;
    Ok(path)
}

/// The most recently written `<OWNER>--<NAME>--*.q4_k_m.gguf` in `dir` (a partial conversion has
/// another name until it is complete).
fn newest_conversion(dir: &Path, repo: &str) -> Option<PathBuf> {
    let stem = file_stem(repo);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&stem) && n.ends_with(".q4_k_m.gguf")))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
}
