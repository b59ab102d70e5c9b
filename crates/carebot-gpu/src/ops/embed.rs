//! Token-embedding gather (`shaders/embed.wgsl`): x[t] = dequantized row `tokens[t]`.

use super::{Dispatch, Grid, Params};
use crate::context::GpuContext;
use crate::shader::{Kernel, Variant};
use crate::weights::GpuMatrix;

/// One dispatch per part of the table; each copies the rows of the tokens that fall in its part.
pub fn embed(ctx: &GpuContext, table: &GpuMatrix, tokens: &wgpu::Buffer, out: &wgpu::Buffer) -> Vec<Dispatch> {
    let pipeline = ctx.pipeline(&Variant::new(Kernel::Embed).weight(table.ty));
    table
        .parts
        .iter()
        .map(|part| {
            let params = ctx.uniform("embed params", &Params([part.first_row, part.rows, table.cols, 0]));
            Dispatch::new(
                ctx,
                pipeline.clone(),
                &[(1, &params), (2, tokens), (3, out), (4, &part.buffer)],
                Grid::PerTokens { x: 1, tile: 1 },
            )
        })
        .collect()
}
