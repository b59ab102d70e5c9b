//! RMSNorm (`shaders/rms_norm.wgsl`).

use super::{Dispatch, Grid, Params};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};

/// y[t] = x[t] / rms(x[t]) · weight for every token of the batch, or, with `last_only`, just
/// the batch's last token into y[0].
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    dim: u32,
    eps: f32,
    last_only: bool,
) -> Dispatch {
    let pipeline = ctx.pipeline(&Variant::new(Kernel::RmsNorm));
    let params = ctx.uniform("rms_norm params", &Params([dim, eps.to_bits(), last_only as u32, 0]));
    let grid = if last_only { Grid::Fixed([1, 1, 1]) } else { Grid::PerTokens { x: 1, tile: 1 } };
    Dispatch::new(ctx, pipeline, &[(0, step), (1, &params), (2, x), (3, y), (4, weight)], grid)
}
