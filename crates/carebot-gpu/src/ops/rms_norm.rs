//! RMSNorm (`shaders/rms_norm.wgsl`).

use super::{Dispatch, Grid, Params};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};

/// y[t] = x[t] / rms(x[t]) · weight for every token of the batch (prefill, and decode unless it
/// folds the norm into the products around it, see `matmul::NextNorm`). The weights are `dim` f32s at `offset`
/// f32s into `weights`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    offset: u32,
    dim: u32,
    eps: f32,
) -> Dispatch {
    let pipeline = ctx.pipeline(&Variant::new(Kernel::RmsNorm));
    let params = ctx.uniform("rms_norm params", &Params([dim, eps.to_bits(), offset, 0]));
    let grid = Grid::PerTokens { x: 1, tile: 1 };
    Dispatch::new(ctx, pipeline, &[(1, &params), (2, x), (3, y), (4, weights)], grid)
}
