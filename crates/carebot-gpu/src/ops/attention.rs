//! Causal grouped-query attention over the KV cache (`shaders/attention.wgsl`).

use super::{Dispatch, Grid, Params};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};
use carebot_model::config::LlamaConfig;

/// out[t][h] = softmax(q[t][h] · K / √head_dim) · V over positions 0 ..= pos0 + t, one workgroup
/// per head and token.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    cfg: &LlamaConfig,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    kv_flag: &'static str,
) -> Dispatch {
    let pipeline = ctx.pipeline(&Variant::new(Kernel::Attention).flag(kv_flag));
    let scale = 1.0 / (cfg.head_dim as f32).sqrt();
    let params = ctx.uniform(
        "attention params",
        &Params([cfg.n_heads as u32, cfg.n_kv_heads as u32, cfg.head_dim as u32, scale.to_bits()]),
    );
    Dispatch::new(
        ctx,
        pipeline,
        &[(0, step), (1, &params), (2, q), (3, k_cache), (4, v_cache), (5, out)],
        Grid::PerTokens { x: cfg.n_heads as u32, tile: 1 },
    )
}
