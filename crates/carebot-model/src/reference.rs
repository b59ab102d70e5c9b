//! The f32 CPU reference of the Llama forward pass: the oracle every GPU kernel is checked against.
//! It favours being obviously right over being fast: weights stay in their file format and each
//! row is dequantized just before its dot product; everything else is plain f32 loops.

use crate::config::{LlamaConfig, block_tensor};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::{self, GgmlType, QuantError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("tensor {tensor:?}: {source}")]
    Quant { tensor: String, source: QuantError },
    #[error("reading tensor {tensor:?}: {reason}")]
    Read { tensor: String, reason: String },
    #[error("token id {token} is outside the vocabulary (size {vocab})")]
    BadToken { token: u32, vocab: usize },
    #[error("context is full: {needed} positions needed, the KV cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
}

/// A weight matrix kept in its file format: `rows` rows of `cols` values each.
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl QMatrix {
    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.block_bytes()
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let b = self.row_bytes();
        quant::dequantize(self.ty, &self.data[r * b..(r + 1) * b], out).expect("shape checked at load");
    }

    /// out[t][r] = Σ_c W[r][c] · x[t][c] for each of the `x.len() / cols` input vectors.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let n = x.len() / self.cols;
        debug_assert_eq!(out.len(), n * self.rows);
        // Results are gathered weight-row-major (`by_row[r * n + t]`) so threads own disjoint rows.
        let mut by_row = vec![0.0f32; self.rows * n];
        let work = |first_row: usize, dst: &mut [f32]| {
            let mut w = vec![0.0f32; self.cols];
            for (i, o) in dst.chunks_exact_mut(n).enumerate() {
                self.row(first_row + i, &mut w);
                for (t, xt) in x.chunks_exact(self.cols).enumerate() {
                    o[t] = dot(&w, xt);
                }
            }
        };
        let threads = worker_count(self.rows * self.cols * n);
        if threads <= 1 {
            work(0, &mut by_row);
        } else {
            #[cfg(not(target_arch = "wasm32"))]
            std::thread::scope(|s| {
                let rows_per = self.rows.div_ceil(threads);
                for (i, dst) in by_row.chunks_mut(rows_per * n).enumerate() {
                    let work = &work;
                    s.spawn(move || work(i * rows_per, dst));
                }
            });
        }
        for r in 0..self.rows {
            for t in 0..n {
                out[t * self.rows + r] = by_row[r * n + t];
            }
        }
    }
}

fn worker_count(work: usize) -> usize {
    if cfg!(target_arch = "wasm32") || work < (1 << 20) {
        return 1;
    }
    std::thread::available_parallelism().map(|n| n.get().min(8)).unwrap_or(1)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One transformer block's weights.
pub struct Block {
    pub attn_norm: Vec<f32>,
    pub wq: QMatrix,
    pub wk: QMatrix,
    pub wv: QMatrix,
    pub wo: QMatrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: QMatrix,
    pub w_up: QMatrix,
    pub w_down: QMatrix,
}

pub struct Weights {
    pub token_embd: QMatrix,
    pub blocks: Vec<Block>,
    pub output_norm: Vec<f32>,
    /// `None` when the output projection is tied to `token_embd`.
    pub output: Option<QMatrix>,
    /// Per-frequency divisors for Llama-3.1 RoPE scaling (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
}

impl Weights {
    /// Loads every tensor through `fetch`, which returns a tensor's bytes (from a file, a buffer,
    /// or a network range).
    pub fn load(
        file: &GgufFile,
        cfg: &LlamaConfig,
        mut fetch: impl FnMut(&TensorInfo) -> Result<Vec<u8>, String>,
    ) -> Result<Self, ModelError> {
        let mut matrix = |name: &str| -> Result<QMatrix, ModelError> {
            let info = file.tensor(name).ok_or_else(|| crate::config::ConfigError::MissingTensor(name.into()))?;
            let data = fetch(info).map_err(|reason| ModelError::Read { tensor: name.into(), reason })?;
            if data.len() as u64 != info.n_bytes {
                return Err(ModelError::Read {
                    tensor: name.into(),
                    reason: format!("got {} bytes, expected {}", data.len(), info.n_bytes),
                });
            }
            Ok(QMatrix { ty: info.ty, rows: info.n_rows() as usize, cols: info.row_len() as usize, data })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let b = |n: &str| block_tensor(i, n);
            blocks.push(Block {
                attn_norm: vector(&b("attn_norm"), matrix(&b("attn_norm"))?)?,
                wq: matrix(&b("attn_q"))?,
                wk: matrix(&b("attn_k"))?,
                wv: matrix(&b("attn_v"))?,
                wo: matrix(&b("attn_output"))?,
                ffn_norm: vector(&b("ffn_norm"), matrix(&b("ffn_norm"))?)?,
                w_gate: matrix(&b("ffn_gate"))?,
                w_up: matrix(&b("ffn_up"))?,
                w_down: matrix(&b("ffn_down"))?,
            });
        }
        Ok(Weights {
            token_embd: matrix("token_embd.weight")?,
            blocks,
            output_norm: vector("output_norm.weight", matrix("output_norm.weight")?)?,
            output: if cfg.tied_output { None } else { Some(matrix("output.weight")?) },
            rope_freqs: if cfg.has_rope_freqs {
                Some(vector("rope_freqs.weight", matrix("rope_freqs.weight")?)?)
            } else {
                None
            },
        })
    }
}

/// The 1-D tensor `name` (norm weights, RoPE factors) widened to f32.
fn vector(name: &str, m: QMatrix) -> Result<Vec<f32>, ModelError> {
    let mut v = vec![0.0; m.cols * m.rows];
    quant::dequantize(m.ty, &m.data, &mut v).map_err(|source| ModelError::Quant { tensor: name.into(), source })?;
    Ok(v)
}

/// Keys and values of every layer for positions `0..len`.
pub struct KvCache {
    pub capacity: usize,
    /// `[layer][pos * kv_dim + i]`
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(cfg: &LlamaConfig, capacity: usize) -> Self {
        let layer = || vec![0.0f32; capacity * cfg.kv_dim()];
        KvCache {
            capacity,
            keys: (0..cfg.n_layers).map(|_| layer()).collect(),
            values: (0..cfg.n_layers).map(|_| layer()).collect(),
        }
    }
}

/// The CPU reference model: weights plus its KV cache.
pub struct CpuModel {
    pub cfg: LlamaConfig,
    pub weights: Weights,
    pub cache: KvCache,
    /// Positions filled in the cache.
    pub len: usize,
    /// Mirror the GPU engine's int8 activations (`carebot_gpu::GpuOptions::int8_dot`): a product
    /// whose matrices all have integer quants multiplies x rounded to int8 blocks
    /// ([`quant::round_to_int8_blocks`]). The GPU computes q, k and v in one kernel, and gate and
    /// up in one, so each of those groups rounds only when all its matrices are integer.
    pub int8_activations: bool,
}

/// out = m · x (one row of out per vector of x); with `int8`, x first rounded as the GPU's int8
/// activations round it.
fn product(m: &QMatrix, x: &[f32], out: &mut [f32], int8: bool) {
    if int8 {
        let mut rounded = x.to_vec();
        quant::round_to_int8_blocks(&mut rounded);
        m.matmul(&rounded, out);
    } else {
        m.matmul(x, out);
    }
}

/// x ← x / rms(x) · w
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (ms + eps).sqrt();
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * scale * wi;
    }
}

/// RoPE as llama.cpp applies it to GGUF llama tensors: adjacent pairs (x[2i], x[2i+1]) of each
/// head rotate by pos · θ^(-2i/rope_dim) / freq_factor[i]. (The converter permuted the q/k rows so
/// that this equals HF's rotate-half convention on the original weights.)
pub fn rope(x: &mut [f32], head_dim: usize, rope_dim: usize, pos: usize, theta: f32, freq_factors: Option<&[f32]>) {
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..rope_dim / 2 {
            let factor = freq_factors.map_or(1.0, |f| f[i] as f64);
            let freq = (theta as f64).powf(-2.0 * i as f64 / rope_dim as f64) / factor;
            let (sin, cos) = (pos as f64 * freq).sin_cos();
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos as f32 - b * sin as f32;
            head[2 * i + 1] = a * sin as f32 + b * cos as f32;
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// In-place softmax, subtracting the max first so large scores cannot overflow.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

impl CpuModel {
    pub fn new(cfg: LlamaConfig, weights: Weights, context: usize) -> Self {
        let cache = KvCache::new(&cfg, context);
        CpuModel { cfg, weights, cache, len: 0, int8_activations: false }
    }

    /// Loads a model from a parsed GGUF header and a tensor fetcher; `context` sizes the KV cache.
    pub fn load(
        file: &GgufFile,
        context: usize,
        fetch: impl FnMut(&TensorInfo) -> Result<Vec<u8>, String>,
    ) -> Result<Self, ModelError> {
        let cfg = LlamaConfig::from_gguf(file)?;
        let weights = Weights::load(file, &cfg, fetch)?;
        let context = context.clamp(1, cfg.context_length.max(1));
        Ok(Self::new(cfg, weights, context))
    }

    /// Runs `tokens` at positions `len..len + n`, appending their keys and values to the cache, and
    /// returns the logits of every one of them (`n × vocab`, row per token).
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.cfg;
        let w = &self.weights;
        let (n, dim, hd) = (tokens.len(), cfg.dim, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let start = self.len;
        if start + n > self.cache.capacity {
            return Err(ModelError::ContextFull { needed: start + n, capacity: self.cache.capacity });
        }

        // Token embeddings.
        let mut x = vec![0.0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            if tok as usize >= w.token_embd.rows {
                return Err(ModelError::BadToken { token: tok, vocab: w.token_embd.rows });
            }
            w.token_embd.row(tok as usize, &mut x[t * dim..(t + 1) * dim]);
        }

        let mut xb = vec![0.0f32; n * dim];
        let (mut q, mut k, mut v) = (vec![0.0f32; n * q_dim], vec![0.0f32; n * kv_dim], vec![0.0f32; n * kv_dim]);
        let mut att_out = vec![0.0f32; n * q_dim];
        let mut proj = vec![0.0f32; n * dim];
        let (mut gate, mut up) = (vec![0.0f32; n * cfg.ffn_dim], vec![0.0f32; n * cfg.ffn_dim]);
        let group = cfg.n_heads / cfg.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let freqs = w.rope_freqs.as_deref();
        // Whether a group of products multiplies rounded activations (mirroring the GPU).
        let int8 = |ms: &[&QMatrix]| self.int8_activations && ms.iter().all(|m| m.ty.has_integer_quants());

        for (l, b) in w.blocks.iter().enumerate() {
            // Attention: RMSNorm, q/k/v projections, RoPE, append to the cache.
            for t in 0..n {
                rms_norm(&mut xb[t * dim..(t + 1) * dim], &x[t * dim..(t + 1) * dim], &b.attn_norm, cfg.rms_eps);
            }
            let qkv = int8(&[&b.wq, &b.wk, &b.wv]);
            product(&b.wq, &xb, &mut q, qkv);
            product(&b.wk, &xb, &mut k, qkv);
            product(&b.wv, &xb, &mut v, qkv);
            for t in 0..n {
                let pos = start + t;
                rope(&mut q[t * q_dim..(t + 1) * q_dim], hd, cfg.rope_dim, pos, cfg.rope_theta, freqs);
                rope(&mut k[t * kv_dim..(t + 1) * kv_dim], hd, cfg.rope_dim, pos, cfg.rope_theta, freqs);
                self.cache.keys[l][pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(&k[t * kv_dim..(t + 1) * kv_dim]);
                self.cache.values[l][pos * kv_dim..(pos + 1) * kv_dim]
                    .copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
            }

            // Causal grouped-query attention: query head h reads KV head h / group.
            for t in 0..n {
                let pos = start + t;
                for h in 0..cfg.n_heads {
                    let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                    let kvh = h / group;
                    let mut scores: Vec<f32> = (0..=pos)
                        .map(|p| {
                            dot(qh, &self.cache.keys[l][p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd]) * scale
                        })
                        .collect();
                    softmax(&mut scores);
                    let out = &mut att_out[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                    out.fill(0.0);
                    for (p, s) in scores.iter().enumerate() {
                        let vp = &self.cache.values[l][p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
                        for (o, vi) in out.iter_mut().zip(vp) {
                            *o += s * vi;
                        }
                    }
                }
            }
            product(&b.wo, &att_out, &mut proj, int8(&[&b.wo]));
            x.iter_mut().zip(&proj).for_each(|(xi, p)| *xi += p);

            // Feed-forward: RMSNorm, SwiGLU, down projection, residual.
            for t in 0..n {
                rms_norm(&mut xb[t * dim..(t + 1) * dim], &x[t * dim..(t + 1) * dim], &b.ffn_norm, cfg.rms_eps);
            }
            let ffn = int8(&[&b.w_gate, &b.w_up]);
            product(&b.w_gate, &xb, &mut gate, ffn);
            product(&b.w_up, &xb, &mut up, ffn);
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g = silu(*g) * u);
            product(&b.w_down, &gate, &mut proj, int8(&[&b.w_down]));
            x.iter_mut().zip(&proj).for_each(|(xi, p)| *xi += p);
        }

        // Final norm and output projection.
        for t in 0..n {
            rms_norm(&mut xb[t * dim..(t + 1) * dim], &x[t * dim..(t + 1) * dim], &w.output_norm, cfg.rms_eps);
        }
        let output = w.output.as_ref().unwrap_or(&w.token_embd);
        let mut logits = vec![0.0f32; n * output.rows];
        product(output, &xb, &mut logits, int8(&[output]));
        self.len += n;
        Ok(logits)
    }
}
