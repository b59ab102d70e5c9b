//! Matrix products with on-the-fly dequantization: `shaders/matvec.wgsl` for one token (decode) and
//! the tiled `shaders/matmul.wgsl` for a batch (prefill), each with the epilogues of
//! `shaders/epilogue.wgsl`.

use super::{Dispatch, Grid, Params};
use crate::context::{GpuContext, spread};
use crate::shader::{Kernel, MATVEC_ROWS, Variant};
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

/// y[t][r] (+)= Σ_c W[r][c] x[t][c], one dispatch per part of W. `batched` picks the tiled
/// matrix–matrix kernel (any number of tokens) over the matrix–vector one (exactly one token).
/// For [`Epilogue::SwiGlu`], `up` is the second matrix, split into the same parts as `w`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    w: &GpuMatrix,
    up: Option<&GpuMatrix>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    epilogue: Epilogue,
    batched: bool,
) -> Vec<Dispatch> {
    let mut variant = Variant::new(if batched { Kernel::MatMul } else { Kernel::MatVec }).weight(w.ty);
    if let Some(up) = up {
        variant = variant.weight(up.ty);
    }
    variant = variant.flag_if(epilogue == Epilogue::Add, "ADD").flag_if(epilogue == Epilogue::SwiGlu, "SWIGLU");
    assert_eq!(epilogue == Epilogue::SwiGlu, up.is_some(), "SwiGLU needs the up matrix");
    let pipeline = ctx.pipeline(&variant);
    w.parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let params = ctx.uniform("matmul params", &Params([part.rows, w.cols, part.first_row, w.rows]));
            let mut buffers = vec![(1, &params), (2, x), (3, y), (4, &part.buffer)];
            if let Some(up) = up {
                assert_eq!(up.parts[i].rows, part.rows, "gate and up must be split alike");
                buffers.push((5, &up.parts[i].buffer));
            }
            let grid = if batched {
                buffers.push((0, step));
                Grid::PerTokens { x: part.rows.div_ceil(64), tile: 16 }
            } else {
                Grid::Fixed(spread(part.rows.div_ceil(MATVEC_ROWS)))
            };
            Dispatch::new(ctx, pipeline.clone(), &buffers, grid)
        })
        .collect()
}
