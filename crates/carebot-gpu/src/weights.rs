//! Weight matrices on the GPU, in their GGUF block format and split by rows into parts that each
//! fit one storage binding.
//!
//! Blocks whose length is not a multiple of 16 bytes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_K) are
//! repacked on upload: their fields sit at unaligned offsets, so a row becomes planes instead
//! (each block's weight bytes, then each block's next field, …), padded to 16 bytes. A 32-weight
//! chunk's bytes are then aligned 16-byte loads and the lanes of a row read consecutive ones
//! (`shaders/quant/*.wgsl`). Q4_K and Q5_K need no repacking: their 144- and 176-byte blocks
//! keep every 16-byte piece aligned.

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

/// Each plane of a repacked row, as (offset, length) of the field within a block; `None` for the
/// types kept as in the file.
fn planes(ty: GgmlType) -> Option<&'static [(usize, usize)]> {
    match ty {
        // nibbles, d.
        GgmlType::Q4_0 => Some(&[(2, 16), (0, 2)]),
        // nibbles, (d, m).
        GgmlType::Q4_1 => Some(&[(4, 16), (0, 4)]),
        // nibbles, fifth bits, d.
        GgmlType::Q5_0 => Some(&[(6, 16), (2, 4), (0, 2)]),
        // nibbles, fifth bits, (d, m).
        GgmlType::Q5_1 => Some(&[(8, 16), (4, 4), (0, 4)]),
        // weights, d.
        GgmlType::Q8_0 => Some(&[(2, 32), (0, 2)]),
        // ql, qh, scales, d.
        GgmlType::Q6_K => Some(&[(0, 128), (128, 64), (192, 16), (208, 2)]),
        _ => None,
    }
}

/// Alignment of a row on the GPU (the shaders get it as `ROW_ALIGN_*`).
pub fn row_align(ty: GgmlType) -> u64 {
    if planes(ty).is_some() { 16 } else { 1 }
}

/// Bytes of one row of `cols` values of type `ty` in the file.
pub fn file_row_bytes(ty: GgmlType, cols: u64) -> u64 {
    cols / ty.block_size() as u64 * ty.block_bytes() as u64
}

/// Bytes of one row of `cols` values of type `ty` on the GPU.
pub fn row_bytes(ty: GgmlType, cols: u64) -> u64 {
    file_row_bytes(ty, cols).next_multiple_of(row_align(ty))
}

/// Appends whole rows, given in the file's layout, in the GPU's.
pub fn repack_rows(ty: GgmlType, cols: u64, rows: &[u8], out: &mut Vec<u8>) {
    let Some(planes) = planes(ty) else {
        out.extend_from_slice(rows);
        return;
    };
    let file_row = file_row_bytes(ty, cols) as usize;
    let gpu_row = row_bytes(ty, cols) as usize;
    let blocks = file_row / ty.block_bytes();
    for row in rows.chunks_exact(file_row) {
        let start = out.len();
        out.resize(start + gpu_row, 0);
        let mut dst = &mut out[start..];
        for &(offset, len) in planes {
            let (plane, rest) = dst.split_at_mut(blocks * len);
            // Field lengths as literals, so each inlined copy can be a few moves.
            let bb = ty.block_bytes();
            match len {
                2 => copy_field(row, bb, offset, 2, plane),
                4 => copy_field(row, bb, offset, 4, plane),
                16 => copy_field(row, bb, offset, 16, plane),
                32 => copy_field(row, bb, offset, 32, plane),
                64 => copy_field(row, bb, offset, 64, plane),
                128 => copy_field(row, bb, offset, 128, plane),
                _ => copy_field(row, bb, offset, len, plane),
            }
            dst = rest;
        }
    }
}

/// The `len` bytes at `offset` of every block of `row`, one after another into `plane`.
#[inline(always)]
fn copy_field(row: &[u8], block_bytes: usize, offset: usize, len: usize, plane: &mut [u8]) {
    for (block, field) in row.chunks_exact(block_bytes).zip(plane.chunks_exact_mut(len)) {
        field.copy_from_slice(&block[offset..offset + len]);
    }
}

/// Bytes of a weight buffer of `bytes` of rows: whole vec4s, as the shaders bind it.
pub fn padded(bytes: u64) -> u64 {
    bytes.next_multiple_of(16).max(16)
}

/// The most rows of `row_bytes` each that fit one binding (padded to whole vec4s).
pub fn rows_per_part(ctx: &GpuContext, row_bytes: u64) -> Result<u32, GpuError> {
    let limit = ctx.binding_limit.min(ctx.max_buffer) / 16 * 16;
    let fit = limit / row_bytes.max(1);
    if fit == 0 {
        return Err(GpuError::TooSmall {
            what: "one weight row".into(),
            needs: padded(row_bytes),
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
            return Err(GpuError::Tensor {
                name: name.into(),
                problem: format!("the GPU engine cannot read {} rows of {cols} values", ty.name()),
            });
        }
        let rb = row_bytes(ty, cols as u64);
        let mut parts = Vec::new();
        let mut first_row = 0;
        while first_row < rows {
            let n = per_part.min(rows - first_row);
            let buffer = ctx.storage(&format!("{name}[{first_row}..]"), padded(n as u64 * rb))?;
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
        let rb = file_row_bytes(self.ty, self.cols as u64) as usize;
        for part in &self.parts {
            let start = part.first_row as usize * rb;
            let mut bytes = Vec::new();
            repack_rows(self.ty, self.cols as u64, &data[start..start + part.rows as usize * rb], &mut bytes);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            ctx.queue.write_buffer(&part.buffer, 0, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_rows_become_nibble_and_scale_planes_padded_to_16_bytes() {
        // Two rows of three blocks; byte k of block b of row r is 100r + 20b + k.
        let file: Vec<u8> =
            (0..2u8).flat_map(|r| (0..3u8).flat_map(move |b| (0..18u8).map(move |k| 100 * r + 20 * b + k))).collect();
        let mut gpu = Vec::new();
        repack_rows(GgmlType::Q4_0, 96, &file, &mut gpu);
        assert_eq!(row_bytes(GgmlType::Q4_0, 96), 64);
        assert_eq!(gpu.len(), 128);
        for r in 0..2u8 {
            let row = &gpu[64 * r as usize..][..64];
            for b in 0..3u8 {
                let base = 100 * r + 20 * b;
                assert_eq!(&row[16 * b as usize..][..16], &(2..18).map(|k| base + k).collect::<Vec<_>>()[..]);
                assert_eq!(&row[48 + 2 * b as usize..][..2], &[base, base + 1]);
            }
            assert_eq!(&row[54..], &[0; 10]);
        }
    }

    #[test]
    fn q6_k_rows_become_four_planes_and_k_quants_stay_as_in_the_file() {
        let file: Vec<u8> = (0..420).map(|i| (i * 7 % 251) as u8).collect();
        let mut gpu = Vec::new();
        repack_rows(GgmlType::Q6_K, 512, &file, &mut gpu);
        assert_eq!(gpu.len(), 432);
        let (b0, b1) = (&file[..210], &file[210..]);
        let planes = [(0, 128), (128, 64), (192, 16), (208, 2)];
        let expected: Vec<u8> =
            planes.iter().flat_map(|&(o, n)| b0[o..o + n].iter().chain(&b1[o..o + n]).copied()).collect();
        assert_eq!(&gpu[..420], &expected[..]);
        assert_eq!(&gpu[420..], &[0; 12]);

        let mut same = Vec::new();
        repack_rows(GgmlType::Q4_K, 256, &file[..144], &mut same);
        assert_eq!(same, &file[..144]);
        assert_eq!(row_bytes(GgmlType::Q4_K, 512), 288);
        assert_eq!(row_bytes(GgmlType::Q5_0, 32), 32);
    }
}
