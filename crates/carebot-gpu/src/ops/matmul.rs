//! Matrix products with on-the-fly dequantization: `shaders/matvec.wgsl` for one token (decode) and
//! the tiled `shaders/matmul.wgsl` for a batch (prefill), each with the epilogues of
//! `shaders/epilogue.wgsl`. Decode can fold the RMSNorm before a product into it ([`Norm`]).

use super::{Dispatch, Grid};
use crate::context::{GpuContext, spread};
use crate::shader::{Kernel, MATMUL_TOKENS, MATVEC_ROWS, Variant, matmul_tile_rows};
use crate::weights::GpuMatrix;

/// What happens to each result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// y = W x
    Store,
    /// y += W x (residual connections)
    Add,
    /// y = silu(W_gate x) · (W_up x)
    SwiGlu,
}

/// An RMSNorm folded into a decode product: x is the residual stream, and the product reads its
/// last token as x / rms(x) · weights, the weights being `dim` f32s at `offset` in `consts` (a
/// multiple of 4).
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    pub consts: &'a wgpu::Buffer,
    pub offset: u32,
    pub eps: f32,
}

/// The products' parameters (`Params` in `shaders/product_io.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProductParams {
    pub rows: u32,
    pub cols: u32,
    pub row_offset: u32,
    pub out_stride: u32,
    /// [`Norm::offset`] in vec4s.
    pub norm_offset: u32,
    pub eps: f32,
    pub q_rows: u32,
    pub kv_rows: u32,
    /// The RoPE table's first vec4 in `consts`.
    pub table_offset: u32,
    pub head_dim: u32,
    pub _pad: [u32; 2],
}

/// y[t][r] (+)= Σ_c W[r][c] x[t][c], one dispatch per part of W. `batched` picks the tiled
/// matrix–matrix kernel (any number of tokens) over the matrix–vector one (the batch's last token
/// only: one decoded token, or the output head after a prefill). For [`Epilogue::SwiGlu`], `up`
/// is the second matrix, split into the same parts as `w`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    w: &GpuMatrix,
    up: Option<&GpuMatrix>,
    norm: Option<Norm>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    epilogue: Epilogue,
    batched: bool,
) -> Vec<Dispatch> {
    assert!(!(batched && norm.is_some()), "only the matrix–vector product folds a norm in");
    let mut variant = Variant::new(if batched { Kernel::MatMul } else { Kernel::MatVec }).weight(w.ty);
    if let Some(up) = up {
        variant = variant.weight(up.ty);
    }
    variant = variant
        .flag_if(epilogue == Epilogue::Add, "ADD")
        .flag_if(epilogue == Epilogue::SwiGlu, "SWIGLU")
        .flag_if(norm.is_some(), "NORM");
    assert_eq!(epilogue == Epilogue::SwiGlu, up.is_some(), "SwiGLU needs the up matrix");
    let pipeline = ctx.pipeline(&variant);
    w.parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut params = ProductParams {
                rows: part.rows,
                cols: w.cols,
                row_offset: part.first_row,
                out_stride: w.rows,
                ..Default::default()
            };
            if let Some(n) = &norm {
                params.norm_offset = n.offset / 4;
                params.eps = n.eps;
            }
            let params = ctx.uniform("matmul params", &params);
            let mut buffers = vec![(1, &params), (2, x), (3, y), (4, &part.buffer)];
            if let Some(up) = up {
                assert_eq!(up.parts[i].rows, part.rows, "gate and up must be split alike");
                buffers.push((5, &up.parts[i].buffer));
            }
            if let Some(n) = &norm {
                buffers.push((7, n.consts));
            }
            buffers.push((0, step));
            let grid = if batched {
                Grid::PerTokens { x: part.rows.div_ceil(matmul_tile_rows(up.is_some())), tile: MATMUL_TOKENS }
            } else {
                Grid::Fixed(spread(part.rows.div_ceil(MATVEC_ROWS)))
            };
            Dispatch::new(ctx, pipeline.clone(), &buffers, grid)
        })
        .collect()
}
