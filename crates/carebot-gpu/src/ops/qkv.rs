//! The decode step's attention input in one pass (`shaders/matvec.wgsl` with `QKV`): the q, k and
//! v projections, RoPE on q and k, and k and v appended to the KV cache, optionally reading x
//! from a product that did the first half of the RMSNorm before them (`NORM`, see `NextNorm`).
//! Unfused, that is five dependent dispatches (the prefill path: `rms_norm`, three `MatMul`s,
//! `RopeAndStore`).

use super::matmul::{MatvecRows, Norm, ProductParams, int8_activations};
use super::rope::RopeTable;
use super::{Dispatch, Grid, KvCache};
use crate::context::{GpuContext, spread};
use crate::shader::{Flag, Kernel, Variant};
use crate::weights::GpuMatrix;
use carebot_model::config::LlamaConfig;

/// q = RoPE(W_q x̂) into `q`; RoPE(W_k x̂) and W_v x̂ into the cache at position `pos0 + n − 1`,
/// where x̂ is the last token of `x`, or with `norm`, x as a `NextNorm` product left it, scaled
/// by 1 / rms.
pub struct QkvRopeStore<'a> {
    /// W_q, W_k, W_v: each one part (the engine checks that at load), `dim` columns.
    pub weights: [&'a GpuMatrix; 3],
    /// [n, dim]
    pub x: &'a wgpu::Buffer,
    pub norm: Option<Norm>,
    /// Its offset a multiple of 4.
    pub table: RopeTable<'a>,
    /// [1, n_heads · head_dim]
    pub q: &'a wgpu::Buffer,
    pub cache: KvCache<'a>,
    /// The matrix–vector workgroup's rows.
    pub rows: MatvecRows,
}

impl QkvRopeStore<'_> {
    pub fn dispatch(&self, ctx: &GpuContext, step: &wgpu::Buffer, cfg: &LlamaConfig) -> Dispatch {
        let QkvRopeStore { weights: [wq, wk, wv], x, norm, table, q, cache, rows: group_rows } = *self;
        for m in [wq, wk, wv] {
            assert_eq!(m.parts.len(), 1, "the fused projection needs each matrix in one buffer");
            assert_eq!(m.cols, cfg.dim as u32);
        }
        assert!(table.offset.is_multiple_of(4));
        let variant = Variant::new(Kernel::MatVec)
            .weight(wq.ty)
            .weight(wk.ty)
            .weight(wv.ty)
            .flag(Flag::Qkv)
            .flag_if(norm.is_some(), Flag::Norm)
            .flag_if(ctx.subgroups, Flag::Subgroups)
            .flag_if(int8_activations(ctx, &[wq.ty, wk.ty, wv.ty]), Flag::XInt8)
            .kv(cache.storage)
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
            table_offset: table.offset / 4,
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
            (7, table.buffer),
            (8, cache.keys),
            (9, cache.values),
        ];
        Dispatch::new(ctx, ctx.pipeline(&variant), &buffers, Grid::Fixed(spread(rows.div_ceil(group_rows.0))))
    }
}
