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

#[derive(Debug, thiserror::Error, PartialEq)]
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
        // RoPE scaling that llama.cpp would apply from these keys (linear, YaRN) is not implemented
        // here: refused rather than ignored. Llama-3.1's scaling comes as the rope_freqs tensor.
        match m.get("llama.rope.scaling.type") {
            None => {}
            Some(v) if v.as_str() == Some("none") => {}
            Some(v) => {
                return Err(ConfigError::BadValue {
                    key: "llama.rope.scaling.type".into(),
                    reason: format!("{} is not supported (Llama-3.1's scaling comes as rope_freqs)", v.summary()),
                });
            }
        }
        if let Some(v) = m.get("llama.rope.scale_linear").filter(|v| v.as_f64() != Some(1.0)) {
            return Err(ConfigError::BadValue {
                key: "llama.rope.scale_linear".into(),
                reason: format!("{} is not supported (linear RoPE scaling)", v.summary()),
            });
        }
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
        let rope_dim = count("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ConfigError::BadValue {
                key: "llama.rope.dimension_count".into(),
                reason: format!("{rope_dim} must be even and at most the head size {head_dim}"),
            });
        }
        let embd =
            file.tensor("token_embd.weight").ok_or_else(|| ConfigError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = match count("vocab_size")? {
            Some(v) => v,
            None => embd.dims.get(1).copied().unwrap_or(0) as usize,
        };
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
