//! The decode step's attention input in one pass (`shaders/matvec.wgsl` with `QKV`): the q, k and
//! v projections, RoPE on q and k, and k and v appended to the KV cache, optionally reading x
//! from a product that did the first half of the RMSNorm before them (`NORM`, see `NextNorm`).
//! Unfused, that is five dependent dispatches (the prefill path: `rms_norm`, three `matmul`s,
//! `rope_and_store`).

use super::matmul::{MatvecRows, Norm, ProductParams, int8_activations};
use super::{Dispatch, Grid};
use crate::context::{GpuContext, spread};
use crate::shader::{Flag, Kernel, KvStorage, Variant};
use crate::weights::GpuMatrix;
use carebot_model::config::LlamaConfig;

/// q = RoPE(W_q x̂) into `q`; RoPE(W_k x̂) and W_v x̂ into the caches at position `pos0 + n − 1`,
/// where x̂ is the last token of `x`, or with `norm`, x as a `NextNorm` product left it, scaled
/// by 1 / rms. The RoPE table (as `rope_table` makes it) sits in `consts` at `table_offset` f32s,
/// a multiple of 4. Each matrix must be one part (the engine checks that at load). `kv` is
/// the KV cache's storage; `group_rows` the matvec workgroup's rows.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_store(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    cfg: &LlamaConfig,
    [wq, wk, wv]: [&GpuMatrix; 3],
    consts: &wgpu::Buffer,
    norm: Option<Norm>,
    table_offset: u32,
    x: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    kv: KvStorage,
    group_rows: MatvecRows,
) -> Dispatch {
    for m in [wq, wk, wv] {
        assert_eq!(m.parts.len(), 1, "the fused projection needs each matrix in one buffer");
        assert_eq!(m.cols, cfg.dim as u32);
    }
    assert!(table_offset.is_multiple_of(4));
    let variant = Variant::new(Kernel::MatVec)
        .weight(wq.ty)
        .weight(wk.ty)
        .weight(wv.ty)
        .flag(Flag::Qkv)
        .flag_if(norm.is_some(), Flag::Norm)
        .flag_if(ctx.subgroups, Flag::Subgroups)
        .flag_if(int8_activations(ctx, &[wq.ty, wk.ty, wv.ty]), Flag::XInt8)
        .kv(kv)
        .matvec_rows(group_rows);
    let rows = wq.rows + wk.rows + wv.rows;
    let (slots, eps) = norm.map_or((0, 0.0), |n| (n.slots, n.eps));
    let params = ProductParams {
        rows,
        cols: wq.cols,
        slots,
        eps,
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
        (7, consts),
        (8, k_cache),
        (9, v_cache),
    ];
    Dispatch::new(ctx, ctx.pipeline(&variant), &buffers, Grid::Fixed(spread(rows.div_ceil(group_rows.0))))
}
