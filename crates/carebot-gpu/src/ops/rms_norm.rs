//! RMSNorm (`shaders/rms_norm.wgsl`).

use super::{Dispatch, Grid};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};

/// `Params` in `shaders/rms_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsNormParams {
    pub dim: u32,
    pub eps: f32,
    /// Where the weights start in the norm buffer.
    pub w_offset: u32,
    pub _pad: u32,
}

/// `y[t] = x[t] / rms(x[t]) · weight` for every token of the batch (prefill, and decode unless it
/// folds the norm into the products around it, see `matmul::NextNorm`). The weights are `dim` f32s at `offset`
/// f32s into `weights`.
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
    let params = ctx.uniform("rms_norm params", &RmsNormParams { dim, eps, w_offset: offset, _pad: 0 });
    let grid = Grid::PerTokens { x: 1, tile: 1 };
    Dispatch::new(ctx, pipeline, &[(1, &params), (2, x), (3, y), (4, weights)], grid)
}
