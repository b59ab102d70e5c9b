//! x rounded to int8 per 16 values (`shaders/round_int8.wgsl`, with `shaders/int8.wgsl`) for the
//! prefill products with int8 activations ([`super::matmul::ProductInput::Int8`]).

use super::{Dispatch, Grid};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};

/// `Params` in `shaders/round_int8.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RoundParams {
    pub cols: u32,
    pub _pad: [u32; 3],
}

/// Bytes of the rounded values (`q`) and of their scales and sums (`meta`) for `tokens` tokens of
/// `cols` values.
pub fn rounded_bytes(tokens: u64, cols: u64) -> (u64, u64) {
    let blocks = tokens * cols / 16;
    (blocks * 16, blocks * 8)
}

/// For every token of the batch: x's `cols` values (a multiple of 16) as 16-value blocks of int8
/// into `q` (one `vec4<u32>` each) and their (d, Σq) into `meta` (two f32s each).
pub fn round_int8(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    q: &wgpu::Buffer,
    meta: &wgpu::Buffer,
    cols: u32,
) -> Dispatch {
    assert!(cols.is_multiple_of(16));
    let pipeline = ctx.pipeline(&Variant::new(Kernel::RoundInt8));
    let params = ctx.uniform("round_int8 params", &RoundParams { cols, _pad: [0; 3] });
    let grid = Grid::PerTokens { x: (cols / 16).div_ceil(64), tile: 1 };
    Dispatch::new(ctx, pipeline, &[(0, step), (1, &params), (2, x), (3, q), (4, meta)], grid)
}
