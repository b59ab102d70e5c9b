//! Shared by the GPU tests: a device (lavapipe in CI), buffer upload/download and seeded data.
#![allow(dead_code)]

use carebot_gpu::ops::{Dispatch, Step};
use carebot_gpu::{GpuContext, GpuOptions};
use carebot_model::rng::SplitMix64;

pub fn context(options: GpuOptions) -> Option<GpuContext> {
    carebot_gpu::test_context(&options)
}

/// A fresh seed per run unless `CAREBOT_TEST_SEED` pins one (printed so a failure can be replayed).
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("CAREBOT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{name}: CAREBOT_TEST_SEED={seed}");
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

/// Encodes `dispatches` in one pass for a batch of `n_tokens`, submits, and waits.
pub fn run(ctx: &GpuContext, dispatches: &[Dispatch], n_tokens: u32) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.encode(&mut pass, n_tokens);
        }
    }
    ctx.queue.submit([encoder.finish()]);
    ctx.check().unwrap();
}

pub fn download(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let rb = ctx.readback("test readback", len as u64 * 4);
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &rb, 0, len as u64 * 4);
    ctx.queue.submit([encoder.finish()]);
    let bytes = pollster::block_on(ctx.read(&rb, len as u64 * 4)).unwrap();
    bytemuck::cast_slice(&bytes[..len * 4]).to_vec()
}

/// max |a − b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max_ref = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / max_ref
}
