//! Llama hyperparameters read from GGUF metadata, checked against the tensor directory.

use crate::gguf::GgufFile;
use crate::quant::GgmlType;

/// Hyperparameters of a llama-architecture model (Llama 2/3/3.1, SmolLM, CareBot).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    /// Model (embedding) width.
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Leading dimensions of each head that RoPE rotates (= head_dim for Llama).
    pub rope_dim: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// No `output.weight`: the output projection reuses `token_embd.weight`.
    pub tied_output: bool,
    /// Llama-3.1 style frequency factors are present (`rope_freqs.weight`).
    pub has_rope_freqs: bool,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("general.architecture is {0:?}; CareBot runs llama-architecture models only")]
    WrongArchitecture(String),
    #[error("GGUF metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("GGUF metadata key {key:?}: {reason}")]
    BadValue { key: String, reason: String },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { tensor: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("tensor {tensor:?} has type {ty}, which CareBot cannot read")]
    UnsupportedType { tensor: String, ty: &'static str },
}

/// llama.cpp's `rope_freqs` factors for Llama-3.1 RoPE scaling, bit for bit as its converter
/// computes them (torch f32 arithmetic, `a / t` as `(1 / t) · a`): frequencies with long
/// wavelengths are divided by `factor`, short ones kept, and those between blended smoothly.
pub fn llama3_rope_factors(theta: f64, head_dim: usize, factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
    let (theta, factor, low, high, original) = (theta as f32, factor as f32, low as f32, high as f32, original as f32);
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = (1.0 / freq) * two_pi;
            if wavelen < original / high {
                1.0
            } else if wavelen > original / low {
                factor
            } else {
                let smooth = ((1.0 / wavelen) * original - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The tensor names of layer `i`, in llama.cpp's naming.
pub fn block_tensor(i: usize, name: &str) -> String {
    format!("blk.{i}.{name}.weight")
}

/// Refuses the `llama.*` keys with which llama.cpp would compute something this engine does not
/// (see the table on [`LlamaConfig::from_gguf`]), naming the key.
fn refuse_unsupported_keys(m: &crate::gguf::Metadata) -> Result<(), ConfigError> {
    let refuse = |key: &str, v: &crate::gguf::Value, why: &str| {
        Err(ConfigError::BadValue { key: key.into(), reason: format!("{} is not supported: {why}", v.summary()) })
    };
    let linear = || ["llama.rope.scaling.factor", "llama.rope.scale_linear"].iter().find_map(|k| Some((*k, m.get(k)?)));
    if let Some(v) = m.get("llama.rope.scaling.type") {
        match v.as_str() {
            Some("none" | "linear") => {}
            _ => return refuse("llama.rope.scaling.type", v, "Llama-3.1's scaling comes as the rope_freqs tensor"),
        }
    }
    if let Some((key, v)) = linear().filter(|(_, v)| !matches!(v.as_f64(), Some(f) if f == 0.0 || f == 1.0)) {
        return refuse(key, v, "linear RoPE scaling");
    }
    if let Some(v) = m.get("llama.rope.scaling.attn_factor").filter(|v| v.as_f64() != Some(1.0)) {
        return refuse("llama.rope.scaling.attn_factor", v, "RoPE attention scaling");
    }
    if let Some((key, v)) =
        m.iter().find(|(k, _)| *k == "llama.rope.scaling.alpha" || k.starts_with("llama.rope.scaling.yarn_"))
    {
        return refuse(key, v, "YaRN-style RoPE scaling");
    }
    if let Some(v) = m.get("llama.expert_count").filter(|v| v.as_u64() != Some(0)) {
        return refuse("llama.expert_count", v, "CareBot runs dense Llama models, not a mixture of experts");
    }
    if let Some(v) = m.get("llama.attention.causal").filter(|v| v.as_bool() != Some(true)) {
        return refuse("llama.attention.causal", v, "a chat model's attention is causal");
    }
    if let Some(v) = m.get("llama.embedding_length_out").filter(|v| v.as_u64() != m.get_u64("llama.embedding_length")) {
        return refuse("llama.embedding_length_out", v, "the output width must be the embedding length");
    }
    Ok(())
}

impl LlamaConfig {
    /// Everything read that changes the math, in one line, so a person can see a misread: shapes,
    /// the trained context, RMSNorm's epsilon, RoPE's base and scaling, and whether the output
    /// projection is tied to the embeddings. `carebot info` and the page's model details both
    /// show this line.
    pub fn summary(&self) -> String {
        format!(
            "{} layers, dim {}, {} heads ({} KV, head dim {}), FFN {}, vocab {}; trained context {}, \
             RMS eps {:e}, RoPE base {}, RoPE scaling {}, output {}",
            self.n_layers,
            self.dim,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.ffn_dim,
            self.vocab_size,
            self.context_length,
            self.rms_eps,
            self.rope_theta,
            if self.has_rope_freqs { "Llama-3.1 (rope_freqs)" } else { "none" },
            if self.tied_output { "tied to the embeddings" } else { "its own matrix" },
        )
    }

    /// Reads `llama.*` keys and checks every tensor the model needs exists with the right shape.
    ///
    /// Every `llama.*` key llama.cpp reads for this architecture, and what happens here; keys
    /// llama.cpp does not read for a llama model cannot change its output, and are not read here.
    ///
    /// | key | handling |
    /// | --- | --- |
    /// | `block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count`, `attention.layer_norm_rms_epsilon`, `context_length` | read; required (a per-layer array is refused) |
    /// | `attention.head_count_kv` | read; absent means `head_count`, as llama.cpp does |
    /// | `attention.key_length` | read; absent means `embedding_length / head_count`, as llama.cpp does |
    /// | `attention.value_length` | must equal the key length |
    /// | `rope.dimension_count` | must equal the key length (llama.cpp refuses the rest for llama too) |
    /// | `rope.freq_base` | read; absent means 10000, the value the GGUF format and llama.cpp define |
    /// | `rope.scaling.type` | absent, `none` or `linear` (with no factor); `yarn`, `longrope`, … refused. Llama-3.1's scaling comes as the `rope_freqs` tensor, which is read |
    /// | `rope.scaling.factor`, `rope.scale_linear` | absent, 0 or 1; any other factor is refused |
    /// | `rope.scaling.attn_factor` | absent or 1, else refused |
    /// | `rope.scaling.alpha`, `rope.scaling.yarn_*` | refused: scaling CareBot does not implement |
    /// | `rope.scaling.original_context_length`, `rope.scaling.finetuned` | ignored: used only by scaling types that are refused |
    /// | `expert_count` | absent or 0 (a mixture of experts is refused) |
    /// | `attention.causal` | absent or true |
    /// | `embedding_length_out` | absent or equal to `embedding_length` |
    /// | `vocab_size` | read (else the embedding's rows); must equal the number of tokens in `tokenizer.ggml.tokens` |
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ConfigError> {
        let arch = file.architecture().ok_or_else(|| ConfigError::MissingKey("general.architecture".into()))?;
        if arch != "llama" {
            return Err(ConfigError::WrongArchitecture(arch.to_string()));
        }
        let m = &file.metadata;
        let count = |key: &str| -> Result<Option<usize>, ConfigError> {
            let full = format!("llama.{key}");
            match m.get(&full) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(Some(n as usize)),
                    _ => Err(ConfigError::BadValue {
                        key: full,
                        reason: format!("expected a positive integer, found {}", v.summary()),
                    }),
                },
            }
        };
        let required = |key: &str| count(key)?.ok_or_else(|| ConfigError::MissingKey(format!("llama.{key}")));
        let float = |key: &str, default: Option<f64>| -> Result<f32, ConfigError> {
            let full = format!("llama.{key}");
            match m.get(&full) {
                None => default.map(|d| d as f32).ok_or(ConfigError::MissingKey(full)),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x as f32),
                    _ => Err(ConfigError::BadValue {
                        key: full,
                        reason: format!("expected a positive number, found {}", v.summary()),
                    }),
                },
            }
        };

        let n_layers = required("block_count")?;
        let dim = required("embedding_length")?;
        let ffn_dim = required("feed_forward_length")?;
        let n_heads = required("attention.head_count")?;
        let n_kv_heads = count("attention.head_count_kv")?.unwrap_or(n_heads);
        let rms_eps = float("attention.layer_norm_rms_epsilon", None)?;
        // llama.cpp's own default where the key is absent.
        let rope_theta = float("rope.freq_base", Some(10000.0))?;
        refuse_unsupported_keys(m)?;
        let context_length = required("context_length")?;
        if dim % n_heads != 0 {
            return Err(ConfigError::BadValue {
                key: "llama.attention.head_count".into(),
                reason: format!("{n_heads} heads do not divide embedding_length {dim}"),
            });
        }
        if n_heads % n_kv_heads != 0 {
            return Err(ConfigError::BadValue {
                key: "llama.attention.head_count_kv".into(),
                reason: format!("{n_kv_heads} KV heads do not divide {n_heads} heads"),
            });
        }
        let head_dim = count("attention.key_length")?.unwrap_or(dim / n_heads);
        for (key, what) in
            [("attention.value_length", "value head size"), ("rope.dimension_count", "RoPE dimension count")]
        {
            match count(key)? {
                Some(n) if n != head_dim => {
                    return Err(ConfigError::BadValue {
                        key: format!("llama.{key}"),
                        reason: format!(
                            "a {what} of {n} differs from the key head size {head_dim}, which Llama does not do"
                        ),
                    });
                }
                _ => {}
            }
        }
        if head_dim % 2 != 0 {
            return Err(ConfigError::BadValue {
                key: "llama.attention.key_length".into(),
                reason: format!("RoPE needs an even head size, not {head_dim}"),
            });
        }
        let rope_dim = head_dim;
        let embd =
            file.tensor("token_embd.weight").ok_or_else(|| ConfigError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = match count("vocab_size")? {
            Some(v) => v,
            None => embd.dims.get(1).copied().unwrap_or(0) as usize,
        };
        if let Some(tokens) = m.get_array("tokenizer.ggml.tokens").filter(|t| t.len() != vocab_size) {
            return Err(ConfigError::BadValue {
                key: "tokenizer.ggml.tokens".into(),
                reason: format!(
                    "{} tokens for a model with {vocab_size} vocabulary rows: the tokenizer and the model disagree",
                    tokens.len()
                ),
            });
        }
        let tied_output = file.tensor("output.weight").is_none();
        let has_rope_freqs = file.tensor("rope_freqs.weight").is_some();
        let cfg = LlamaConfig {
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            rms_eps,
            rope_theta,
            rope_dim,
            context_length,
            tied_output,
            has_rope_freqs,
        };
        for (name, shape) in cfg.tensor_shapes() {
            let t = file.tensor(&name).ok_or_else(|| ConfigError::MissingTensor(name.clone()))?;
            if t.dims != shape {
                return Err(ConfigError::ShapeMismatch { tensor: name, expected: shape, found: t.dims.clone() });
            }
            if !t.ty.is_supported() {
                return Err(ConfigError::UnsupportedType { tensor: name, ty: t.ty.name() });
            }
            if shape.len() == 1 && !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                return Err(ConfigError::UnsupportedType { tensor: name, ty: t.ty.name() });
            }
        }
        Ok(cfg)
    }

    /// Width of the query projection (n_heads × head_dim).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the key and value projections (n_kv_heads × head_dim).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Every tensor the model reads with its ggml shape (`[row length, rows]`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<u64>)> {
        let (d, q, kv, f, v) =
            (self.dim as u64, self.q_dim() as u64, self.kv_dim() as u64, self.ffn_dim as u64, self.vocab_size as u64);
        let mut out = vec![("token_embd.weight".to_string(), vec![d, v])];
        for i in 0..self.n_layers {
            out.push((block_tensor(i, "attn_norm"), vec![d]));
            out.push((block_tensor(i, "attn_q"), vec![d, q]));
            out.push((block_tensor(i, "attn_k"), vec![d, kv]));
            out.push((block_tensor(i, "attn_v"), vec![d, kv]));
            out.push((block_tensor(i, "attn_output"), vec![q, d]));
            out.push((block_tensor(i, "ffn_norm"), vec![d]));
            out.push((block_tensor(i, "ffn_gate"), vec![d, f]));
            out.push((block_tensor(i, "ffn_up"), vec![d, f]));
            out.push((block_tensor(i, "ffn_down"), vec![f, d]));
        }
        out.push(("output_norm.weight".to_string(), vec![d]));
        if !self.tied_output {
            out.push(("output.weight".to_string(), vec![d, v]));
        }
        if self.has_rope_freqs {
            out.push(("rope_freqs.weight".to_string(), vec![self.rope_dim as u64 / 2]));
        }
        out
    }
}
