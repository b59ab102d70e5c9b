//! `carebot convert`: a Hugging Face Llama checkpoint (sharded safetensors, config, tokenizer) to
//! the GGUF file CareBot loads, quantized the way llama.cpp's `convert_hf_to_gguf.py` and
//! `llama-quantize` would: same tensor names, metadata keys, q/k row permutation and type mix.
//! Tensors stream through one at a time (big ones in row chunks), quantized on every core; the
//! file is written under a temporary name and renamed only when complete.

use carebot_model::convert::{
    self, Conversion, HfFiles, Planned, SAFETENSORS_PREFIX, SourceDtype, permute_rows_for_rope, safetensors_header_len,
};
use carebot_model::quant::{self, GgmlType};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A local Hugging Face model directory (config.json, tokenizer.json, *.safetensors).
    #[arg(long, required_unless_present = "hf_repo", conflicts_with = "hf_repo")]
    pub hf: Option<PathBuf>,
    /// Download OWNER/NAME from the Hugging Face hub (into the standard HF cache) first.
    #[arg(long)]
    pub hf_repo: Option<String>,
    /// Branch, tag or commit of --hf-repo.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// The GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Quant::Q4KM)]
    pub quant: Quant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Quant {
    /// llama.cpp's Q4_K_M mix: Q4_K, Q6_K for the output and some attn_v/ffn_down layers.
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q8_0")]
    Q8_0,
    F16,
}

impl Quant {
    fn model(self) -> convert::Quant {
        match self {
            Quant::Q4KM => convert::Quant::Q4KM,
            Quant::Q4_0 => convert::Quant::Q4_0,
            Quant::Q8_0 => convert::Quant::Q8_0,
            Quant::F16 => convert::Quant::F16,
        }
    }
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    match (&args.hf, &args.hf_repo) {
        (Some(dir), _) => convert_dir(dir, None, &args.out, args.quant),
        (None, Some(repo)) => {
            let checkpoint = crate::download::Snapshot::look_up(repo, &args.revision)?.download()?;
            convert_dir(&checkpoint, Some(repo), &args.out, args.quant)
        }
        (None, None) => Err("give --hf DIR or --hf-repo OWNER/NAME".into()),
    }
}

/// Converts the checkpoint in `dir` into `out`. `repo`: the hub repository it was downloaded
/// from, whose name the model takes (the snapshot directory is named by its commit), as the
/// browser names the same repository when it prepares it.
pub fn convert_dir(dir: &Path, repo: Option<&str>, out: &Path, quant: Quant) -> Result<()> {
    let mut model = HfModel::open(dir)?;
    if let Some(repo) = repo {
        model.files.dir_name = repo.rsplit('/').next().unwrap_or(repo).to_string();
    }
    convert(&model, out, quant)
}

/// A checkpoint file read whole, once its size is known to be one such a file can have.
fn read_text(path: &Path) -> Result<String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    convert::check_json_file_size(&name, size).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn read_json(path: &Path) -> Result<Json> {
    let text = read_text(path)?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// A Hugging Face checkpoint opened for reading: config, tokenizer files, and every safetensors
/// shard memory-mapped.
struct HfModel {
    files: HfFiles,
    /// Shard file name → its mapping.
    shards: BTreeMap<String, memmap2::Mmap>,
    /// Tensor name → shard file name.
    index: HashMap<String, String>,
}

impl HfModel {
    fn open(dir: &Path) -> Result<Self> {
        let config = read_json(&dir.join("config.json"))?;
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let optional = |name: &str| -> Result<Json> {
            let p = dir.join(name);
            if p.exists() { read_json(&p) } else { Ok(Json::Null) }
        };
        let tokenizer_config = optional("tokenizer_config.json")?;
        let generation_config = optional("generation_config.json")?;
        let template_path = dir.join("chat_template.jinja");
        let chat_template = if template_path.exists() { Some(read_text(&template_path)?) } else { None };
        let index_path = dir.join("model.safetensors.index.json");
        let index: HashMap<String, String> = if index_path.exists() {
            let j = read_json(&index_path)?;
            let map = j["weight_map"].as_object().ok_or_else(|| format!("{}: no weight_map", index_path.display()))?;
            map.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()
        } else {
            HashMap::new()
        };
        let mut files: Vec<String> = index.values().cloned().collect();
        if index.is_empty() {
            files.push("model.safetensors".into());
        }
        files.sort();
        files.dedup();
        let mut shards = BTreeMap::new();
        let mut index = index;
        for f in files {
            let path = dir.join(&f);
            let file = File::open(&path).map_err(|e| format!("shard {}: {e}", path.display()))?;
            // SAFETY: the file is only read, and a checkpoint is not rewritten while converting.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("shard {}: {e}", path.display()))?;
            // Our bound on the header, from its length prefix, before the crate parses it.
            safetensors_header_len(&map[..map.len().min(SAFETENSORS_PREFIX)], map.len() as u64)
                .map_err(|e| format!("shard {}: {e}", path.display()))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| format!("shard {}: {e}", path.display()))?;
            if index.is_empty() || !index.values().any(|v| v == &f) {
                for name in st.names() {
                    index.insert(name.to_string(), f.clone());
                }
            }
            drop(st);
            shards.insert(f, map);
        }
        let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let files = HfFiles { config, tokenizer, tokenizer_config, generation_config, chat_template, dir_name };
        Ok(HfModel { files, shards, index })
    }

    /// A tensor's shape and raw data, checked to be `shape` and a float type.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(SourceDtype, &[u8])> {
        let shard = self.index.get(name).ok_or_else(|| format!("tensor {name:?} is missing from the checkpoint"))?;
        let map = &self.shards[shard];
        let st = SafeTensors::deserialize(map).map_err(|e| format!("shard {shard}: {e}"))?;
        let view = st.tensor(name).map_err(|e| format!("tensor {name:?} in {shard}: {e}"))?;
        if view.shape() != shape {
            return Err(format!("tensor {name:?} has shape {:?}, expected {shape:?}", view.shape()).into());
        }
        let dtype = match view.dtype() {
            Dtype::BF16 => SourceDtype::BF16,
            Dtype::F16 => SourceDtype::F16,
            Dtype::F32 => SourceDtype::F32,
            other => return Err(format!("tensor {name:?} is {other:?}; expected bf16, f16 or f32").into()),
        };
        // Re-borrow the bytes from the mapping itself, which outlives this parse.
        let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
        Ok((dtype, &map[start..start + view.data().len()]))
    }
}

/// Rows converted and quantized at a time: ~64 MiB of f32 per chunk, whole heads for q/k (the
/// permutation moves rows within a head).
fn rows_per_chunk(p: &Planned) -> usize {
    let group = p.row_group();
    ((64usize << 20) / (p.cols() * 4)).max(1).div_ceil(group) * group
}

fn convert(model: &HfModel, out: &Path, quant: Quant) -> Result<()> {
    let mut conversion = Conversion::plan(&model.files, quant.model(), model.index.keys().map(String::as_str))?;
    for note in &conversion.notes {
        eprintln!("note: {note}");
    }
    // Check every source tensor before writing a byte.
    let mut total = 0u64;
    for p in &conversion.tensors {
        if let Some(hf) = &p.hf {
            total += model.tensor(hf, &p.hf_shape())?.1.len() as u64;
        }
    }

    let partial = PartialFile::create(out)?;
    let mut file = BufWriter::with_capacity(8 << 20, partial.file()?);
    let io = |e: std::io::Error| format!("writing {}: {e}", partial.path.display());
    file.write_all(&conversion.header()).map_err(io)?;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "converting {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    let w = &mut conversion.writer;
    for p in &conversion.tensors {
        bar.set_message(p.gguf.clone());
        let Some(hf) = &p.hf else {
            let factors = conversion.cfg.rope_factors().expect("planned only with rope scaling");
            w.write_tensor_data(&mut file, &quant::quantize(GgmlType::F32, &factors)?).map_err(io)?;
            continue;
        };
        let (dtype, bytes) = model.tensor(hf, &p.hf_shape())?;
        let cols = p.cols();
        let row_bytes = bytes.len() / p.rows();
        let pieces = bytes.chunks(rows_per_chunk(p) * row_bytes).map(|chunk| {
            let mut values = dtype.to_f32(chunk);
            if p.permute_heads.is_some() {
                let rows = values.len() / cols;
                values = permute_rows_for_rope(&values, rows, cols, rows / p.row_group());
            }
            // Quantize 16-row slices on every core; collect keeps their order.
            let parts: Vec<Vec<u8>> = values
                .par_chunks(cols * 16)
                .map(|rows| quant::quantize(p.ty, rows))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| std::io::Error::other(format!("tensor {}: {e}", p.gguf)))?;
            bar.inc(chunk.len() as u64);
            Ok(parts.concat())
        });
        w.write_tensor_pieces(&mut file, pieces).map_err(io)?;
    }
    file.flush().map_err(io)?;
    file.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    partial.commit()?;
    bar.finish_and_clear();
    let size = std::fs::metadata(out)?.len();
    eprintln!(
        "wrote {} ({:.1} MiB, {} tensors)",
        out.display(),
        size as f64 / (1 << 20) as f64,
        conversion.tensors.len()
    );
    Ok(())
}

/// The output under a temporary name beside the final one, removed unless committed, so an
/// interrupted or failed conversion never leaves a truncated file under the final name.
struct PartialFile {
    path: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl PartialFile {
    fn create(out: &Path) -> Result<Self> {
        let name = out.file_name().ok_or_else(|| format!("{}: not a file name", out.display()))?;
        let path = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(PartialFile { path, out: out.to_path_buf(), committed: false })
    }

    fn file(&self) -> Result<File> {
        Ok(File::options()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?)
    }

    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.path, &self.out).map_err(|e| format!("renaming to {}: {e}", self.out.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
