//! CareBot's GPU engine: our WGSL Llama-3 kernels (in `shaders/`) driven through `wgpu`, natively
//! on Vulkan/Metal/DX12 and in the browser on WebGPU. [`GpuModel`] is the second implementation of
//! the model crate's `Backend`, checked kernel by kernel and end to end against the CPU reference.

pub mod context;
pub mod engine;
pub mod ops;
pub mod session;
pub mod shader;
mod upload;
pub mod weights;

pub use context::{GpuContext, GpuError, GpuOptions};
pub use engine::{EngineOptions, GpuModel, KvFormat, NormPlacement, RunStats};
pub use ops::matmul::{MatvecRows, PrefillTile};
pub use ops::quantize::GpuQuantizer;
pub use session::GpuSession;

/// Set to `1` to skip GPU tests on a machine with no Vulkan driver at all. CI never sets it: there
/// the tests run on Mesa's lavapipe.
pub const SKIP_GPU_TESTS_ENV: &str = "CAREBOT_SKIP_GPU_TESTS";

/// For tests: a device, or `None` when there is no adapter and [`SKIP_GPU_TESTS_ENV`] is set.
/// Without the variable a missing adapter is a failure with the reason spelled out.
#[cfg(not(target_arch = "wasm32"))]
pub fn test_context(options: &GpuOptions) -> Option<GpuContext> {
    match pollster::block_on(GpuContext::new(options)) {
        Ok(ctx) => Some(ctx),
        Err(e) if std::env::var(SKIP_GPU_TESTS_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("skipping GPU test ({SKIP_GPU_TESTS_ENV}=1): {e}");
            None
        }
        Err(e) => panic!("{e}\n(set {SKIP_GPU_TESTS_ENV}=1 to skip GPU tests on a machine without Vulkan)"),
    }
}
