//! Token-embedding gather (`shaders/embed.wgsl`): `x[t]` = dequantized row `tokens[t]`.

use super::{Dispatch, Grid};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};
use crate::weights::GpuMatrix;

/// `Params` in `shaders/embed.wgsl`: which rows of the table this part holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmbedParams {
    pub first_row: u32,
    pub rows: u32,
    pub cols: u32,
    pub _pad: u32,
}

/// One dispatch per part of the table; each copies the rows of the tokens that fall in its part.
pub fn embed(ctx: &GpuContext, table: &GpuMatrix, tokens: &wgpu::Buffer, out: &wgpu::Buffer) -> Vec<Dispatch> {
    let pipeline = ctx.pipeline(&Variant::new(Kernel::Embed).weight(table.ty));
    table
        .parts
        .iter()
        .map(|part| {
            let params = ctx.uniform(
                "embed params",
                &EmbedParams { first_row: part.first_row, rows: part.rows, cols: table.cols, _pad: 0 },
            );
            Dispatch::new(
                ctx,
                pipeline.clone(),
                &[(1, &params), (2, tokens), (3, out), (4, &part.buffer)],
                Grid::PerTokens { x: 1, tile: 1 },
            )
        })
        .collect()
}
