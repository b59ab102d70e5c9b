//! `carebot convert`: a Hugging Face Llama checkpoint (sharded safetensors, config, tokenizer) to
//! the GGUF file CareBot loads, quantized the way llama.cpp's `convert_hf_to_gguf.py` and
//! `llama-quantize` would: same tensor names, metadata keys, q/k row permutation and type mix.
//! Tensors stream through one at a time (big ones in row chunks), quantized on every core; the
//! file is written under a temporary name and renamed only when complete.

use carebot_model::gguf::{GgufWriter, TensorSpec, Value, ValueType};
use carebot_model::quant::{self, GgmlType, TypeMix};
use carebot_model::synthetic::permute_rows_for_rope;
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
    fn mix(self) -> TypeMix {
        match self {
            Quant::Q4KM => TypeMix::Q4KM,
            Quant::Q4_0 => TypeMix::Q4_0,
            Quant::Q8_0 => TypeMix::Uniform(GgmlType::Q8_0),
            Quant::F16 => TypeMix::Uniform(GgmlType::F16),
        }
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`).
    fn file_type(self) -> u32 {
        match self {
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q8_0 => 7,
            Quant::Q4KM => 15,
        }
    }
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    let dir = match (&args.hf, &args.hf_repo) {
        (Some(dir), _) => dir.clone(),
        (None, Some(repo)) => crate::download::snapshot(repo, &args.revision)?,
        (None, None) => return Err("give --hf DIR or --hf-repo OWNER/NAME".into()),
    };
    let model = HfModel::open(&dir)?;
    convert(&model, &args.out, args.quant)
}

/// Hyperparameters from config.json.
#[derive(Debug)]
struct HfConfig {
    name: String,
    n_layers: usize,
    dim: usize,
    ffn_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    context: usize,
    rms_eps: f64,
    rope_theta: f64,
    tied: bool,
    /// (factor, low_freq_factor, high_freq_factor, original context) of Llama-3.1 RoPE scaling.
    rope_llama3: Option<(f64, f64, f64, f64)>,
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

impl HfConfig {
    fn from_json(c: &Json, path: &Path) -> Result<Self> {
        let arch = c["architectures"].as_array().and_then(|a| a.first()).and_then(Json::as_str).unwrap_or("");
        let model_type = c["model_type"].as_str().unwrap_or("");
        if arch != "LlamaForCausalLM" && model_type != "llama" {
            return Err(format!(
                "{}: architecture {arch:?} (model_type {model_type:?}) is not a llama model; CareBot converts LlamaForCausalLM checkpoints",
                path.display()
            )
            .into());
        }
        let count = |k: &str| -> Result<usize> {
            c[k].as_u64().map(|v| v as usize).ok_or_else(|| format!("{}: {k} is missing", path.display()).into())
        };
        let n_heads = count("num_attention_heads")?;
        let dim = count("hidden_size")?;
        let rope_llama3 = match &c["rope_scaling"] {
            Json::Object(s) if s.get("rope_type").or(s.get("type")).and_then(Json::as_str) == Some("llama3") => {
                let f = |k: &str| s.get(k).and_then(Json::as_f64).ok_or_else(|| format!("rope_scaling.{k} is missing"));
                Some((
                    f("factor")?,
                    f("low_freq_factor")?,
                    f("high_freq_factor")?,
                    f("original_max_position_embeddings")?,
                ))
            }
            _ => None,
        };
        Ok(HfConfig {
            name: c["_name_or_path"].as_str().unwrap_or("").to_string(),
            n_layers: count("num_hidden_layers")?,
            dim,
            ffn_dim: count("intermediate_size")?,
            n_heads,
            n_kv_heads: c["num_key_value_heads"].as_u64().map_or(n_heads, |v| v as usize),
            head_dim: c["head_dim"].as_u64().map_or(dim / n_heads.max(1), |v| v as usize),
            vocab: count("vocab_size")?,
            context: count("max_position_embeddings")?,
            rms_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-5),
            rope_theta: c["rope_theta"].as_f64().unwrap_or(10_000.0),
            tied: c["tie_word_embeddings"].as_bool().unwrap_or(false),
            rope_llama3,
        })
    }

    /// llama.cpp's `rope_freqs` for Llama-3.1 scaling.
    fn rope_factors(&self) -> Option<Vec<f32>> {
        let (factor, low, high, original) = self.rope_llama3?;
        Some(carebot_model::config::llama3_rope_factors(self.rope_theta, self.head_dim, factor, low, high, original))
    }
}

/// A Hugging Face checkpoint opened for reading: config, tokenizer files, and every safetensors
/// shard memory-mapped.
struct HfModel {
    dir: PathBuf,
    cfg: HfConfig,
    tokenizer: Json,
    tokenizer_config: Json,
    generation_config: Json,
    /// Shard file name → its mapping.
    shards: BTreeMap<String, memmap2::Mmap>,
    /// Tensor name → shard file name.
    index: HashMap<String, String>,
}

impl HfModel {
    fn open(dir: &Path) -> Result<Self> {
        let cfg = HfConfig::from_json(&read_json(&dir.join("config.json"))?, &dir.join("config.json"))?;
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let optional = |name: &str| -> Result<Json> {
            let p = dir.join(name);
            if p.exists() { read_json(&p) } else { Ok(Json::Null) }
        };
        let tokenizer_config = optional("tokenizer_config.json")?;
        let generation_config = optional("generation_config.json")?;
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
            let st = SafeTensors::deserialize(&map).map_err(|e| format!("shard {}: {e}", path.display()))?;
            if index.is_empty() || !index.values().any(|v| v == &f) {
                for name in st.names() {
                    index.insert(name.to_string(), f.clone());
                }
            }
            drop(st);
            shards.insert(f, map);
        }
        Ok(HfModel { dir: dir.to_path_buf(), cfg, tokenizer, tokenizer_config, generation_config, shards, index })
    }

    /// A tensor's shape and raw data, checked to be `shape` and a float type.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<(Dtype, &[u8])> {
        let shard = self.index.get(name).ok_or_else(|| format!("tensor {name:?} is missing from the checkpoint"))?;
        let map = &self.shards[shard];
        let st = SafeTensors::deserialize(map).map_err(|e| format!("shard {shard}: {e}"))?;
        let view = st.tensor(name).map_err(|e| format!("tensor {name:?} in {shard}: {e}"))?;
        if view.shape() != shape {
            return Err(format!("tensor {name:?} has shape {:?}, expected {shape:?}", view.shape()).into());
        }
        let dtype = view.dtype();
        if !matches!(dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) {
            return Err(format!("tensor {name:?} is {dtype:?}; expected bf16, f16 or f32").into());
        }
        // Re-borrow the bytes from the mapping itself, which outlives this parse.
        let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
        Ok((dtype, &map[start..start + view.data().len()]))
    }
}

/// Widens raw bf16/f16/f32 values to f32.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    }
}

/// One GGUF tensor and where it comes from.
struct Planned {
    gguf: String,
    /// HF tensor name, or `None` for `rope_freqs` (computed).
    hf: Option<String>,
    /// `[rows, cols]` (HF layout); 1-D tensors have rows = 1.
    shape: [usize; 2],
    one_d: bool,
    /// Permute rows for adjacent-pair RoPE over this many heads (attn_q / attn_k).
    permute_heads: Option<usize>,
    ty: GgmlType,
}

fn plan(cfg: &HfConfig, quant: Quant, has_lm_head: bool) -> Vec<Planned> {
    let (d, f, v, hd) = (cfg.dim, cfg.ffn_dim, cfg.vocab, cfg.head_dim);
    let (q, kv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
    let mut out = Vec::new();
    let mut add = |gguf: String, hf: &str, shape: [usize; 2], permute_heads: Option<usize>| {
        let one_d = shape[0] == 1;
        let ty = if one_d { GgmlType::F32 } else { fallback(quant.mix().type_of(&gguf, cfg.n_layers), shape[1]) };
        out.push(Planned { gguf, hf: Some(hf.to_string()), shape, one_d, permute_heads, ty });
    };
    add("token_embd.weight".into(), "model.embed_tokens.weight", [v, d], None);
    for i in 0..cfg.n_layers {
        let b = |n: &str| format!("blk.{i}.{n}.weight");
        let h = |n: &str| format!("model.layers.{i}.{n}.weight");
        add(b("attn_norm"), &h("input_layernorm"), [1, d], None);
        add(b("attn_q"), &h("self_attn.q_proj"), [q, d], Some(cfg.n_heads));
        add(b("attn_k"), &h("self_attn.k_proj"), [kv, d], Some(cfg.n_kv_heads));
        add(b("attn_v"), &h("self_attn.v_proj"), [kv, d], None);
        add(b("attn_output"), &h("self_attn.o_proj"), [d, q], None);
        add(b("ffn_norm"), &h("post_attention_layernorm"), [1, d], None);
        add(b("ffn_gate"), &h("mlp.gate_proj"), [f, d], None);
        add(b("ffn_up"), &h("mlp.up_proj"), [f, d], None);
        add(b("ffn_down"), &h("mlp.down_proj"), [d, f], None);
    }
    add("output_norm.weight".into(), "model.norm.weight", [1, d], None);
    if !cfg.tied && has_lm_head {
        add("output.weight".into(), "lm_head.weight", [v, d], None);
    }
    if cfg.rope_llama3.is_some() {
        out.insert(
            0,
            Planned {
                gguf: "rope_freqs.weight".into(),
                hf: None,
                shape: [1, hd / 2],
                one_d: true,
                permute_heads: None,
                ty: GgmlType::F32,
            },
        );
    }
    out
}

/// llama.cpp's fallback when a row does not fill whole 256-value K-quant blocks.
fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    }
}

/// The GGUF metadata llama.cpp's converter writes for a Llama-3 checkpoint.
fn metadata(w: &mut GgufWriter, model: &HfModel, quant: Quant) -> Result<()> {
    let c = &model.cfg;
    let u = |v: usize| Value::U32(v as u32);
    let name = if c.name.is_empty() {
        model.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        c.name.rsplit('/').next().unwrap_or(&c.name).to_string()
    };
    w.set("general.architecture", Value::String("llama".into()))
        .set("general.type", Value::String("model".into()))
        .set("general.name", Value::String(name))
        .set("general.size_label", Value::String(size_label(parameter_count(c))))
        .set("llama.block_count", u(c.n_layers))
        .set("llama.context_length", u(c.context))
        .set("llama.embedding_length", u(c.dim))
        .set("llama.feed_forward_length", u(c.ffn_dim))
        .set("llama.attention.head_count", u(c.n_heads))
        .set("llama.attention.head_count_kv", u(c.n_kv_heads))
        .set("llama.rope.freq_base", Value::F32(c.rope_theta as f32))
        .set("llama.attention.layer_norm_rms_epsilon", Value::F32(c.rms_eps as f32))
        .set("llama.attention.key_length", u(c.head_dim))
        .set("llama.attention.value_length", u(c.head_dim))
        .set("general.file_type", Value::U32(quant.file_type()))
        .set("llama.vocab_size", u(c.vocab))
        .set("llama.rope.dimension_count", u(c.head_dim));
    w.set("general.quantization_version", Value::U32(2));
    tokenizer_metadata(w, model)
}

/// Weights in the model (what llama.cpp's size label counts).
fn parameter_count(c: &HfConfig) -> u64 {
    let (d, f, v, hd) = (c.dim as u64, c.ffn_dim as u64, c.vocab as u64, c.head_dim as u64);
    let (q, kv) = (c.n_heads as u64 * hd, c.n_kv_heads as u64 * hd);
    let block = 2 * d + 2 * q * d + 2 * kv * d + 3 * f * d;
    let rope = if c.rope_llama3.is_some() { hd / 2 } else { 0 };
    v * d * if c.tied { 1 } else { 2 } + c.n_layers as u64 * block + d + rope
}

/// gguf-py's `model_weight_count_rounded_notation`: "67M", "8.0B" (at least two digits).
fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round() as u64).trim_start_matches('0').len();
    format!("{scaled:.*}{suffix}", 2usize.saturating_sub(digits))
}

/// The vocabulary as GGUF arrays (`gpt2` BPE tokens, token types, merges), special token ids and
/// the chat template.
fn tokenizer_metadata(w: &mut GgufWriter, model: &HfModel) -> Result<()> {
    let t = &model.tokenizer;
    let m = &t["model"];
    if m["type"].as_str() != Some("BPE") {
        return Err(
            format!("tokenizer.json: model type {:?}; CareBot converts BPE (Llama-3) tokenizers", m["type"]).into()
        );
    }
    let vocab = m["vocab"].as_object().ok_or("tokenizer.json: model.vocab is missing")?;
    let n = model.cfg.vocab;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (text, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some(text.clone());
        }
    }
    let mut types = vec![1i32; n];
    for added in t["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else { continue };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(text.to_string());
            // Special added tokens are control tokens; the others are user-defined.
            types[id as usize] = if added["special"].as_bool().unwrap_or(false) { 3 } else { 4 };
        }
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Value::String(t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            }))
        })
        .collect();
    let merges: Vec<Value> = m["merges"]
        .as_array()
        .ok_or("tokenizer.json: model.merges is missing")?
        .iter()
        .map(|mg| match mg {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) if pair.len() == 2 => {
                Ok(Value::String(format!("{} {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or(""))))
            }
            other => Err(format!("tokenizer.json: unreadable merge {other}")),
        })
        .collect::<std::result::Result<_, _>>()?;
    let id_of = |text: &str| -> Option<u32> {
        vocab.get(text).and_then(Json::as_u64).map(|v| v as u32).or_else(|| {
            t["added_tokens"]
                .as_array()?
                .iter()
                .find(|a| a["content"].as_str() == Some(text))
                .and_then(|a| a["id"].as_u64())
                .map(|v| v as u32)
        })
    };
    let is_llama3 = id_of("<|begin_of_text|>").is_some() && id_of("<|eot_id|>").is_some();
    let pre = if is_llama3 { "llama-bpe" } else { "default" };
    if !is_llama3 {
        eprintln!("note: the tokenizer is not Llama-3's; writing tokenizer.ggml.pre = default");
    }
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String(pre.into()))
        .set("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens))
        .set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()))
        .set("tokenizer.ggml.merges", Value::Array(ValueType::String, merges));

    // BOS/EOS: the token named by tokenizer_config.json, else the id in generation_config.json.
    let tc = &model.tokenizer_config;
    let named = |key: &str| -> Option<u32> {
        let v = &tc[key];
        id_of(v.as_str().or_else(|| v["content"].as_str())?)
    };
    let gen_id = |key: &str| -> Option<u32> {
        let v = &model.generation_config[key];
        v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()).map(|v| v as u32)
    };
    if let Some(bos) = named("bos_token").or_else(|| gen_id("bos_token_id")) {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(bos));
    }
    if let Some(eos) = named("eos_token").or_else(|| gen_id("eos_token_id")) {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(eos));
    }
    // End of turn: CareBot's generation_config lists only <|end_of_text|>, but a chat answer ends
    // with <|eot_id|>, which must stop generation too.
    if let Some(eot) = id_of("<|eot_id|>") {
        w.set("tokenizer.ggml.eot_token_id", Value::U32(eot));
    }
    if let Some(eom) = id_of("<|eom_id|>") {
        w.set("tokenizer.ggml.eom_token_id", Value::U32(eom));
    }
    // Whether encoding adds BOS/EOS: from tokenizer.json's post-processor (a ByteLevel one adds
    // neither; a template starting with BOS adds it), overridden by tokenizer_config.json.
    let (mut add_bos, mut add_eos) = (None, None);
    let post = &t["post_processor"];
    for p in post["processors"].as_array().cloned().unwrap_or_else(|| vec![post.clone()]) {
        match p["type"].as_str() {
            Some("ByteLevel") => {
                add_bos = add_bos.or(Some(false));
                add_eos = add_eos.or(Some(false));
            }
            Some("TemplateProcessing") => {
                let single = p["single"].as_array().cloned().unwrap_or_default();
                let special = |i: Option<&Json>| i.and_then(|s| s["SpecialToken"]["id"].as_str()).and_then(id_of);
                if single.len() > 1 {
                    add_bos = Some(special(single.first()).is_some() && special(single.first()) == named("bos_token"));
                    add_eos = Some(special(single.last()).is_some() && special(single.last()) == named("eos_token"));
                }
            }
            _ => {}
        }
    }
    add_bos = tc["add_bos_token"].as_bool().or(add_bos);
    add_eos = tc["add_eos_token"].as_bool().or(add_eos);
    if let Some(add) = add_bos {
        w.set("tokenizer.ggml.add_bos_token", Value::Bool(add));
    }
    if let Some(add) = add_eos {
        w.set("tokenizer.ggml.add_eos_token", Value::Bool(add));
    }
    if let Some(template) = tc["chat_template"].as_str() {
        w.set("tokenizer.chat_template", Value::String(template.into()));
    }
    Ok(())
}

/// Rows converted and quantized at a time: bounds memory to ~64 MiB of f32 per chunk.
fn rows_per_chunk(p: &Planned) -> usize {
    if p.permute_heads.is_some() {
        return p.shape[0]; // the permutation moves rows within heads: keep the tensor whole
    }
    ((64usize << 20) / (p.shape[1] * 4)).max(1)
}

fn convert(model: &HfModel, out: &Path, quant: Quant) -> Result<()> {
    let has_lm_head = model.index.contains_key("lm_head.weight");
    let planned = plan(&model.cfg, quant, has_lm_head);
    // Check every source tensor before writing a byte.
    let mut total = 0u64;
    for p in &planned {
        if let Some(hf) = &p.hf {
            let shape: Vec<usize> = if p.one_d { vec![p.shape[1]] } else { p.shape.to_vec() };
            total += model.tensor(hf, &shape)?.1.len() as u64;
        }
    }

    let mut w = GgufWriter::new();
    metadata(&mut w, model, quant)?;
    for p in &planned {
        let dims: Vec<u64> = if p.one_d { vec![p.shape[1] as u64] } else { vec![p.shape[1] as u64, p.shape[0] as u64] };
        w.add_tensor(TensorSpec::new(p.gguf.clone(), &dims, p.ty))?;
    }

    let partial = PartialFile::create(out)?;
    let mut file = BufWriter::with_capacity(8 << 20, partial.file()?);
    let io = |e: std::io::Error| format!("writing {}: {e}", partial.path.display());
    w.write_header(&mut file).map_err(io)?;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "converting {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    for p in &planned {
        bar.set_message(p.gguf.clone());
        let Some(hf) = &p.hf else {
            let factors = model.cfg.rope_factors().expect("planned only with rope scaling");
            w.write_tensor_data(&mut file, &quant::quantize(GgmlType::F32, &factors)?).map_err(io)?;
            continue;
        };
        let shape: Vec<usize> = if p.one_d { vec![p.shape[1]] } else { p.shape.to_vec() };
        let (dtype, bytes) = model.tensor(hf, &shape)?;
        let cols = p.shape[1];
        let row_bytes = bytes.len() / p.shape[0];
        let pieces = bytes.chunks(rows_per_chunk(p) * row_bytes).map(|chunk| {
            let mut values = to_f32(dtype, chunk);
            if let Some(heads) = p.permute_heads {
                values = permute_rows_for_rope(&values, p.shape[0], cols, heads);
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
    eprintln!("wrote {} ({:.1} MiB, {} tensors)", out.display(), size as f64 / (1 << 20) as f64, planned.len());
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
