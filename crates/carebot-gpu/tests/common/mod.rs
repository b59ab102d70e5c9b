//! Shared by the GPU tests: a device, buffer upload/download and seeded data.
//!
//! Every GPU test is one `async fn` that runs on both targets:
//!
//! ```ignore
//! #[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
//! #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
//! async fn some_kernel_matches_the_cpu() { … }
//! ```
//!
//! Natively (`cargo test`) it blocks on Mesa's lavapipe or a real GPU; in headless Chromium
//! (`scripts/test-web-gpu.sh`) it awaits WebGPU on SwiftShader, which is slow, so tests pick
//! smaller sizes when [`WEB`] is true.
#![allow(dead_code)]

use carebot_gpu::ops::{Dispatch, Step};
use carebot_gpu::{GpuContext, GpuOptions};
use carebot_model::rng::SplitMix64;

// Every test binary that includes this module runs in the browser (WebGPU), not in Node.
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Running in the browser: tests use their smallest sizes that still exercise odd shapes.
pub const WEB: bool = cfg!(target_arch = "wasm32");

/// Natively: a device, or `None` (skip) when there is none and `CAREBOT_SKIP_GPU_TESTS=1`.
#[cfg(not(target_arch = "wasm32"))]
pub async fn context(options: GpuOptions) -> Option<GpuContext> {
    carebot_gpu::test_context(&options)
}

/// In the browser: a WebGPU device, or a failure with the reason (a browser test never passes
/// without a GPU).
#[cfg(target_arch = "wasm32")]
pub async fn context(options: GpuOptions) -> Option<GpuContext> {
    match GpuContext::new(&options).await {
        Ok(ctx) => {
            note(&format!("WebGPU adapter: {}", ctx.describe()));
            Some(ctx)
        }
        Err(e) => panic!(
            "no WebGPU device in this browser: {e}\n(headless Chromium needs --enable-unsafe-webgpu: \
             run the browser tests through scripts/test-web-gpu.sh)"
        ),
    }
}

/// The devices a matrix–vector test runs on: the default one and, when the adapter has subgroup
/// operations (the decode products then reduce with them), one without, so that both reductions
/// are checked on every machine that has both.
pub async fn with_and_without_subgroups(options: GpuOptions) -> Vec<GpuContext> {
    let Some(ctx) = context(options.clone()).await else { return Vec::new() };
    let without = match ctx.subgroups {
        true => context(GpuOptions { disable_subgroups: true, ..options }).await,
        false => None,
    };
    std::iter::once(ctx).chain(without).collect()
}

/// A line of test output (stderr natively, the test page's output in the browser).
pub fn note(line: &str) {
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{line}");
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_test::console_log!("{line}");
}

/// A fresh seed per run unless `CAREBOT_TEST_SEED` pins one (printed so a failure can be
/// replayed). In the browser there is no environment: the variable is read when the tests are
/// built (`CAREBOT_TEST_SEED=… scripts/test-web-gpu.sh`), and the fresh seed is the clock's.
pub fn seed(name: &str) -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    let (pinned, fresh) = (std::env::var("CAREBOT_TEST_SEED").ok(), || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    #[cfg(target_arch = "wasm32")]
    let (pinned, fresh) = (option_env!("CAREBOT_TEST_SEED"), || {
        // Milliseconds, spread so that tests started in the same millisecond still differ.
        let ms = js_sys::Date::now() as u64;
        let sub = (js_sys::Math::random() * 1e6) as u64;
        ms * 1_000_000 + sub
    });
    let seed = pinned.and_then(|s| s.parse().ok()).unwrap_or_else(fresh);
    note(&format!("{name}: CAREBOT_TEST_SEED={seed}"));
    seed
}

/// Uniform values in [lo, hi).
pub fn random(rng: &mut SplitMix64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect()
}

pub fn upload(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    upload_bytes(ctx, bytemuck::cast_slice(data))
}

pub fn upload_bytes(ctx: &GpuContext, data: &[u8]) -> wgpu::Buffer {
    let b = ctx.storage("test data", data.len() as u64 + 4).unwrap();
    let mut padded = data.to_vec();
    padded.resize(padded.len().next_multiple_of(4), 0);
    ctx.queue.write_buffer(&b, 0, &padded);
    b
}

pub fn step(ctx: &GpuContext, n_tokens: u32, pos0: u32) -> wgpu::Buffer {
    ctx.uniform("step", &Step { n_tokens, pos0, _pad: [0; 2] })
}

/// Encodes `dispatches` in one pass for a batch of `n_tokens` at cache position 0 and submits (the
/// next [`download`] waits for it).
pub fn run(ctx: &GpuContext, dispatches: &[Dispatch], n_tokens: u32) {
    run_at(ctx, dispatches, n_tokens, 0)
}

/// [`run`] for a batch whose first token is at cache position `pos0` (the `step` the dispatches
/// read must say the same).
pub fn run_at(ctx: &GpuContext, dispatches: &[Dispatch], n_tokens: u32, pos0: u32) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.encode(&mut pass, n_tokens, pos0);
        }
    }
    ctx.queue.submit([encoder.finish()]);
    ctx.check().unwrap();
}

/// The first `len` floats of `buffer`, once everything submitted before has run.
pub async fn download(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let rb = ctx.readback("test readback", len as u64 * 4);
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &rb, 0, len as u64 * 4);
    ctx.queue.submit([encoder.finish()]);
    let bytes = ctx.read(&rb, len as u64 * 4, carebot_gpu::context::ReadPace::new().deadline(1)).await.unwrap();
    bytemuck::cast_slice(&bytes[..len * 4]).to_vec()
}

/// max |a − b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max_ref = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / max_ref
}
