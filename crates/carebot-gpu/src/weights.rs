//! Weight matrices on the GPU, kept in their GGUF block format and split by rows into parts that
//! each fit one storage binding.

use crate::context::{GpuContext, GpuError};
use carebot_model::quant::GgmlType;

/// One buffer holding rows `first_row .. first_row + rows`.
pub struct Part {
    pub buffer: wgpu::Buffer,
    pub first_row: u32,
    pub rows: u32,
}

pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: u32,
    pub cols: u32,
    pub parts: Vec<Part>,
}

/// Bytes of one row of `cols` values of type `ty`.
pub fn row_bytes(ty: GgmlType, cols: u64) -> u64 {
    cols / ty.block_size() as u64 * ty.block_bytes() as u64
}

/// The most rows of `row_bytes` each that fit one binding (with the 4 bytes of read padding).
pub fn rows_per_part(ctx: &GpuContext, row_bytes: u64) -> Result<u32, GpuError> {
    let fit = (ctx.binding_limit.min(ctx.max_buffer).saturating_sub(4)) / row_bytes.max(1);
    if fit == 0 {
        return Err(GpuError::TooSmall {
            what: "one weight row".into(),
            needs: row_bytes + 4,
            offers: ctx.binding_limit,
        });
    }
    Ok(fit.min(u32::MAX as u64) as u32)
}

impl GpuMatrix {
    /// Allocates (uninitialized) parts of at most `per_part` rows.
    pub fn allocate(
        ctx: &GpuContext,
        name: &str,
        ty: GgmlType,
        rows: u32,
        cols: u32,
        per_part: u32,
    ) -> Result<Self, GpuError> {
        if crate::shader::weight_format(ty).is_none()
            || !cols.is_multiple_of(32)
            || !(cols as usize).is_multiple_of(ty.block_size())
        {
            return Err(GpuError::Model(format!(
                "tensor {name:?}: the GPU engine cannot read {} rows of {cols} values",
                ty.name()
            )));
        }
        let rb = row_bytes(ty, cols as u64);
        let mut parts = Vec::new();
        let mut first_row = 0;
        while first_row < rows {
            let n = per_part.min(rows - first_row);
            // Four bytes of padding: kernels read the word after a field that ends the buffer.
            let buffer = ctx.storage(&format!("{name}[{first_row}..]"), n as u64 * rb + 4)?;
            parts.push(Part { buffer, first_row, rows: n });
            first_row += n;
        }
        Ok(GpuMatrix { ty, rows, cols, parts })
    }

    pub fn row_bytes(&self) -> u64 {
        row_bytes(self.ty, self.cols as u64)
    }

    pub fn bytes(&self) -> u64 {
        self.rows as u64 * self.row_bytes()
    }

    /// Uploads the whole matrix from its file bytes (tests and small models).
    pub fn write(&self, ctx: &GpuContext, data: &[u8]) {
        let rb = self.row_bytes() as usize;
        for part in &self.parts {
            let start = part.first_row as usize * rb;
            let mut bytes = data[start..start + part.rows as usize * rb].to_vec();
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            ctx.queue.write_buffer(&part.buffer, 0, &bytes);
        }
    }
}
