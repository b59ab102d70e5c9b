//! From a Hugging Face Llama checkpoint (config, tokenizer, safetensors) to the GGUF CareBot
//! loads, planned the way llama.cpp's `convert_hf_to_gguf.py` + `llama-quantize` would: tensor
//! names, metadata keys, q/k row permutation and type mix. Only the plan and the file's header are
//! made here; the bytes of each tensor are read, widened, permuted and quantized by the caller
//! (`carebot convert` on every core, the browser on the GPU), one tensor after another in
//! directory order, so the output can be written front to back.
//!
//! Shard sizes and tensor offsets are u64 and never cast down (shards pass 4 GiB, and in the
//! browser `usize` has 32 bits); counts from config.json must fit the GGUF's u32 fields.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use crate::gguf::{GgufWriter, TensorSpec, Value};
use crate::quant::{GgmlType, TypeMix};
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The checkpoint is another architecture.
    #[error("{0}")]
    NotLlama(String),
    /// A file is missing a field, malformed, or inconsistent with another.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::Invalid(msg.into())
}

/// The output's type mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// llama.cpp's Q4_K_M mix: Q4_K, Q6_K for the output and some attn_v/ffn_down layers.
    Q4KM,
    Q4_0,
    Q8_0,
    F16,
}

impl Quant {
    pub fn mix(self) -> TypeMix {
        match self {
            Quant::Q4KM => TypeMix::Q4KM,
            Quant::Q4_0 => TypeMix::Q4_0,
            Quant::Q8_0 => TypeMix::Uniform(GgmlType::Q8_0),
            Quant::F16 => TypeMix::Uniform(GgmlType::F16),
        }
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`).
    pub fn file_type(self) -> u32 {
        match self {
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q8_0 => 7,
            Quant::Q4KM => 15,
        }
    }
}

/// The JSON files of a checkpoint (`Json::Null` for an optional one that is absent).
#[derive(Clone, Debug)]
pub struct HfFiles {
    pub config: Json,
    pub tokenizer: Json,
    pub tokenizer_config: Json,
    pub generation_config: Json,
    /// `chat_template.jinja`, where transformers 5 saves the chat template (its
    /// tokenizer_config.json no longer holds one).
    pub chat_template: Option<String>,
    /// `general.name` when config.json has no `_name_or_path`: the directory or repository name.
    pub dir_name: String,
}

/// Hyperparameters from config.json.
#[derive(Debug)]
pub struct HfConfig {
    pub name: String,
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub tied: bool,
    /// (factor, low_freq_factor, high_freq_factor, original context) of Llama-3.1 RoPE scaling.
    pub rope_llama3: Option<(f64, f64, f64, f64)>,
}

impl HfConfig {
    /// What config.json may say that changes the model's math, and what the converter does with each
    /// field (transformers 4.x and 5.x layouts). The other fields of transformers' `LlamaConfig`
    /// cannot change the output: `architectures`/`model_type` (checked to be Llama), token ids
    /// (read from the tokenizer files), `dtype`/`torch_dtype` (each tensor's type comes from its
    /// safetensors header), `initializer_range`, `use_cache`, `attention_dropout` (training only);
    /// fields `LlamaConfig` does not define are not read by transformers' Llama either, except the
    /// two with which transformers loads something other than plain Llama weights and code, which
    /// are refused (last rows). The checkpoint's tensors are checked the same way
    /// ([`Conversion::plan`]): a tensor the model does not use is refused, not dropped.
    ///
    /// | field | handling |
    /// | --- | --- |
    /// | `hidden_size`, `intermediate_size`, `num_hidden_layers`, `num_attention_heads`, `vocab_size`, `max_position_embeddings` | read; required |
    /// | `num_key_value_heads` | read; absent means `num_attention_heads`, as transformers does |
    /// | `head_dim` | read; absent means `hidden_size / num_attention_heads`, as transformers does |
    /// | `rms_norm_eps` | read; required (transformers' default, 1e-6, is not Llama-3's 1e-5) |
    /// | `rope_theta` (4.x) or `rope_parameters.rope_theta` (5.x) | read; required; both present must agree |
    /// | `rope_scaling` (4.x) or `rope_parameters` (5.x): `rope_type` | `default` or absent: none; `llama3`: read with its four parameters; anything else (`linear`, `dynamic`, `yarn`, `longrope`, …): refused |
    /// | `tie_word_embeddings` | read; absent means false, transformers' default |
    /// | `hidden_act` | must be `silu` (absent: transformers' default, silu) |
    /// | `attention_bias`, `mlp_bias` | must be false or absent |
    /// | `partial_rotary_factor` (at the top, or in `rope_parameters` as transformers 5 saves it) | must be 1 or absent |
    /// | any other key of `rope_scaling` / `rope_parameters` | refused: every key there changes RoPE |
    /// | `pretraining_tp` | ignored: it only splits the same products into slices during training |
    /// | `dtype` (5.x) or `torch_dtype` (4.x) | ignored: each tensor's own type (BF16, F16, F32) is in its safetensors header, and any other is refused there |
    /// | `vocab_size` vs the tokenizer | a tokenizer id at or past `vocab_size` is refused; rows past the tokenizer's last id are padded with unused `[PAD<id>]` tokens, as llama.cpp does |
    /// | `quantization_config` | refused: the weights were quantized by another tool (GPTQ, AWQ, bitsandbytes, FP8…) |
    /// | `auto_map` naming a model class | refused: the checkpoint runs its own code, not transformers' Llama |
    pub fn from_json(c: &Json) -> Result<Self, ConvertError> {
        let arch = c["architectures"].as_array().and_then(|a| a.first()).and_then(Json::as_str).unwrap_or("");
        let model_type = c["model_type"].as_str().unwrap_or("");
        if arch != "LlamaForCausalLM" && model_type != "llama" {
            return Err(ConvertError::NotLlama(format!(
                "config.json: architecture {arch:?} (model_type {model_type:?}) is not a llama model; CareBot converts LlamaForCausalLM checkpoints"
            )));
        }
        // Counts are written to the GGUF as u32: a bigger one is refused, never cut.
        let as_count = |k: &str, v: u64| -> Result<usize, ConvertError> {
            u32::try_from(v)
                .ok()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| ConvertError::Invalid(format!("config.json: {k} = {v} is out of range")))
        };
        let count = |k: &str| -> Result<usize, ConvertError> {
            let v = c[k].as_u64().ok_or_else(|| ConvertError::Invalid(format!("config.json: {k} is missing")))?;
            as_count(k, v)
        };
        let optional = |k: &str, default: usize| -> Result<usize, ConvertError> {
            c[k].as_u64().map_or(Ok(default), |v| as_count(k, v))
        };
        let n_heads = count("num_attention_heads")?;
        let dim = count("hidden_size")?;
        refuse_unsupported(c)?;
        let (rope_theta, rope_llama3) = rope(c)?;
        let rms_eps = c["rms_norm_eps"].as_f64().filter(|e| e.is_finite() && *e > 0.0).ok_or_else(|| {
            ConvertError::Invalid(format!("config.json: rms_norm_eps is {}, not a positive number", c["rms_norm_eps"]))
        })?;
        Ok(HfConfig {
            name: c["_name_or_path"].as_str().unwrap_or("").to_string(),
            n_layers: count("num_hidden_layers")?,
            dim,
            ffn_dim: count("intermediate_size")?,
            n_heads,
            n_kv_heads: optional("num_key_value_heads", n_heads)?,
            head_dim: optional("head_dim", dim / n_heads.max(1))?,
            vocab: count("vocab_size")?,
            context: count("max_position_embeddings")?,
            rms_eps,
            rope_theta,
            // transformers' LlamaConfig default, in 4.x and 5.x alike.
            tied: c["tie_word_embeddings"].as_bool().unwrap_or(false),
            rope_llama3,
        })
    }

    /// llama.cpp's `rope_freqs` for Llama-3.1 scaling.
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        let (factor, low, high, original) = self.rope_llama3?;
        Some(crate::config::llama3_rope_factors(self.rope_theta, self.head_dim, factor, low, high, original))
    }
}

/// Refuses what config.json may set that this converter does not implement, naming the field.
fn refuse_unsupported(c: &Json) -> Result<(), ConvertError> {
    let refuse = |field: &str, why: &str| {
        Err(ConvertError::Invalid(format!("config.json: {field} = {} is not supported: {why}", c[field])))
    };
    if !matches!(c["hidden_act"].as_str(), None | Some("silu")) {
        return refuse("hidden_act", "Llama's feed-forward is SwiGLU (silu)");
    }
    for field in ["attention_bias", "mlp_bias"] {
        if !matches!(c[field], Json::Null | Json::Bool(false)) {
            return refuse(field, "Llama-3 has no bias terms, and this converter writes none");
        }
    }
    if !(c["partial_rotary_factor"].is_null() || c["partial_rotary_factor"].as_f64() == Some(1.0)) {
        return refuse("partial_rotary_factor", "RoPE is applied to the whole head");
    }
    if !c["quantization_config"].is_null() {
        return refuse("quantization_config", "CareBot converts unquantized (bf16, f16, f32) checkpoints");
    }
    if c["auto_map"].as_object().is_some_and(|m| m.keys().any(|k| k.starts_with("AutoModel"))) {
        return refuse("auto_map", "the checkpoint brings its own model code, so it may not compute what Llama does");
    }
    Ok(())
}

/// RoPE as config.json states it: `rope_theta` and `rope_scaling` at the top (transformers 4.x), or
/// `rope_parameters` (transformers 5.x). Returns the base and Llama-3.1 scaling, if any.
#[allow(clippy::type_complexity)]
fn rope(c: &Json) -> Result<(f64, Option<(f64, f64, f64, f64)>), ConvertError> {
    let bad = |m: String| ConvertError::Invalid(format!("config.json: {m}"));
    let params = match &c["rope_parameters"] {
        Json::Null => None,
        Json::Object(p) => Some(p),
        other => return Err(bad(format!("rope_parameters = {other} is not an object"))),
    };
    let theta = |v: &Json, name: &str| match v {
        Json::Null => Ok(None),
        v => match v.as_f64() {
            Some(t) if t.is_finite() && t > 0.0 => Ok(Some(t)),
            _ => Err(bad(format!("{name} = {v} is not a positive number"))),
        },
    };
    let top = theta(&c["rope_theta"], "rope_theta")?;
    let nested = theta(params.and_then(|p| p.get("rope_theta")).unwrap_or(&Json::Null), "rope_parameters.rope_theta")?;
    let base = match (top, nested) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad(format!("rope_theta = {a} and rope_parameters.rope_theta = {b} disagree")));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            return Err(bad("no rope_theta (nor rope_parameters.rope_theta): the RoPE base is unknown".into()));
        }
    };
    // The scaling: rope_parameters where it names a type, else rope_scaling.
    let (field, scaling) = match (params, &c["rope_scaling"]) {
        (Some(p), _) if p.contains_key("rope_type") || p.contains_key("type") => ("rope_parameters", Some(p)),
        (_, Json::Object(s)) => ("rope_scaling", Some(s)),
        (_, Json::Null) => ("rope_scaling", None),
        (_, other) => return Err(bad(format!("rope_scaling = {other} is not an object"))),
    };
    let Some(s) = scaling else { return Ok((base, None)) };
    let kind = s.get("rope_type").or(s.get("type")).unwrap_or(&Json::Null);
    // Every key of the object changes RoPE: one this converter does not read is refused by name
    // (transformers 5 moved partial_rotary_factor in here, for one).
    let llama3_keys = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"];
    for (key, v) in s {
        let known = match key.as_str() {
            "rope_type" | "type" | "rope_theta" => true,
            "partial_rotary_factor" if v.as_f64() == Some(1.0) => true,
            k => kind.as_str() == Some("llama3") && llama3_keys.contains(&k),
        };
        if !known && matches!(kind.as_str(), None | Some("default" | "llama3")) {
            return Err(bad(format!(
                "{field}.{key} = {v} is not supported (rope_type {kind}): CareBot's RoPE would not apply it"
            )));
        }
    }
    match kind.as_str() {
        None if kind.is_null() => Ok((base, None)),
        Some("default") => Ok((base, None)),
        Some("llama3") => {
            let f = |k: &str| match s.get(k).and_then(Json::as_f64) {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(bad(format!("{field}.{k} is missing or not a positive number (rope_type llama3)"))),
            };
            let scaling =
                (f("factor")?, f("low_freq_factor")?, f("high_freq_factor")?, f("original_max_position_embeddings")?);
            Ok((base, Some(scaling)))
        }
        _ => Err(bad(format!(
            "{field}.rope_type = {kind} is not supported: CareBot implements Llama-3's \"default\" and \"llama3\" RoPE"
        ))),
    }
}

/// A tensor a checkpoint may hold that the conversion leaves out because it cannot change the
/// output: RoPE's inverse frequencies, which transformers before 4.31 saved and recomputes from
/// `rope_theta` (llama.cpp skips them too), and, with tied embeddings, a stored `lm_head.weight`,
/// which transformers replaces by the embeddings when it ties them.
fn unused_tensor(name: &str, cfg: &HfConfig) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || (cfg.tied && name == "lm_head.weight")
}

/// One GGUF tensor and where it comes from.
pub struct Planned {
    pub gguf: String,
    /// HF tensor name, or `None` for `rope_freqs` (computed).
    pub hf: Option<String>,
    /// `[rows, cols]` (HF layout); 1-D tensors have rows = 1.
    pub shape: [usize; 2],
    pub one_d: bool,
    /// Permute rows for adjacent-pair RoPE over this many heads (attn_q / attn_k).
    pub permute_heads: Option<usize>,
    pub ty: GgmlType,
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
pub fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
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
fn metadata(
    w: &mut GgufWriter,
    model: &HfFiles,
    c: &HfConfig,
    quant: Quant,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    // Every count was checked to fit a u32 when config.json was read.
    let u = |v: usize| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
    let name = if c.name.is_empty() {
        model.dir_name.clone()
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
        .set("llama.rope.freq_base", Value::F32(to_f32(c.rope_theta)))
        .set("llama.attention.layer_norm_rms_epsilon", Value::F32(to_f32(c.rms_eps)))
        .set("llama.attention.key_length", u(c.head_dim))
        .set("llama.attention.value_length", u(c.head_dim))
        .set("general.file_type", Value::U32(quant.file_type()))
        .set("llama.vocab_size", u(c.vocab))
        .set("llama.rope.dimension_count", u(c.head_dim));
    w.set("general.quantization_version", Value::U32(2));
    tokenizer_metadata(w, model, c, notes)
}

/// A config.json float as GGUF stores it (f32, as llama.cpp's converter writes it).
#[allow(clippy::cast_possible_truncation)] // f64 to f32 rounds, as the converter does: not a cut.
fn to_f32(x: f64) -> f32 {
    x as f32
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
    let digits = format!("{:.0}", scaled.round()).trim_start_matches('0').len();
    format!("{scaled:.*}{suffix}", 2usize.saturating_sub(digits))
}

/// The chat template: `chat_template.jinja` (transformers 5), else tokenizer_config.json's
/// `chat_template`, a string or a list of named templates (the one named `default`), as
/// transformers reads them; `None` where the checkpoint has none.
fn chat_template(model: &HfFiles) -> Result<Option<String>, ConvertError> {
    if let Some(t) = &model.chat_template {
        return Ok(Some(t.clone()));
    }
    match &model.tokenizer_config["chat_template"] {
        Json::Null => Ok(None),
        Json::String(t) => Ok(Some(t.clone())),
        Json::Array(named) => named
            .iter()
            .find(|t| t["name"].as_str() == Some("default"))
            .and_then(|t| t["template"].as_str())
            .map(|t| Some(t.to_string()))
            .ok_or_else(|| {
                invalid("tokenizer_config.json: chat_template is a list with no template named \"default\"")
            }),
        other => Err(invalid(format!("tokenizer_config.json: chat_template is {other}, not a template"))),
    }
}

/// The vocabulary as GGUF arrays (`gpt2` BPE tokens, token types, merges), special token ids and
/// the chat template.
fn tokenizer_metadata(
    w: &mut GgufWriter,
    model: &HfFiles,
    c: &HfConfig,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let t = &model.tokenizer;
    let m = &t["model"];
    if m["type"].as_str() != Some("BPE") {
        return Err(invalid(format!(
            "tokenizer.json: model type {:?}; CareBot converts BPE (Llama-3) tokenizers",
            m["type"]
        )));
    }
    let vocab = m["vocab"].as_object().ok_or_else(|| invalid("tokenizer.json: model.vocab is missing"))?;
    // A vocabulary bigger than the tokenizer's is padded, as llama.cpp does (the embedding rows
    // past the tokenizer are never produced by it); a token the model has no row for is refused:
    // dropping it would make the tokenizer and the model disagree.
    let n = c.vocab;
    let slot = |id: &Json, text: &str| -> Result<usize, ConvertError> {
        id.as_u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < n).ok_or_else(|| {
            invalid(format!(
                "tokenizer.json: token {text:?} has id {id}, outside config.json's vocab_size {n}: \
                 the tokenizer and the model disagree"
            ))
        })
    };
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (text, id) in vocab {
        tokens[slot(id, text)?] = Some(text.clone());
    }
    let mut types = vec![1i32; n];
    for added in t["added_tokens"].as_array().into_iter().flatten() {
        let text = added["content"].as_str().ok_or_else(|| invalid(format!("tokenizer.json: added token {added}")))?;
        let id = slot(&added["id"], text)?;
        tokens[id] = Some(text.to_string());
        // Special added tokens are control tokens; the others are user-defined.
        types[id] = if added["special"].as_bool().unwrap_or(false) { 3 } else { 4 };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = m["merges"]
        .as_array()
        .ok_or_else(|| invalid("tokenizer.json: model.merges is missing"))?
        .iter()
        .map(|mg| match mg {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) if pair.len() == 2 => {
                Ok(format!("{} {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or("")))
            }
            other => Err(invalid(format!("tokenizer.json: unreadable merge {other}"))),
        })
        .collect::<Result<_, _>>()?;
    let id_of = |text: &str| -> Option<u32> {
        vocab.get(text).and_then(Json::as_u64).and_then(|v| u32::try_from(v).ok()).or_else(|| {
            t["added_tokens"]
                .as_array()?
                .iter()
                .find(|a| a["content"].as_str() == Some(text))
                .and_then(|a| a["id"].as_u64())
                .and_then(|v| u32::try_from(v).ok())
        })
    };
    let is_llama3 = id_of("<|begin_of_text|>").is_some() && id_of("<|eot_id|>").is_some();
    let pre = if is_llama3 { "llama-bpe" } else { "default" };
    if !is_llama3 {
        notes.push("the tokenizer is not Llama-3's; writing tokenizer.ggml.pre = default".into());
    }
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String(pre.into()))
        .set("tokenizer.ggml.tokens", Value::Array(tokens.into()))
        .set("tokenizer.ggml.token_type", Value::Array(types.into()))
        .set("tokenizer.ggml.merges", Value::Array(merges.into()));

    // BOS/EOS: the token named by tokenizer_config.json, else the id in generation_config.json.
    let tc = &model.tokenizer_config;
    let named = |key: &str| -> Option<u32> {
        let v = &tc[key];
        id_of(v.as_str().or_else(|| v["content"].as_str())?)
    };
    let gen_id = |key: &str| -> Option<u32> {
        let v = &model.generation_config[key];
        v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()).and_then(|v| u32::try_from(v).ok())
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
    if let Some(template) = chat_template(model)? {
        w.set("tokenizer.chat_template", Value::String(template));
    }
    Ok(())
}

impl Planned {
    /// The shape in the checkpoint: `[cols]` for 1-D tensors, else `[rows, cols]`.
    pub fn hf_shape(&self) -> Vec<usize> {
        if self.one_d { vec![self.shape[1]] } else { self.shape.to_vec() }
    }

    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    pub fn cols(&self) -> usize {
        self.shape[1]
    }

    /// Bytes of one row in the output.
    pub fn out_row_bytes(&self) -> usize {
        self.cols() / self.ty.block_size() * self.ty.block_bytes()
    }

    /// Rows that must stay together in one piece: the permutation moves rows within a head.
    pub fn row_group(&self) -> usize {
        match self.permute_heads {
            Some(heads) => self.rows() / heads.max(1),
            None => 1,
        }
    }
}

/// Everything about the output file except its tensors' bytes.
pub struct Conversion {
    pub cfg: HfConfig,
    /// In directory (and file) order.
    pub tensors: Vec<Planned>,
    pub writer: GgufWriter,
    /// Things worth telling the user (e.g. a tokenizer that is not Llama-3's).
    pub notes: Vec<String>,
}

impl Conversion {
    /// Plans the conversion of `files` to `quant`, given the names of every tensor the checkpoint
    /// holds: each must be one the model uses or one that cannot change its output
    /// ([`unused_tensor`]), and each tensor the model uses must be there.
    pub fn plan<'a>(
        files: &HfFiles,
        quant: Quant,
        checkpoint: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConvertError> {
        let cfg = HfConfig::from_json(&files.config)?;
        let held: std::collections::BTreeSet<&str> = checkpoint.into_iter().collect();
        if !cfg.tied && !held.contains("lm_head.weight") {
            return Err(invalid(
                "the checkpoint has no lm_head.weight, yet config.json says tie_word_embeddings is false: \
                 the output projection is missing (transformers would fill it with random values)",
            ));
        }
        let tensors = plan(&cfg, quant, held.contains("lm_head.weight"));
        let used: std::collections::BTreeSet<&str> = tensors.iter().filter_map(|p| p.hf.as_deref()).collect();
        if let Some(missing) = used.iter().find(|n| !held.contains(*n)) {
            return Err(invalid(format!("the checkpoint has no tensor {missing:?}")));
        }
        if let Some(unknown) = held.iter().find(|n| !used.contains(*n) && !unused_tensor(n, &cfg)) {
            return Err(invalid(format!(
                "the checkpoint holds tensor {unknown:?}, which a Llama model does not have: it would be \
                 dropped, and the model it belongs to may compute something else (biases, extra norms, \
                 experts…)"
            )));
        }
        let mut writer = GgufWriter::new();
        let mut notes = Vec::new();
        metadata(&mut writer, files, &cfg, quant, &mut notes)?;
        for p in &tensors {
            let dims: Vec<u64> =
                if p.one_d { vec![p.shape[1] as u64] } else { vec![p.shape[1] as u64, p.shape[0] as u64] };
            writer.add_tensor(TensorSpec::new(p.gguf.clone(), &dims, p.ty)).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(Conversion { cfg, tensors, writer, notes })
    }

    /// The file's header: magic, metadata, tensor directory, padding.
    pub fn header(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.writer.write_header(&mut out).expect("writing to memory");
        out
    }

    /// (start in the file, data bytes, bytes with alignment padding) of each tensor, given the
    /// header's length.
    pub fn layout(&self, header_len: u64) -> Vec<(u64, u64, u64)> {
        let alignment = self.writer.alignment();
        let mut at = header_len;
        self.writer
            .tensors()
            .iter()
            .map(|t| {
                let n = t.n_bytes().expect("checked when added");
                let padded = n.next_multiple_of(alignment);
                let entry = (at, n, padded);
                at += padded;
                entry
            })
            .collect()
    }

    /// The `rope_freqs` tensor's values (planned only for Llama-3.1 RoPE scaling).
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        self.cfg.rope_factors()
    }
}

/// Element types a checkpoint's weights may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    BF16,
    F16,
    F32,
}

impl SourceDtype {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "BF16" => Some(SourceDtype::BF16),
            "F16" => Some(SourceDtype::F16),
            "F32" => Some(SourceDtype::F32),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            _ => 2,
        }
    }

    /// The ggml type with the same encoding.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            SourceDtype::BF16 => GgmlType::BF16,
            SourceDtype::F16 => GgmlType::F16,
            SourceDtype::F32 => GgmlType::F32,
        }
    }

    /// Widens raw little-endian values to f32 (a trailing partial value is ignored).
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; bytes.len() / self.size()];
        crate::quant::dequantize(self.ggml_type(), &bytes[..out.len() * self.size()], &mut out)
            .expect("whole values of an unquantized type");
        out
    }
}

/// Where one tensor's bytes are in a safetensors file.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    pub dtype: SourceDtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    pub start: u64,
    pub end: u64,
}

/// Bytes of a safetensors file's header-length prefix.
/// CareBot's official model repository on the Hugging Face hub: bf16 safetensors (nobody hosts a
/// 4-bit file of it). The browser prepares it, and `carebot chat` converts it, when no model is named.
pub const CAREBOT_REPO: &str = "MonteXiaofeng/CareBot_Medical_multi-llama3-8b-instruct";

pub const SAFETENSORS_PREFIX: usize = 8;

/// The largest safetensors header read: 16 MiB. A Llama shard lists at most a few hundred
/// tensors in a few tens of KB (Llama-3.1-405B's whole index is ≈ 100 KB); a hostile length is
/// refused from the 8-byte prefix, before anything is allocated.
pub const MAX_SAFETENSORS_HEADER: u64 = 16 << 20;

/// The largest size a checkpoint's file `name` may have to be read whole and parsed: a hostile
/// link or folder cannot make the page or the CLI hold more. Llama-3's tokenizer.json is 9 MB
/// (17 MB as transformers 5 indents it); config.json, generation_config.json and the chat
/// template are a few KB; tokenizer_config.json ≈ 50 KB; the shard index ≈ 25 KB for an 8B.
pub fn json_file_limit(name: &str) -> u64 {
    match name {
        "tokenizer.json" => 64 << 20,
        "tokenizer_config.json" | "model.safetensors.index.json" => 16 << 20,
        _ => 4 << 20,
    }
}

/// Refuses a file of `size` bytes that is bigger than [`json_file_limit`] allows for `name`.
pub fn check_json_file_size(name: &str, size: u64) -> Result<(), ConvertError> {
    let limit = json_file_limit(name);
    if size > limit {
        return Err(invalid(format!(
            "{name} is {size} bytes, more than the {limit} bytes such a file can need: not read"
        )));
    }
    Ok(())
}

/// The length of the JSON header a safetensors file starts with (from its first 8 bytes),
/// checked against the file's size.
pub fn safetensors_header_len(prefix: &[u8], file_size: u64) -> Result<usize, ConvertError> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("not a safetensors file (shorter than 8 bytes)"))?;
    let n = u64::from_le_bytes(bytes);
    if n.saturating_add(8) > file_size {
        return Err(invalid(format!("not a safetensors file (header length {n} in a file of {file_size} bytes)")));
    }
    if n > MAX_SAFETENSORS_HEADER {
        return Err(invalid(format!(
            "a safetensors header of {n} bytes, more than the {MAX_SAFETENSORS_HEADER} any checkpoint needs"
        )));
    }
    usize::try_from(n).map_err(|_| invalid(format!("a safetensors header of {n} bytes does not fit in memory here")))
}

/// The tensors listed in a safetensors JSON header, each checked to lie inside the file and to
/// have as many bytes as its shape needs.
pub fn parse_safetensors_header(json: &[u8], file_size: u64) -> Result<BTreeMap<String, SourceTensor>, ConvertError> {
    let header: Json = serde_json::from_slice(json).map_err(|e| invalid(format!("safetensors header: {e}")))?;
    let map = header.as_object().ok_or_else(|| invalid("safetensors header is not an object"))?;
    let data_start = (SAFETENSORS_PREFIX + json.len()) as u64;
    let mut out = BTreeMap::new();
    for (name, t) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype_name = t["dtype"].as_str().unwrap_or("?");
        let dtype = SourceDtype::from_name(dtype_name)
            .ok_or_else(|| invalid(format!("tensor {name:?} is {dtype_name}; expected BF16, F16 or F32")))?;
        let shape: Option<Vec<usize>> = t["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect());
        let offsets: Option<Vec<u64>> =
            t["data_offsets"].as_array().map(|a| a.iter().map(Json::as_u64).collect()).unwrap_or(None);
        let (Some(shape), Some([begin, end])) =
            (shape, offsets.as_deref().map(|o| <[u64; 2]>::try_from(o).ok()).unwrap_or(None))
        else {
            return Err(invalid(format!("tensor {name:?}: unreadable shape or data_offsets")));
        };
        let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let bytes = elements.and_then(|e| e.checked_mul(dtype.size() as u64));
        let stop = data_start.checked_add(end);
        if bytes != end.checked_sub(begin) || stop.is_none_or(|s| s > file_size) {
            return Err(invalid(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] do not fit shape {shape:?} of {dtype_name} in a file of {file_size} bytes"
            )));
        }
        out.insert(name.clone(), SourceTensor { dtype, shape, start: data_start + begin, end: data_start + end });
    }
    Ok(out)
}

/// `weight_map` of `model.safetensors.index.json`: tensor name → shard file name.
pub fn weight_map(index: &Json) -> Result<BTreeMap<String, String>, ConvertError> {
    let map = index["weight_map"].as_object().ok_or_else(|| invalid("model.safetensors.index.json: no weight_map"))?;
    map.iter()
        .map(|(k, v)| match v.as_str() {
            // A shard is fetched by this name: no paths out of the repository.
            Some(f) if !f.is_empty() && !f.contains("..") && !f.starts_with('/') => Ok((k.clone(), f.to_string())),
            _ => Err(invalid(format!("model.safetensors.index.json: tensor {k:?} has shard {v}"))),
        })
        .collect()
}

/// The q/k row permutation for adjacent-pair RoPE (llama.cpp's `LlamaModel.permute`).
pub use crate::synthetic::permute_rows_for_rope;

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // Offsets into small files built in memory.
mod tests {
    use super::*;
    use crate::gguf::Array;
    use safetensors::{Dtype, tensor::TensorView};

    fn shard() -> Vec<u8> {
        let a: Vec<u8> = (0..6u16).flat_map(|v| half::bf16::from_f32(v as f32 - 2.5).to_le_bytes()).collect();
        let b: Vec<u8> = (0..3u32).flat_map(|v| (v as f32 * 0.25).to_le_bytes()).collect();
        let views = vec![
            ("a".to_string(), TensorView::new(Dtype::BF16, vec![2, 3], &a).unwrap()),
            ("b".to_string(), TensorView::new(Dtype::F32, vec![3], &b).unwrap()),
        ];
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn safetensors_headers_are_read_from_their_first_bytes_alone() {
        let file = shard();
        let size = file.len() as u64;
        let n = safetensors_header_len(&file[..8], size).unwrap();
        let tensors = parse_safetensors_header(&file[8..8 + n], size).unwrap();
        let a = &tensors["a"];
        assert_eq!((a.dtype, a.shape.clone()), (SourceDtype::BF16, vec![2, 3]));
        let values = a.dtype.to_f32(&file[a.start as usize..a.end as usize]);
        assert_eq!(values, vec![-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
        let b = &tensors["b"];
        assert_eq!(b.dtype.to_f32(&file[b.start as usize..b.end as usize]), vec![0.0, 0.25, 0.5]);
    }

    #[test]
    fn bad_safetensors_headers_are_errors() {
        let file = shard();
        let size = file.len() as u64;
        // Truncated files, absurd lengths.
        assert!(safetensors_header_len(&file[..5], size).is_err());
        assert!(safetensors_header_len(&u64::MAX.to_le_bytes(), size).is_err());
        assert!(safetensors_header_len(&file[..8], 20).is_err());
        // A 100 MB header (within safetensors' own cap) in a file that has it: refused from the
        // prefix alone.
        let e = safetensors_header_len(&100_000_000u64.to_le_bytes(), 200_000_000).unwrap_err();
        assert!(e.to_string().contains("100000000 bytes, more than the 16777216"), "{e}");
        assert!(safetensors_header_len(&MAX_SAFETENSORS_HEADER.to_le_bytes(), 200_000_000).is_ok());
        let n = safetensors_header_len(&file[..8], size).unwrap();
        let json = &file[8..8 + n];
        // A file cut short: the tensors no longer fit.
        assert!(parse_safetensors_header(json, size - 1).is_err());
        for bad in [
            r#"{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
            r#"{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}}"#,
            r#"{"a":{"dtype":"BF16","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}}"#,
            r#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[18446744073709551615,3]}}"#,
            r#"{"a":{"dtype":"BF16","shape":"x","data_offsets":[0,4]}}"#,
            r#"[1,2]"#,
            "not json",
        ] {
            assert!(parse_safetensors_header(bad.as_bytes(), 1 << 20).is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_names_cannot_leave_the_repository() {
        let ok = serde_json::json!({"weight_map": {"x": "model-00001-of-00002.safetensors"}});
        assert_eq!(weight_map(&ok).unwrap()["x"], "model-00001-of-00002.safetensors");
        for bad in ["../secret", "/etc/passwd", ""] {
            assert!(weight_map(&serde_json::json!({"weight_map": {"x": bad}})).is_err(), "{bad}");
        }
        assert!(weight_map(&serde_json::json!({})).is_err());
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let c = serde_json::json!({"architectures": ["MistralForCausalLM"], "model_type": "mistral"});
        assert!(matches!(HfConfig::from_json(&c), Err(ConvertError::NotLlama(_))));
    }

    /// Llama-3.1-8B's config.json as transformers 4.x writes it.
    fn config_4x() -> Json {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu", "attention_bias": false,
            "mlp_bias": false, "pretraining_tp": 1, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
            "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192 },
        })
    }

    /// The same as transformers 5.x writes it: RoPE moved into `rope_parameters`, `dtype`.
    fn config_5x() -> Json {
        let mut c = config_4x();
        let o = c.as_object_mut().unwrap();
        let mut rope = o.remove("rope_scaling").unwrap();
        rope["rope_theta"] = o.remove("rope_theta").unwrap();
        o.insert("rope_parameters".into(), rope);
        let dtype = o.remove("torch_dtype").unwrap();
        o.insert("dtype".into(), dtype);
        c
    }

    fn refusal(c: &Json) -> String {
        match HfConfig::from_json(c) {
            Err(ConvertError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn both_config_layouts_give_the_same_rope() {
        let old = HfConfig::from_json(&config_4x()).unwrap();
        let new = HfConfig::from_json(&config_5x()).unwrap();
        assert_eq!((old.rope_theta, old.rope_llama3), (500000.0, Some((8.0, 1.0, 4.0, 8192.0))));
        assert_eq!((new.rope_theta, new.rope_llama3), (old.rope_theta, old.rope_llama3));
        // Llama-3.0: plain RoPE, in either layout.
        let mut plain = config_5x();
        plain["rope_parameters"] = serde_json::json!({ "rope_theta": 500000.0, "rope_type": "default" });
        assert_eq!(HfConfig::from_json(&plain).unwrap().rope_llama3, None);
        let mut plain = config_4x();
        plain["rope_scaling"] = Json::Null;
        let plain = HfConfig::from_json(&plain).unwrap();
        assert_eq!((plain.rope_theta, plain.rope_llama3), (500000.0, None));
    }

    #[test]
    fn fields_that_change_the_math_are_read_or_refused_by_name() {
        // The bug this guards: a 5.x config read as if RoPE's base were the default 10000.
        let mut c = config_5x();
        c["rope_parameters"].as_object_mut().unwrap().remove("rope_theta");
        assert!(refusal(&c).contains("no rope_theta"), "{}", refusal(&c));
        let mut c = config_4x();
        c["rope_parameters"] = serde_json::json!({ "rope_theta": 10000.0 });
        assert!(refusal(&c).contains("disagree"));
        for kind in ["linear", "dynamic", "yarn", "longrope"] {
            let mut c = config_5x();
            c["rope_parameters"]["rope_type"] = kind.into();
            let m = refusal(&c);
            assert!(m.contains("rope_parameters.rope_type") && m.contains(kind), "{m}");
            let mut c = config_4x();
            c["rope_scaling"] = serde_json::json!({ "type": kind, "factor": 2.0 });
            assert!(refusal(&c).contains("rope_scaling.rope_type"));
        }
        let mut c = config_4x();
        c["rope_scaling"].as_object_mut().unwrap().remove("low_freq_factor");
        assert!(refusal(&c).contains("rope_scaling.low_freq_factor"));
        // transformers 5 saves partial_rotary_factor inside rope_parameters; unknown keys there too.
        for (key, value) in [("partial_rotary_factor", Json::from(0.5)), ("attention_factor", Json::from(0.9))] {
            let mut c = config_5x();
            c["rope_parameters"][key] = value.clone();
            assert!(refusal(&c).contains(&format!("rope_parameters.{key}")), "{}", refusal(&c));
            c["rope_parameters"] = serde_json::json!({ "rope_theta": 500000.0, "rope_type": "default", key: value });
            assert!(refusal(&c).contains(&format!("rope_parameters.{key}")), "{}", refusal(&c));
        }
        let mut c = config_5x();
        c["rope_parameters"]["partial_rotary_factor"] = 1.0.into();
        assert!(HfConfig::from_json(&c).is_ok());
        for (field, value) in [
            ("attention_bias", Json::Bool(true)),
            ("mlp_bias", Json::Bool(true)),
            ("hidden_act", "gelu".into()),
            ("partial_rotary_factor", 0.5.into()),
            ("rms_norm_eps", Json::Null),
            ("quantization_config", serde_json::json!({"quant_method": "gptq", "bits": 4})),
            ("auto_map", serde_json::json!({"AutoModelForCausalLM": "modeling_x.XForCausalLM"})),
        ] {
            let mut c = config_5x();
            c[field] = value;
            assert!(refusal(&c).contains(field), "{field}: {}", refusal(&c));
        }
        // Counts the GGUF stores as u32 are refused past it, never cut.
        let mut c = config_4x();
        c["num_hidden_layers"] = (1u64 << 32).into();
        assert!(refusal(&c).contains("num_hidden_layers"));
        // An explicit head_dim (Llama-3.2 style) is read.
        let mut c = config_5x();
        c["head_dim"] = 64.into();
        assert_eq!(HfConfig::from_json(&c).unwrap().head_dim, 64);
    }

    #[test]
    fn the_chat_template_is_found_where_each_transformers_version_saves_it() {
        let files = |tokenizer_config: Json, jinja: Option<&str>| HfFiles {
            config: Json::Null,
            tokenizer: Json::Null,
            tokenizer_config,
            generation_config: Json::Null,
            chat_template: jinja.map(String::from),
            dir_name: String::new(),
        };
        let t = |f: &HfFiles| chat_template(f);
        // 4.x: in tokenizer_config.json; 5.x: chat_template.jinja, which wins where both exist.
        assert_eq!(t(&files(serde_json::json!({"chat_template": "A"}), None)).unwrap().as_deref(), Some("A"));
        assert_eq!(t(&files(serde_json::json!({"chat_template": "A"}), Some("B"))).unwrap().as_deref(), Some("B"));
        assert_eq!(t(&files(serde_json::json!({"tokenizer_class": "TokenizersBackend"}), None)).unwrap(), None);
        let named = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]});
        assert_eq!(t(&files(named, None)).unwrap().as_deref(), Some("D"));
        let nameless = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "T"}]});
        assert!(t(&files(nameless, None)).unwrap_err().to_string().contains("default"));
        assert!(t(&files(serde_json::json!({"chat_template": 3}), None)).is_err());
    }

    #[test]
    fn the_layout_is_where_the_writer_puts_each_tensor() {
        let spec = crate::synthetic::SyntheticSpec::tiny_llama3();
        let s = &spec;
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": s.dim, "intermediate_size": s.ffn_dim,
            "num_hidden_layers": s.n_layers, "num_attention_heads": s.n_heads,
            "num_key_value_heads": s.n_kv_heads, "vocab_size": s.vocab, "max_position_embeddings": s.context,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        });
        let vocab: serde_json::Map<String, Json> =
            (0..s.vocab).map(|i| (format!("t{i}"), Json::from(i as u64))).collect();
        let tokenizer = serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": ["t1 t2"]}});
        let files = HfFiles {
            config,
            tokenizer,
            tokenizer_config: Json::Null,
            generation_config: Json::Null,
            chat_template: None,
            dir_name: "tiny".into(),
        };
        let names: Vec<String> = s.hf_names().into_iter().map(|(hf, _)| hf).collect();
        let mut c = Conversion::plan(&files, Quant::Q4KM, names.iter().map(String::as_str)).unwrap();
        let header = c.header();
        let layout = c.layout(header.len() as u64);
        let data: Vec<Vec<u8>> = layout.iter().map(|&(_, n, _)| vec![7u8; n as usize]).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let file = c.writer.to_bytes(&refs).unwrap();
        assert_eq!(&file[..header.len()], &header[..]);
        let parsed = crate::gguf::GgufFile::parse(&header, file.len() as u64).unwrap();
        for ((start, n, padded), t) in layout.iter().zip(&parsed.tensors) {
            assert_eq!((t.offset, t.n_bytes), (*start, *n), "{}", t.name);
            assert!(padded >= n);
        }
        let (last_start, _, last_padded) = *layout.last().unwrap();
        assert_eq!(last_start + last_padded, file.len() as u64);
        // The output, and attn_v + ffn_down of the last layer (llama.cpp's use_more_bits for 2 layers).
        assert_eq!(c.tensors.iter().filter(|p| p.ty == GgmlType::Q6_K).count(), 3);
    }

    /// A tiny model's files: config.json with `vocab_size` and a BPE tokenizer of `tokens` ids.
    fn tiny_files(vocab_size: usize, tokens: usize, tied: bool) -> HfFiles {
        let s = crate::synthetic::SyntheticSpec::tiny_llama3();
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": s.dim, "intermediate_size": s.ffn_dim,
            "num_hidden_layers": s.n_layers, "num_attention_heads": s.n_heads,
            "num_key_value_heads": s.n_kv_heads, "vocab_size": vocab_size, "max_position_embeddings": s.context,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": tied,
        });
        let vocab: serde_json::Map<String, Json> = (0..tokens).map(|i| (format!("t{i}"), Json::from(i))).collect();
        HfFiles {
            config,
            tokenizer: serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": ["t1 t2"]}}),
            tokenizer_config: Json::Null,
            generation_config: Json::Null,
            chat_template: None,
            dir_name: "tiny".into(),
        }
    }

    fn tiny_names(tied: bool) -> Vec<String> {
        let s = crate::synthetic::SyntheticSpec { tied_output: tied, ..crate::synthetic::SyntheticSpec::tiny_llama3() };
        s.hf_names().into_iter().map(|(hf, _)| hf).collect()
    }

    fn plan_error(files: &HfFiles, names: &[String]) -> String {
        match Conversion::plan(files, Quant::F16, names.iter().map(String::as_str)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected a refusal"),
        }
    }

    #[test]
    fn every_checkpoint_tensor_is_used_or_harmless() {
        let names = tiny_names(false);
        assert!(Conversion::plan(&tiny_files(256, 256, false), Quant::F16, names.iter().map(String::as_str)).is_ok());
        // Tensors of some other model are refused by name, never dropped.
        for extra in ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.q_norm.weight"] {
            let mut with = names.clone();
            with.push(extra.into());
            assert!(plan_error(&tiny_files(256, 256, false), &with).contains(extra));
        }
        // Saved RoPE frequencies (old transformers) are recomputed, so they may be there.
        let mut with = names.clone();
        with.push("model.layers.0.self_attn.rotary_emb.inv_freq".into());
        assert!(Conversion::plan(&tiny_files(256, 256, false), Quant::F16, with.iter().map(String::as_str)).is_ok());
        // A missing weight is named.
        let without: Vec<String> = names.iter().filter(|n| *n != "model.norm.weight").cloned().collect();
        assert!(plan_error(&tiny_files(256, 256, false), &without).contains("model.norm.weight"));
        // Untied, but no lm_head: refused (transformers would make it up), not silently tied.
        let headless = tiny_names(true);
        assert!(plan_error(&tiny_files(256, 256, false), &headless).contains("tie_word_embeddings"));
        // Tied: no output.weight planned, and a stored lm_head (which transformers ignores) is left out.
        for names in [tiny_names(true), names] {
            let c =
                Conversion::plan(&tiny_files(256, 256, true), Quant::F16, names.iter().map(String::as_str)).unwrap();
            assert!(c.tensors.iter().all(|p| p.gguf != "output.weight"));
        }
    }

    /// A head size other than hidden / heads (no Llama-3.x has one, but transformers and llama.cpp
    /// allow it) sizes the attention projections and is written as llama.cpp writes it.
    #[test]
    fn an_explicit_head_dim_sizes_the_attention() {
        let mut files = tiny_files(256, 256, false);
        files.config["head_dim"] = 32.into();
        let names = tiny_names(false);
        let mut c = Conversion::plan(&files, Quant::F16, names.iter().map(String::as_str)).unwrap();
        let shape = |n: &str| c.tensors.iter().find(|p| p.gguf == n).unwrap().shape;
        assert_eq!(shape("blk.0.attn_q.weight"), [4 * 32, 256]);
        assert_eq!(shape("blk.0.attn_k.weight"), [2 * 32, 256]);
        assert_eq!(shape("blk.0.attn_output.weight"), [256, 4 * 32]);
        let header = c.header();
        let file = crate::gguf::GgufFile::parse(&header, u64::MAX).unwrap();
        for key in ["llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"] {
            assert_eq!(file.metadata.get_u64(key), Some(32), "{key}");
        }
    }

    #[test]
    fn the_tokenizer_must_fit_the_vocabulary() {
        let names = tiny_names(false);
        // More rows than tokens: padded as llama.cpp pads, with unused tokens.
        let c = Conversion::plan(&tiny_files(264, 256, false), Quant::F16, names.iter().map(String::as_str));
        let Ok(mut c) = c else { panic!("a padded vocabulary is read") };
        let header = c.header();
        let file = crate::gguf::GgufFile::parse(&header, u64::MAX).unwrap();
        let Some(Value::Array(Array::String(tokens))) = file.metadata.get("tokenizer.ggml.tokens") else { panic!() };
        assert_eq!((tokens.len(), tokens[263].as_str()), (264, "[PAD263]"));
        let Some(Value::Array(Array::I32(types))) = file.metadata.get("tokenizer.ggml.token_type") else { panic!() };
        assert_eq!((types[255], types[256]), (1, 5));
        // A token past the model's rows: refused, naming it.
        let m = plan_error(&tiny_files(256, 260, false), &names);
        assert!(m.contains("vocab_size 256") && m.contains("t25"), "{m}");
    }
}
