//! The peak-FMA probe (`shaders/fma_peak.wgsl`): long independent chains of multiply-adds in f32,
//! or in f16 where the device has `shader-f16`, so a benchmark can measure the device's own
//! compute rates, the rooflines for prefill.

use super::{Dispatch, Grid};
use crate::context::{GpuContext, GpuError};
use crate::shader::{Flag, Kernel, Variant};

/// `Params` in `shaders/fma_peak.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FmaParams {
    pub iters: u32,
    pub m: f32,
    pub c: f32,
    pub _pad: u32,
}

/// Invocations per dispatch: 1024 workgroups, enough to fill any GPU.
const GROUPS: u32 = 1024;

/// The arithmetic the probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FmaType {
    F32,
    /// Needs `shader-f16` ([`GpuContext::f16`]).
    F16,
}

pub struct FmaPeak {
    pub iters: u32,
    dispatch: Dispatch,
}

impl FmaPeak {
    /// A probe running `iters` rounds per invocation.
    pub fn new(ctx: &GpuContext, ty: FmaType, iters: u32) -> Result<Self, GpuError> {
        if ty == FmaType::F16 && !ctx.f16 {
            return Err(GpuError::MissingFeature("shader-f16, for the f16 FMA probe".into()));
        }
        let sink = ctx.storage("fma sink", GROUPS as u64 * 256 * 4)?;
        let params = ctx.uniform("fma params", &FmaParams { iters, m: 0.999_999, c: 1e-7, _pad: 0 });
        let pipeline = ctx.pipeline(&Variant::new(Kernel::FmaPeak).flag_if(ty == FmaType::F16, Flag::F16));
        let dispatch = Dispatch::new(ctx, pipeline, &[(1, &params), (2, &sink)], Grid::Fixed([GROUPS, 1, 1]));
        Ok(FmaPeak { iters, dispatch })
    }

    /// Floating-point operations one dispatch performs (an FMA counts as two).
    pub fn flops(&self) -> f64 {
        GROUPS as f64 * 256.0 * self.iters as f64 * 64.0
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.encode(pass, 1, 0);
    }
}
