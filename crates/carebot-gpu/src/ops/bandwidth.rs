//! The streaming-read probe (`shaders/bandwidth.wgsl`): reads a large buffer end to end so a
//! benchmark can measure the device's own read bandwidth, the roofline for decoding.

use super::{Dispatch, Grid};
use crate::context::{GpuContext, GpuError};
use crate::shader::{Kernel, Variant};

/// `Params` in `shaders/bandwidth.wgsl`: the buffer's length in `vec4<u32>`s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BandwidthParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

pub struct Bandwidth {
    pub bytes: u64,
    dispatch: Dispatch,
}

impl Bandwidth {
    /// A buffer of up to `bytes` (capped by the binding limit), filled with a pattern.
    pub fn new(ctx: &GpuContext, bytes: u64) -> Result<Self, GpuError> {
        let bytes = bytes.min(ctx.binding_limit).min(ctx.max_buffer) / 16 * 16;
        let src = ctx.storage("bandwidth source", bytes)?;
        let piece: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(piece.len() as u64);
            ctx.queue.write_buffer(&src, at, &piece[..n as usize]);
            at += n;
        }
        // Enough invocations to fill any GPU, each striding through the buffer (16+ loads each).
        let groups = ((bytes / 16).div_ceil(256 * 16) as u32).clamp(1, 4096);
        let sink = ctx.storage("bandwidth sink", groups as u64 * 256 * 4)?;
        let params = ctx.uniform("bandwidth params", &BandwidthParams { n: (bytes / 16) as u32, _pad: [0; 3] });
        let pipeline = ctx.pipeline(&Variant::new(Kernel::Bandwidth));
        let dispatch =
            Dispatch::new(ctx, pipeline, &[(1, &params), (2, &src), (3, &sink)], Grid::Fixed([groups, 1, 1]));
        Ok(Bandwidth { bytes, dispatch })
    }

    /// Records one full read of the buffer.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.encode(pass, 1, 0);
    }
}
