//! The decode step's attention input in one pass (`shaders/matvec.wgsl` with `NORM` and `QKV`):
//! RMSNorm of the residual stream, the q, k and v projections, RoPE on q and k, and k and v
//! appended to the KV cache. Unfused, that is five dependent dispatches (the prefill path:
//! `rms_norm`, three `matmul`s, `rope_and_store`).

use super::matmul::{Norm, ProductParams};
use super::{Dispatch, Grid};
use crate::context::{GpuContext, spread};
use crate::shader::{Kernel, MATVEC_ROWS, Variant};
use crate::weights::GpuMatrix;
use carebot_model::config::LlamaConfig;

/// q = RoPE(W_q x̂) into `q`; RoPE(W_k x̂) and W_v x̂ into the caches at position `pos0 + n − 1`,
/// where x̂ is the last token of `x` normalized by `norm`. The RoPE table (as `rope_table` makes
/// it) sits in `norm.consts` at `table_offset` f32s (a multiple of 4). Each matrix must be one
/// part (the engine checks that at load). `kv_flag` is the KV storage flag.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_store(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    cfg: &LlamaConfig,
    [wq, wk, wv]: [&GpuMatrix; 3],
    norm: Norm,
    table_offset: u32,
    x: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    kv_flag: &'static str,
) -> Dispatch {
    for m in [wq, wk, wv] {
        assert_eq!(m.parts.len(), 1, "the fused projection needs each matrix in one buffer");
        assert_eq!(m.cols, cfg.dim as u32);
    }
    assert!(norm.offset.is_multiple_of(4) && table_offset.is_multiple_of(4));
    let variant =
        Variant::new(Kernel::MatVec).weight(wq.ty).weight(wk.ty).weight(wv.ty).flag("NORM").flag("QKV").flag(kv_flag);
    let rows = wq.rows + wk.rows + wv.rows;
    let params = ProductParams {
        rows,
        cols: wq.cols,
        norm_offset: norm.offset / 4,
        eps: norm.eps,
        q_rows: wq.rows,
        kv_rows: wk.rows,
        table_offset: table_offset / 4,
        head_dim: cfg.head_dim as u32,
        ..Default::default()
    };
    let params = ctx.uniform("qkv params", &params);
    let buffers = [
        (0, step),
        (1, &params),
        (2, x),
        (3, q),
        (4, &wq.parts[0].buffer),
        (5, &wk.parts[0].buffer),
        (6, &wv.parts[0].buffer),
        (7, norm.consts),
        (8, k_cache),
        (9, v_cache),
    ];
    Dispatch::new(ctx, ctx.pipeline(&variant), &buffers, Grid::Fixed(spread(rows.div_ceil(MATVEC_ROWS))))
}
