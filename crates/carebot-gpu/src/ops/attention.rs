//! Causal grouped-query attention over the KV cache (`shaders/attention.wgsl`, and
//! `shaders/attention_merge.wgsl` for a decoded token split over its context).

use super::{Dispatch, Grid, KvCache, Step};
use crate::context::{GpuContext, GpuError};
use crate::shader::{Kernel, KvStorage, Variant};
use carebot_model::config::LlamaConfig;
use carebot_model::rng::SplitMix64;

/// `Params` in `shaders/attention_params.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub scale: f32,
}

/// Keys per workgroup when a decoded token's attention is split over its context.
pub const KEYS_PER_SPLIT: u32 = 64;
/// At most this many ranges (longer contexts give each range more keys), which bounds the
/// partial sums kept between the two steps.
pub const MAX_SPLITS: u32 = 64;

/// How many key ranges, a workgroup each, one decoded token's attention over `n_keys` positions
/// is split into (`decode_splits` in attention_merge.wgsl says the same).
pub fn decode_splits(n_keys: u32) -> u32 {
    n_keys.div_ceil(KEYS_PER_SPLIT).clamp(1, MAX_SPLITS)
}

/// Bytes of the buffer the split ranges leave their partial sums in, for `cfg` and contexts of
/// up to `positions`.
pub fn partials_bytes(cfg: &LlamaConfig, positions: usize) -> u64 {
    let splits = decode_splits(positions.min(u32::MAX as usize) as u32) as u64;
    splits * cfg.n_heads as u64 * (cfg.head_dim as u64 / 2 + 1) * 8
}

/// Query heads a workgroup takes: the most, up to 8, that share a KV head and divide evenly.
pub fn heads_per_group(cfg: &LlamaConfig) -> u32 {
    let group = (cfg.n_heads / cfg.n_kv_heads.max(1)).max(1) as u32;
    (1..=group.min(8)).rev().find(|h| group.is_multiple_of(*h)).unwrap_or(1)
}

/// `out[t][h] = softmax(q[t][h] · K / √head_dim) · V` over positions 0 ..= pos0 + t, for each
/// token t of the batch and query head h. Needs head_dim ≤ 256, a multiple of 8 (keys are read
/// in 16-byte pieces), and n_heads a multiple of n_kv_heads.
pub struct Attention<'a> {
    /// [n, n_heads · head_dim] queries, RoPE applied.
    pub q: &'a wgpu::Buffer,
    /// The layer's cache, the batch's own keys and values already in it.
    pub cache: KvCache<'a>,
    /// [n, n_heads · head_dim]
    pub out: &'a wgpu::Buffer,
    /// [`partials_bytes`] for the key ranges of a decoded token.
    pub partials: &'a wgpu::Buffer,
}

impl Attention<'_> {
    /// Two dispatches: the attention, one workgroup per group of query heads sharing a KV head
    /// and per token, a decoded token's keys split over [`decode_splits`] workgroups; then, for
    /// a decoded token over more than one range, the merge of the ranges (not encoded
    /// otherwise).
    pub fn dispatches(&self, ctx: &GpuContext, step: &wgpu::Buffer, cfg: &LlamaConfig) -> Vec<Dispatch> {
        let Attention { q, cache, out, partials } = *self;
        let heads = heads_per_group(cfg);
        let pipeline = ctx.pipeline(&Variant::new(Kernel::Attention).kv(cache.storage).attention_heads(heads));
        let merge = ctx.pipeline(&Variant::new(Kernel::AttentionMerge));
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let params = ctx.uniform(
            "attention params",
            &AttentionParams {
                n_heads: cfg.n_heads as u32,
                n_kv_heads: cfg.n_kv_heads as u32,
                head_dim: cfg.head_dim as u32,
                scale,
            },
        );
        let groups = cfg.n_heads as u32 / heads;
        let (keys, values) = (cache.keys, cache.values);
        vec![
            Dispatch::new(
                ctx,
                pipeline,
                &[(0, step), (1, &params), (2, q), (3, keys), (4, values), (5, out), (6, partials)],
                Grid::AttentionSplits { x: groups },
            ),
            Dispatch::new(
                ctx,
                merge,
                &[(0, step), (1, &params), (5, out), (6, partials)],
                Grid::AttentionMerge { x: cfg.n_heads as u32 },
            ),
        ]
    }
}

/// Decode attention alone, timed by a benchmark: one token's attention in every layer at a given
/// context length, over random keys and values (each layer its own cache, as in the model, so a
/// big GPU cache cannot serve one layer's keys to the next).
pub struct AttentionProbe {
    /// Positions each layer attends over.
    pub keys: u32,
    layers: Vec<Dispatch>,
}

impl AttentionProbe {
    /// `layers` layers of `cfg`'s attention over `keys` positions, the cache stored as `kv`.
    pub fn new(ctx: &GpuContext, cfg: &LlamaConfig, keys: u32, layers: usize, kv: KvStorage) -> Result<Self, GpuError> {
        if keys == 0 {
            return Err(GpuError::BadInput("the attention probe needs at least one key".into()));
        }
        let mut rng = SplitMix64::new(u64::from(keys));
        let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_signed()).collect() };
        // One layer's cache contents, shared by every layer's buffers.
        let values = random(keys as usize * cfg.kv_dim());
        let cache: Vec<u8> = if kv == KvStorage::F32 {
            bytemuck::cast_slice(&values).to_vec()
        } else {
            values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()
        };
        let step = ctx.uniform("probe step", &Step { n_tokens: 1, pos0: keys - 1, _pad: [0; 2] });
        let q = ctx.storage("probe queries", cfg.q_dim() as u64 * 4)?;
        ctx.queue.write_buffer(&q, 0, bytemuck::cast_slice(&random(cfg.q_dim())));
        let out = ctx.storage("probe output", cfg.q_dim() as u64 * 4)?;
        let partials = ctx.storage("probe partial sums", partials_bytes(cfg, keys as usize))?;
        let mut dispatches = Vec::with_capacity(layers);
        for _ in 0..layers {
            let k_cache = ctx.storage("probe keys", cache.len() as u64)?;
            let v_cache = ctx.storage("probe values", cache.len() as u64)?;
            ctx.queue.write_buffer(&k_cache, 0, &cache);
            ctx.queue.write_buffer(&v_cache, 0, &cache);
            let layer = KvCache { keys: &k_cache, values: &v_cache, storage: kv };
            let attention = Attention { q: &q, cache: layer, out: &out, partials: &partials };
            dispatches.extend(attention.dispatches(ctx, &step, cfg));
        }
        ctx.check()?;
        Ok(AttentionProbe { keys, layers: dispatches })
    }

    /// Records one token's attention in every layer.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.layers {
            d.encode(pass, 1, self.keys - 1);
        }
    }
}
