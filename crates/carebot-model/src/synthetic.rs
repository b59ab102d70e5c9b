//! Deterministic random Llama models built in memory, so tests (and benchmarks) need no downloads.
//!
//! The recipe is shared with `tests/fixtures/scripts/gen_tiny_llama.py`, which builds the same
//! weights in Python for HF transformers and llama.cpp: each tensor draws from its own splitmix64
//! stream seeded with the FNV-1a hash of its GGUF name, values `f16(offset + u · scale)` with u
//! uniform in [-1, 1), generated in HF layout; `attn_q`/`attn_k` rows are then permuted as
//! llama.cpp's converter does.

use crate::config::block_tensor;
use crate::gguf::{GgufFile, GgufWriter, TensorSpec, Value};
pub use crate::quant::TypeMix;
use crate::quant::{self, GgmlType};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use crate::rng::{SplitMix64, fnv1a64};
use safetensors::{Dtype, tensor::TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// Llama-3.1 RoPE scaling parameters (`rope_scaling` with `rope_type = "llama3"` in HF configs).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    pub vocab: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub context: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub tied_output: bool,
}

impl SyntheticSpec {
    /// The tiny model of the llama.cpp and HF fixtures (`tests/fixtures/tiny_llama`).
    pub fn tiny_llama3() -> Self {
        SyntheticSpec {
            vocab: 256,
            dim: 256,
            ffn_dim: 512,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            context: 256,
            rope_theta: 500_000.0,
            rms_eps: 1e-5,
            rope_scaling: Some(Llama3RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 64,
            }),
            tied_output: false,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// HF-layout shape `[out, in]` of each tensor, with its (offset, scale).
    fn tensors(&self) -> Vec<(String, [usize; 2], f32, f32)> {
        let (d, f, v, hd) = (self.dim, self.ffn_dim, self.vocab, self.head_dim());
        let kv = self.n_kv_heads * hd;
        let mut t = vec![("token_embd.weight".to_string(), [v, d], 0.0, 1.0)];
        for i in 0..self.n_layers {
            t.push((block_tensor(i, "attn_norm"), [1, d], 1.0, 0.25));
            t.push((block_tensor(i, "attn_q"), [d, d], 0.0, 0.125));
            t.push((block_tensor(i, "attn_k"), [kv, d], 0.0, 0.125));
            t.push((block_tensor(i, "attn_v"), [kv, d], 0.0, 0.125));
            t.push((block_tensor(i, "attn_output"), [d, d], 0.0, 0.125));
            t.push((block_tensor(i, "ffn_norm"), [1, d], 1.0, 0.25));
            t.push((block_tensor(i, "ffn_gate"), [f, d], 0.0, 0.125));
            t.push((block_tensor(i, "ffn_up"), [f, d], 0.0, 0.125));
            t.push((block_tensor(i, "ffn_down"), [d, f], 0.0, 0.125));
        }
        t.push(("output_norm.weight".to_string(), [1, d], 1.0, 0.25));
        if !self.tied_output {
            t.push(("output.weight".to_string(), [v, d], 0.0, 0.125));
        }
        t
    }

    /// The values of tensor `name` (GGUF name) in HF layout `[out, in]`, before llama.cpp's q/k
    /// permutation: what a Hugging Face checkpoint of this model holds.
    pub fn hf_tensor_values(&self, name: &str) -> Option<(Vec<f32>, [usize; 2])> {
        let (_, shape, offset, scale) = self.tensors().into_iter().find(|t| t.0 == name)?;
        let mut rng = SplitMix64::new(fnv1a64(name.as_bytes()));
        let n = shape[0] * shape[1];
        Some(((0..n).map(|_| half::f16::from_f32(offset + rng.next_signed() * scale).to_f32()).collect(), shape))
    }

    /// The values of tensor `name` in GGUF storage order (q/k permuted), or `None` if the model
    /// has no such tensor.
    pub fn tensor_values(&self, name: &str) -> Option<Vec<f32>> {
        if name == "rope_freqs.weight" {
            return self.rope_factors();
        }
        let (vals, [rows, cols]) = self.hf_tensor_values(name)?;
        let heads = if name.ends_with("attn_q.weight") {
            self.n_heads
        } else if name.ends_with("attn_k.weight") {
            self.n_kv_heads
        } else {
            return Some(vals);
        };
        Some(permute_rows_for_rope(&vals, rows, cols, heads))
    }

    /// llama.cpp's `rope_freqs` factors for Llama-3.1 scaling.
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        let s = self.rope_scaling.as_ref()?;
        Some(crate::config::llama3_rope_factors(
            self.rope_theta as f64,
            self.head_dim(),
            s.factor as f64,
            s.low_freq_factor as f64,
            s.high_freq_factor as f64,
            s.original_context as f64,
        ))
    }

    /// Llama-3.1-8B's exact shapes (32 layers, dim 4096, 32 heads / 8 KV, FFN 14336, vocab 128256,
    /// Llama-3.1 RoPE scaling) for benchmarks with random weights.
    pub fn llama3_8b() -> Self {
        SyntheticSpec {
            vocab: 128_256,
            dim: 4096,
            ffn_dim: 14_336,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 8,
            context: 131_072,
            rope_theta: 500_000.0,
            rms_eps: 1e-5,
            rope_scaling: Some(Llama3RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192,
            }),
            tied_output: false,
        }
    }

    /// Llama-3.2-1B's shapes (16 layers, dim 2048, 32 heads / 8 KV, FFN 8192, vocab 128256), with
    /// an untied output: the same kernels and type mix as the 8B at a sixth of the bytes, for
    /// comparing builds on machines where the 8B takes minutes per token.
    pub fn llama3_1b() -> Self {
        SyntheticSpec { dim: 2048, ffn_dim: 8192, n_layers: 16, ..Self::llama3_8b() }
    }

    /// The header, tensor directory and metadata of this model with each tensor stored as
    /// `mix` chooses (1-D tensors are always F32).
    fn writer(&self, mix: TypeMix) -> (GgufWriter, Vec<String>) {
        let mut w = GgufWriter::new();
        let hd = self.head_dim() as u32;
        let u = |v: usize| Value::U32(v as u32);
        w.set("general.architecture", Value::String("llama".into()))
            .set("general.name", Value::String("carebot-synthetic".into()))
            .set("llama.context_length", u(self.context))
            .set("llama.embedding_length", u(self.dim))
            .set("llama.block_count", u(self.n_layers))
            .set("llama.feed_forward_length", u(self.ffn_dim))
            .set("llama.attention.head_count", u(self.n_heads))
            .set("llama.attention.head_count_kv", u(self.n_kv_heads))
            .set("llama.attention.layer_norm_rms_epsilon", Value::F32(self.rms_eps))
            .set("llama.rope.freq_base", Value::F32(self.rope_theta))
            .set("llama.rope.dimension_count", Value::U32(hd))
            .set("llama.vocab_size", u(self.vocab))
            .set("tokenizer.ggml.model", Value::String("gpt2".into()))
            .set("tokenizer.ggml.pre", Value::String("default".into()))
            .set("tokenizer.ggml.tokens", Value::Array(byte_tokens(self.vocab).into()))
            .set("tokenizer.ggml.token_type", Value::Array(vec![1i32; self.vocab].into()))
            .set("tokenizer.ggml.merges", Value::Array(Vec::<String>::new().into()));
        let mut names: Vec<(String, Vec<u64>)> = self
            .tensors()
            .into_iter()
            .map(|(n, [r, c], _, _)| (n, if r == 1 { vec![c as u64] } else { vec![c as u64, r as u64] }))
            .collect();
        if let Some(f) = self.rope_factors() {
            names.push(("rope_freqs.weight".into(), vec![f.len() as u64]));
        }
        for (name, dims) in &names {
            let ty = if dims.len() == 1 { GgmlType::F32 } else { mix.type_of(name, self.n_layers) };
            w.add_tensor(TensorSpec::new(name.clone(), dims, ty)).expect("synthetic shapes are valid");
        }
        (w, names.into_iter().map(|(n, _)| n).collect())
    }

    /// A complete GGUF file of this model; matrices stored as `matrix_type` (quantized with our
    /// quantizers), norms and RoPE factors as F32.
    pub fn to_gguf(&self, matrix_type: GgmlType) -> Vec<u8> {
        self.to_gguf_with(matrix_type, Vec::new())
    }

    /// [`Self::to_gguf`] with `extra` metadata set (added, or replacing a key): for files that
    /// differ from the model in one field, such as a hostile chat template.
    pub fn to_gguf_with(&self, matrix_type: GgmlType, extra: Vec<(String, Value)>) -> Vec<u8> {
        let (mut w, names) = self.writer(TypeMix::Uniform(matrix_type));
        for (key, value) in extra {
            w.set(&key, value);
        }
        let data: Vec<Vec<u8>> = names
            .iter()
            .map(|name| {
                let vals = self.tensor_values(name).expect("listed above");
                let ty = w.tensors().iter().find(|t| &t.name == name).expect("added above").ty;
                quant::quantize(ty, &vals).expect("synthetic shapes fit every block size")
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        w.to_bytes(&refs).expect("writing to memory cannot fail")
    }

    /// Just the header of this model's GGUF file with weight types from `mix`, and the length the
    /// whole file would have: for benchmarks that stream random weights (see
    /// [`random_tensor_bytes`]) instead of building gigabytes of real ones.
    pub fn gguf_header(&self, mix: TypeMix) -> (Vec<u8>, u64) {
        let (mut w, _) = self.writer(mix);
        let mut header = Vec::new();
        let header_len = w.write_header(&mut header).expect("writing to memory cannot fail");
        let align = w.alignment();
        let data: u64 = w.tensors().iter().map(|t| t.n_bytes().expect("checked").next_multiple_of(align)).sum();
        (header, header_len + data)
    }
}

/// Fills `out` with random but well-formed blocks of type `ty`: random quants, and scales (the
/// f16 fields) set to small positive values so weights stay in a realistic range with no NaN.
/// `out` must hold whole blocks.
pub fn random_tensor_bytes(ty: GgmlType, rng: &mut SplitMix64, out: &mut [u8]) {
    for c in out.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    let scale =
        |rng: &mut SplitMix64, max: f32| half::f16::from_f32(max * (0.25 + 0.75 * rng.next_f32())).to_le_bytes();
    // (byte offsets of f16 scale fields in a block, their largest value)
    let (fields, max): (&[usize], f32) = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (&[0], 0.004),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0, 2], 0.004),
        GgmlType::Q8_0 => (&[0], 0.0003),
        GgmlType::Q4_K | GgmlType::Q5_K => (&[0, 2], 0.0001),
        GgmlType::Q6_K => (&[208], 0.0001),
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::f16::from_f32(0.05 * rng.next_signed()).to_le_bytes());
            }
            return;
        }
        GgmlType::BF16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::bf16::from_f32(0.05 * rng.next_signed()).to_le_bytes());
            }
            return;
        }
        _ => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(0.05 * rng.next_signed()).to_le_bytes());
            }
            return;
        }
    };
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &f in fields {
            block[f..f + 2].copy_from_slice(&scale(rng, max));
        }
    }
}

/// The tensor [`SyntheticSpec::write_hf_checkpoint_with_front`] puts first in a shard: a name
/// that transformers before 4.31 saved in Llama checkpoints and that converters skip (its values
/// follow from `rope_theta`).
pub const UNUSED_FRONT_TENSOR: &str = "model.layers.0.self_attn.rotary_emb.inv_freq";

/// A safetensors shard of `views` preceded by `front_bytes` (a multiple of 4) of an F32
/// [`UNUSED_FRONT_TENSOR`] of zeros, which stays a hole in the file.
fn write_shard_with_front(path: &Path, views: Vec<(String, TensorView)>, front_bytes: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let bytes = safetensors::serialize(views, None).map_err(std::io::Error::other)?;
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let data = &bytes[8 + header_len..];
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).map_err(std::io::Error::other)?;
    for (name, t) in header.iter_mut() {
        if name == "__metadata__" {
            continue;
        }
        let offsets = t["data_offsets"].as_array_mut().expect("safetensors wrote offsets");
        for o in offsets.iter_mut() {
            *o = (o.as_u64().expect("an offset") + front_bytes).into();
        }
    }
    header.insert(
        UNUSED_FRONT_TENSOR.into(),
        serde_json::json!({ "dtype": "F32", "shape": [front_bytes / 4], "data_offsets": [0, front_bytes] }),
    );
    let mut json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    // Data starts 8-byte aligned, as safetensors writes it (padded with spaces).
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut f = std::fs::File::create(path)?;
    f.write_all(&(json.len() as u64).to_le_bytes())?;
    f.write_all(&json)?;
    f.seek(SeekFrom::Current(front_bytes as i64))?;
    f.write_all(data)?;
    f.sync_all()
}

/// GPT-2's byte-to-unicode alphabet as the first `n` tokens (so llama.cpp can load the vocab).
fn byte_tokens(n: usize) -> Vec<String> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut extra = 256;
    let mut map = vec![0u32; 256];
    for b in 0..256u32 {
        map[b as usize] = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            extra - 1
        };
    }
    (0..n)
        .map(|i| if i < 256 { char::from_u32(map[i]).unwrap_or('?').to_string() } else { format!("<t{i}>") })
        .collect()
}

/// llama.cpp's `permute` for q/k: within each head, row `j·(hd/2) + i` moves to row `2i + j`, so
/// that adjacent-pair RoPE on the result equals rotate-half RoPE on the original.
pub fn permute_rows_for_rope(w: &[f32], rows: usize, cols: usize, n_heads: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let src = h * hd + j * (hd / 2) + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}
impl SyntheticSpec {
    /// (HF name, GGUF name) of every weight.
    pub fn hf_names(&self) -> Vec<(String, String)> {
        let spec = self;
        let mut n = vec![("model.embed_tokens.weight".to_string(), "token_embd.weight".to_string())];
        for i in 0..spec.n_layers {
            for (hf, gguf) in [
                ("input_layernorm", "attn_norm"),
                ("self_attn.q_proj", "attn_q"),
                ("self_attn.k_proj", "attn_k"),
                ("self_attn.v_proj", "attn_v"),
                ("self_attn.o_proj", "attn_output"),
                ("post_attention_layernorm", "ffn_norm"),
                ("mlp.gate_proj", "ffn_gate"),
                ("mlp.up_proj", "ffn_up"),
                ("mlp.down_proj", "ffn_down"),
            ] {
                n.push((format!("model.layers.{i}.{hf}.weight"), format!("blk.{i}.{gguf}.weight")));
            }
        }
        n.push(("model.norm.weight".into(), "output_norm.weight".into()));
        if !spec.tied_output {
            n.push(("lm_head.weight".into(), "output.weight".into()));
        }
        n
    }

    /// Writes the checkpoint into `dir`: bf16 weights in `n_shards` shards with an index,
    /// config.json, generation_config.json (EOS 128001 only, like CareBot's), and the Llama-3
    /// tokenizer files.
    pub fn write_hf_checkpoint(&self, dir: &Path, tokenizer_dir: &Path, n_shards: usize) -> std::io::Result<()> {
        self.write_hf_checkpoint_with_front(dir, tokenizer_dir, n_shards, 0)
    }

    /// [`Self::write_hf_checkpoint`], with the last shard starting with `front_bytes` of a tensor
    /// converters skip by name ([`UNUSED_FRONT_TENSOR`], an F32 `rotary_emb.inv_freq`) before
    /// its weights, written as a hole. With `front_bytes` past 4 GiB this is a shard over 4 GiB
    /// whose weights all lie past 4 GiB, costing a few MB of disk and no time to convert.
    pub fn write_hf_checkpoint_with_front(
        &self,
        dir: &Path,
        tokenizer_dir: &Path,
        n_shards: usize,
        front_bytes: u64,
    ) -> std::io::Result<()> {
        let spec = self;
        std::fs::create_dir_all(dir)?;
        let all = spec.hf_names();
        let per_shard = all.len().div_ceil(n_shards);
        let n_shards = all.len().div_ceil(per_shard);
        let mut weight_map = BTreeMap::new();
        for (k, group) in all.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, n_shards);
            let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = group
                .iter()
                .map(|(hf, gguf)| {
                    let (values, [rows, cols]) = spec.hf_tensor_values(gguf).expect("planned tensor");
                    let shape = if rows == 1 { vec![cols] } else { vec![rows, cols] };
                    (hf.clone(), shape, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
                })
                .collect();
            let views: Vec<(String, TensorView)> = tensors
                .iter()
                .map(|(name, shape, bytes)| {
                    (name.clone(), TensorView::new(Dtype::BF16, shape.clone(), bytes).expect("shape and bytes agree"))
                })
                .collect();
            for (name, ..) in &tensors {
                weight_map.insert(name.clone(), file.clone());
            }
            if front_bytes > 0 && k + 1 == n_shards {
                weight_map.insert(UNUSED_FRONT_TENSOR.into(), file.clone());
                write_shard_with_front(&dir.join(&file), views, front_bytes)?;
            } else {
                safetensors::serialize_to_file(views, None, &dir.join(&file)).map_err(std::io::Error::other)?;
            }
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
        std::fs::write(dir.join("config.json"), spec.hf_config().to_string())?;
        std::fs::write(dir.join("generation_config.json"), GENERATION_CONFIG)?;
        let tok = tokenizer_dir;
        std::fs::copy(tok.join("tokenizer.json"), dir.join("tokenizer.json"))?;
        std::fs::copy(tok.join("tokenizer_config.json"), dir.join("tokenizer_config.json"))?;
        Ok(())
    }

    /// config.json of this model as transformers 4.x writes it (`rope_scaling` null for plain
    /// RoPE, as Llama-3.0's).
    pub fn hf_config(&self) -> serde_json::Value {
        let s = self;
        let rope_scaling = s.rope_scaling.as_ref().map(|rs| {
            serde_json::json!({ "rope_type": "llama3", "factor": rs.factor, "low_freq_factor": rs.low_freq_factor,
                "high_freq_factor": rs.high_freq_factor, "original_max_position_embeddings": rs.original_context })
        });
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": s.dim, "intermediate_size": s.ffn_dim, "num_hidden_layers": s.n_layers,
            "num_attention_heads": s.n_heads, "num_key_value_heads": s.n_kv_heads, "head_dim": s.head_dim(),
            "vocab_size": s.vocab, "max_position_embeddings": s.context, "rms_norm_eps": s.rms_eps,
            "rope_theta": s.rope_theta, "tie_word_embeddings": s.tied_output, "torch_dtype": "bfloat16",
            "bos_token_id": 128000, "eos_token_id": 128001,
            "rope_scaling": rope_scaling,
        })
    }

    /// Streams random tensor bytes for the model `file` describes (its tensors must be this
    /// model's), in file order and pieces of at most 8 MiB, to `sink(file_offset, bytes)`:
    /// well-formed random blocks for the matrices ([`random_tensor_bytes`]), and the recipe's
    /// own norms and RoPE factors.
    pub fn random_tensor_data(
        &self,
        file: &GgufFile,
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        let mut tensors: Vec<_> = file.tensors.iter().collect();
        tensors.sort_by_key(|t| t.offset);
        let mut rng = SplitMix64::new(0x5eed);
        let mut piece = Vec::new();
        for t in tensors {
            if t.dims.len() == 1 {
                let values = self.tensor_values(&t.name).unwrap_or_default();
                sink(t.offset, &quant::quantize(t.ty, &values)?)?;
                continue;
            }
            let row = t.n_bytes / t.n_rows();
            let rows_per_piece = ((8u64 << 20) / row).max(1);
            let mut at = 0;
            while at < t.n_bytes {
                let n = crate::offsets::piece_len(t.n_bytes - at, usize::MAX).min((rows_per_piece * row) as usize);
                piece.resize(n, 0);
                random_tensor_bytes(t.ty, &mut rng, &mut piece);
                sink(t.offset + at, &piece)?;
                at += n as u64;
            }
        }
        Ok(())
    }

    /// Writes a GGUF file of this model at `path`: `header` (whose tensors are this model's),
    /// then [`Self::random_tensor_data`], `file_len` bytes in all.
    pub fn write_random_gguf(&self, path: &Path, header: &[u8], file_len: u64, file: &GgufFile) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        f.write_all(header)?;
        self.random_tensor_data(file, |offset, bytes| {
            f.seek(SeekFrom::Start(offset))?;
            Ok(f.write_all(bytes)?)
        })
        .map_err(std::io::Error::other)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.set_len(file_len)?;
        f.sync_all()
    }

    /// The GGUF `carebot convert --quant` writes for a checkpoint of this model whose tokenizer
    /// files are in `tokenizer_dir`, with random weights: a real conversion's header (vocabulary,
    /// merges, chat template, type mix) and layout at any size, written in seconds. Returns its
    /// size.
    pub fn write_converted_random(
        &self,
        path: &Path,
        tokenizer_dir: &Path,
        quant: crate::convert::Quant,
        name: &str,
    ) -> std::io::Result<u64> {
        let read = |f: &str| -> std::io::Result<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(tokenizer_dir.join(f))?).map_err(std::io::Error::other)
        };
        let files = crate::convert::HfFiles {
            config: self.hf_config(),
            tokenizer: read("tokenizer.json")?,
            tokenizer_config: read("tokenizer_config.json")?,
            generation_config: serde_json::from_str(GENERATION_CONFIG).expect("valid JSON"),
            chat_template: None,
            dir_name: name.into(),
        };
        let names: Vec<String> = self.hf_names().into_iter().map(|(hf, _)| hf).collect();
        let mut conversion = crate::convert::Conversion::plan(&files, quant, names.iter().map(String::as_str))
            .map_err(std::io::Error::other)?;
        let header = conversion.header();
        let len = conversion.layout(header.len() as u64).last().map_or(header.len() as u64, |&(at, _, pad)| at + pad);
        let file = GgufFile::parse(&header, len).map_err(std::io::Error::other)?;
        self.write_random_gguf(path, &header, len, &file)?;
        Ok(len)
    }
}

/// generation_config.json of the checkpoints written here: EOS 128001 only, like CareBot's.
const GENERATION_CONFIG: &str = r#"{"bos_token_id": 128000, "eos_token_id": 128001}"#;
