//! RoPE and the KV-cache append (`shaders/rope.wgsl`), plus the cos/sin table it reads.

use super::{Dispatch, Grid, KvCache};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};
use carebot_model::config::LlamaConfig;

/// `Params` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RopeParams {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// The table's first pair in its buffer.
    pub table_offset: u32,
}

/// Where a RoPE table ([`rope_table`]) lies: `offset` f32s into `buffer`.
#[derive(Clone, Copy, Debug)]
pub struct RopeTable<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u32,
}

/// cos and sin of pos · freq_i for every position below `context` and every pair of a head, in
/// f64 as the CPU reference computes them (pairs past `rope_dim` do not rotate).
pub fn rope_table(cfg: &LlamaConfig, context: usize, freq_factors: Option<&[f32]>) -> Vec<f32> {
    let half = cfg.head_dim / 2;
    let mut table = Vec::with_capacity(context * half * 2);
    for pos in 0..context {
        for i in 0..half {
            if i < cfg.rope_dim / 2 {
                let factor = freq_factors.and_then(|f| f.get(i)).map_or(1.0, |&f| f as f64);
                let freq = (cfg.rope_theta as f64).powf(-2.0 * i as f64 / cfg.rope_dim as f64) / factor;
                let (sin, cos) = (pos as f64 * freq).sin_cos();
                table.extend([cos as f32, sin as f32]);
            } else {
                table.extend([1.0, 0.0]);
            }
        }
    }
    table
}

/// Rotates q in place and writes rotated k and plain v of each token of the batch into the
/// cache at its position (the prefill path; decode does this in [`super::qkv::QkvRopeStore`]).
pub struct RopeAndStore<'a> {
    /// [n, n_heads · head_dim]
    pub q: &'a wgpu::Buffer,
    /// [n, n_kv_heads · head_dim] each.
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// Its offset an even number.
    pub table: RopeTable<'a>,
    pub cache: KvCache<'a>,
}

impl RopeAndStore<'_> {
    pub fn dispatch(&self, ctx: &GpuContext, step: &wgpu::Buffer, cfg: &LlamaConfig) -> Dispatch {
        let RopeAndStore { q, k, v, table, cache } = *self;
        assert!(table.offset.is_multiple_of(2));
        let pipeline = ctx.pipeline(&Variant::new(Kernel::Rope).kv(cache.storage));
        let (heads, kv_heads, hd) = (cfg.n_heads as u32, cfg.n_kv_heads as u32, cfg.head_dim as u32);
        let params = ctx.uniform(
            "rope params",
            &RopeParams { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, table_offset: table.offset / 2 },
        );
        let pairs = (heads + 2 * kv_heads) * hd / 2;
        let buffers =
            [(0, step), (1, &params), (2, q), (3, k), (4, v), (5, table.buffer), (6, cache.keys), (7, cache.values)];
        Dispatch::new(ctx, pipeline, &buffers, Grid::PerTokens { x: pairs.div_ceil(64), tile: 1 })
    }
}
