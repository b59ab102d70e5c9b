//! The GPU k-quant quantizer against the CPU's (`carebot_model::quant::quantize`): byte for byte on
//! awkward super-blocks (constant, zero, one-signed, huge, tiny, tied values), an odd number of
//! them so that Q6_K's shared words are hit at both parities, and on a large timed call.

mod common;

use carebot_gpu::ops::{Dispatch, Grid};
use carebot_gpu::{GpuError, GpuOptions, GpuQuantizer};
use carebot_model::quant::{self, GgmlType, QK_K};
use carebot_model::rng::SplitMix64;
use common::*;
use half::{bf16, f16};

const TYPES: [GgmlType; 2] = [GgmlType::Q4_K, GgmlType::Q6_K];

/// Kinds of super-block [`awkward_block`] makes.
const KINDS: usize = 10;

/// Roughly normal in (-2, 2): the shape of real weights.
fn normalish(rng: &mut SplitMix64) -> f32 {
    (rng.next_f32() + rng.next_f32() + rng.next_f32() + rng.next_f32() - 2.0) * 1.7
}

/// 10^u for u uniform in [lo, hi).
fn magnitude(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    10f32.powf(lo + (hi - lo) * rng.next_f32())
}

fn bf16_round(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

/// One 256-value super-block of kind `kind % KINDS`.
fn awkward_block(rng: &mut SplitMix64, kind: usize) -> Vec<f32> {
    let scale = magnitude(rng, -2.0, 1.0);
    let offset = 0.3 * scale * rng.next_signed();
    let mut x: Vec<f32> = (0..QK_K).map(|_| offset + scale * rng.next_signed()).collect();
    match kind % KINDS {
        // Uniform with an offset, as made above.
        0 => {}
        // Checkpoint weights: normal-ish, rounded through bf16.
        1 => {
            let s = magnitude(rng, -2.5, -0.5);
            x.iter_mut().for_each(|v| *v = bf16_round(s * normalish(rng)));
        }
        // Constant 32-value sub-blocks: negative, positive and zero, the rest normal.
        2 => {
            let mut runs = [0usize, 1, 2, 3, 4, 5, 6, 7];
            for i in (1..8).rev() {
                runs.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            for (r, c) in runs.iter().zip([-scale * (0.5 + rng.next_f32()), scale * (0.5 + rng.next_f32()), 0.0]) {
                x[32 * r..32 * r + 32].fill(c);
            }
        }
        // All zero.
        3 => x.fill(0.0),
        // Sub-blocks of one sign: alternately positive-only and negative-only, some offset away
        // from zero.
        4 => {
            for (j, sub) in x.chunks_mut(16).enumerate() {
                let lift = if j % 3 == 0 { scale * rng.next_f32() } else { 0.0 };
                for v in sub {
                    *v = if j % 2 == 0 { v.abs() + lift } else { -v.abs() - lift };
                }
            }
        }
        // Huge values (f32 sums of squares stay finite).
        5 => {
            let s = magnitude(rng, 3.0, 5.0);
            x.iter_mut().for_each(|v| *v = s * normalish(rng));
        }
        // Tiny values: the f16 scales become subnormal halves (or zero).
        6 => {
            let s = magnitude(rng, -7.0, -3.0);
            x.iter_mut().for_each(|v| *v = s * normalish(rng));
        }
        // Every 16-value sub-block its own magnitude over four decades: many sub-blocks get scale
        // code 0 and keep their first-pass levels.
        7 => {
            for sub in x.chunks_mut(16) {
                let s = magnitude(rng, -4.0, 0.0);
                sub.iter_mut().for_each(|v| *v = s * normalish(rng));
            }
        }
        // A few large outliers.
        8 => {
            for _ in 0..3 {
                let i = (rng.next_u64() % QK_K as u64) as usize;
                x[i] = 30.0 * scale * rng.next_signed();
            }
        }
        // Few distinct values on a coarse grid: rounding ties everywhere.
        _ => {
            let step = [0.125f32, 0.25, 1.0, 1.0 / 3.0][(rng.next_u64() % 4) as usize];
            x.iter_mut().for_each(|v| *v = step * ((rng.next_u64() % 17) as f32 - 8.0));
        }
    }
    x
}

/// Compares the GPU's blocks with the CPU's. A block may differ (float rounding the GPU does
/// differently, which should be rare) only if it is as faithful (`quant::check_k_block`, the check
/// preparation runs on a sample of every piece). Returns how many blocks differ.
fn compare(ty: GgmlType, label: &str, values: &[f32], blocks: &[usize], gpu: &[u8]) -> usize {
    let bb = ty.block_bytes();
    let mut differing = 0;
    for &b in blocks {
        let x = &values[b * QK_K..(b + 1) * QK_K];
        let cpu = quant::quantize(ty, x).unwrap();
        let got = &gpu[b * bb..(b + 1) * bb];
        if got == &cpu[..] {
            continue;
        }
        differing += 1;
        let bytes: Vec<usize> = (0..bb).filter(|&i| got[i] != cpu[i]).collect();
        note(&format!("{label}: {} block {b} differs from the CPU's in bytes {bytes:?}", ty.name()));
        if let Err(e) = quant::check_k_block(ty, x, got) {
            panic!("{label}: {} block {b}: {e}", ty.name());
        }
    }
    differing
}

/// At most 1% of the blocks compared may differ (one in fewer than 100).
fn assert_rare(ty: GgmlType, label: &str, differing: usize, compared: usize) {
    note(&format!("{label}: {} {differing} of {compared} blocks differ from the CPU's", ty.name()));
    assert!(
        differing * 100 <= compared.max(100),
        "{label}: {} {differing} of {compared} blocks differ from the CPU's",
        ty.name()
    );
}

#[cfg(not(target_arch = "wasm32"))]
fn now_ms() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn awkward_blocks_quantize_like_the_cpu() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("quantize awkward"));
    // An odd number of blocks: Q6_K's last block is an even one with half a word to itself, and
    // the blocks before come in pairs sharing a word.
    let n_blocks = if WEB { 13 } else { 37 };
    let q = GpuQuantizer::new(&ctx, 64 * QK_K).unwrap();
    for ty in TYPES {
        // A full-size call first, so that the next one must not see its bytes.
        let first: Vec<f32> = (0..64).flat_map(|b| awkward_block(&mut rng, b)).collect();
        let got = q.quantize(&ctx, ty, &first).await.unwrap();
        assert_eq!(got.len(), 64 * ty.block_bytes());
        let differing = compare(ty, "full call", &first, &(0..64).collect::<Vec<_>>(), &got);
        assert_rare(ty, "full call", differing, 64);

        let kind0 = (rng.next_u64() % KINDS as u64) as usize;
        let values: Vec<f32> = (0..n_blocks).flat_map(|b| awkward_block(&mut rng, kind0 + b)).collect();
        let got = q.quantize(&ctx, ty, &values).await.unwrap();
        assert_eq!(got.len(), n_blocks * ty.block_bytes());
        let differing = compare(ty, "odd call", &values, &(0..n_blocks).collect::<Vec<_>>(), &got);
        assert_rare(ty, "odd call", differing, n_blocks);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn a_large_call_matches_the_cpu() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("quantize large"));
    // 4M values natively (16384 blocks: a 256-group dispatch), 64K in the browser.
    let n = if WEB { 1 << 16 } else { 1 << 22 };
    // Rows of 4096 checkpoint-like weights, each row its own scale, rounded through bf16.
    let mut values = Vec::with_capacity(n);
    for _ in 0..n / 4096 {
        let s = magnitude(&mut rng, -2.5, -0.5);
        values.extend((0..4096).map(|_| bf16_round(s * normalish(&mut rng))));
    }
    let blocks = n / QK_K;
    let all: Vec<usize> = (0..blocks).collect();
    let q = GpuQuantizer::new(&ctx, n).unwrap();
    for ty in TYPES {
        // Warm-up: the pipeline is compiled and the buffers touched before timing.
        q.quantize(&ctx, ty, &values[..QK_K]).await.unwrap();
        let t0 = now_ms();
        let got = q.quantize(&ctx, ty, &values).await.unwrap();
        let ms = now_ms() - t0;
        note(&format!(
            "{}: {n} values quantized on {} in {ms:.0} ms ({:.2} M values/s, upload and readback included)",
            ty.name(),
            ctx.describe(),
            n as f64 / ms / 1e3
        ));
        assert_eq!(got.len(), blocks * ty.block_bytes());
        let differing = compare(ty, "large call", &values, &all, &got);
        assert_rare(ty, "large call", differing, blocks);
    }
}

/// A GPU quantizer that writes one wrong block (two quants of the first block 8 steps off after the
/// readback, as a miscomputing driver would leave it) is caught by the CPU check of the call's
/// sample before its bytes go anywhere; the device is not trusted again.
#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn a_wrong_block_from_the_gpu_is_caught_by_the_cpu_check() {
    let mut rng = SplitMix64::new(seed("quantize wrong block"));
    for ty in TYPES {
        let Some(ctx) = context(GpuOptions::default()).await else { return };
        let values: Vec<f32> = (0..9 * QK_K).map(|_| bf16_round(0.02 * normalish(&mut rng))).collect();
        let q = GpuQuantizer::new(&ctx, values.len()).unwrap();
        q.quantize(&ctx, ty, &values).await.unwrap();
        q.corrupt_next_block_for_tests();
        let e = q.quantize(&ctx, ty, &values).await.unwrap_err();
        note(&format!("{}: {e}", ty.name()));
        assert!(matches!(e, GpuError::WrongResult(_)) && e.is_fatal(), "{e}");
        assert!(e.to_string().contains("block 0 of 9"), "{e}");
        let again = q.quantize(&ctx, ty, &values).await.unwrap_err();
        assert!(matches!(again, GpuError::WrongResult(_)), "the quantizer ran on after a wrong block: {again}");
    }
}

fn expect_model_error<T>(result: Result<T, GpuError>, what: &str) {
    match result {
        Err(e @ (GpuError::BadInput(_) | GpuError::Unsupported(_) | GpuError::Usage(_))) => {
            note(&format!("{what}: {e}"))
        }
        Err(e) => panic!("{what}: expected a usage error, got {e}"),
        Ok(_) => panic!("{what}: expected an error"),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn bad_lengths_and_types_are_errors() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("quantize errors"));
    assert!(GpuQuantizer::supports(GgmlType::Q4_K) && GpuQuantizer::supports(GgmlType::Q6_K));
    assert!(!GpuQuantizer::supports(GgmlType::Q5_K) && !GpuQuantizer::supports(GgmlType::F16));
    expect_model_error(GpuQuantizer::new(&ctx, 1000), "max_values 1000");
    expect_model_error(GpuQuantizer::new(&ctx, 0), "max_values 0");

    let q = GpuQuantizer::new(&ctx, 4 * QK_K).unwrap();
    assert_eq!(q.max_values(), 4 * QK_K);
    let values = random(&mut rng, 5 * QK_K, -1.0, 1.0);
    expect_model_error(q.quantize(&ctx, GgmlType::Q4_K, &values[..300]).await, "300 values");
    expect_model_error(q.quantize(&ctx, GgmlType::Q6_K, &values[..QK_K + 1]).await, "257 values");
    expect_model_error(q.quantize(&ctx, GgmlType::Q6_K, &values).await, "5 blocks into 4");
    for ty in [GgmlType::Q5_K, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q4_0] {
        expect_model_error(q.quantize(&ctx, ty, &values[..QK_K]).await, ty.name());
    }
    assert!(q.quantize(&ctx, GgmlType::Q4_K, &[]).await.unwrap().is_empty());
    // Still usable after the refusals.
    for ty in TYPES {
        let got = q.quantize(&ctx, ty, &values[..3 * QK_K]).await.unwrap();
        assert_eq!(got, quant::quantize(ty, &values[..3 * QK_K]).unwrap(), "{}", ty.name());
    }

    // Buffers past the binding limit: 1M values are 4 MiB of input.
    let Some(small) = context(GpuOptions { max_binding: Some(1 << 20), ..Default::default() }).await else { return };
    match GpuQuantizer::new(&small, 1 << 20) {
        Err(e @ GpuError::TooSmall { .. }) => note(&format!("1M values under a 1 MiB binding limit: {e}")),
        Err(e) => panic!("expected TooSmall, got {e}"),
        Ok(_) => panic!("expected TooSmall"),
    }
    assert!(GpuQuantizer::new(&small, (1 << 20) / 4).is_ok());
}

/// The exact-arithmetic helpers the quantizer is built on (`shaders/quant/ieee.wgsl`), per item:
/// a / b, √a, the f16 bits of a, and the f32 bits of f16 pattern `i`.
const IEEE_PROBE: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= arrayLength(&a)) {
        return;
    }
    let x = bitcast<f32>(a[i]);
    out[4u * i] = bitcast<u32>(div_rn(x, bitcast<f32>(b[i])));
    out[4u * i + 1u] = bitcast<u32>(sqrt_rn(x));
    out[4u * i + 2u] = f16_bits(x);
    out[4u * i + 3u] = bitcast<u32>(f16_value(i & 0xffffu));
}
"#;

/// Bit patterns of f32s for the helpers: anything (every exponent, subnormals, inf, NaN), values
/// near each other (normal quotients), quotients in the subnormal range, and f16 ties.
fn probe_inputs(rng: &mut SplitMix64, n: usize) -> (Vec<u32>, Vec<u32>) {
    let specials = [
        0u32,
        0x8000_0000,
        1,
        0x007f_ffff,
        0x0080_0000,
        0x3f80_0000,
        0x7f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
    ];
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    for i in 0..n {
        let r = rng.next_u64();
        let (x, y) = match i % 6 {
            0 => (r as u32, (r >> 32) as u32),
            1 => {
                let x = 0x3000_0000 + (r as u32 % 0x1e00_0000);
                (
                    x,
                    x.wrapping_add(((r >> 32) as u32 % 0x0200_0000).wrapping_sub(0x0100_0000))
                        | (r as u32 & 0x8000_0000),
                )
            }
            // Tiny over large: results near and below 2^−126.
            2 => ((r as u32) % 0x0c00_0000, 0x3f00_0000 + ((r >> 32) as u32 % 0x0f00_0000)),
            // An f16 value plus ±half an f16 step (a tie), or a hair off it.
            3 => {
                let h = f16::from_bits((r as u16) & 0x7bff);
                let v = h.to_f32();
                let step = f16::from_bits(h.to_bits() + 1).to_f32() - v;
                let t = (v + step / 2.0).to_bits();
                let nudge = [0i32, 0, 1, -1][((r >> 20) % 4) as usize];
                (t.wrapping_add_signed(nudge) | ((r >> 63) as u32) << 31, (r >> 32) as u32)
            }
            4 => (specials[(r % 10) as usize], specials[((r >> 8) % 10) as usize]),
            // Integers and their squares: exact quotients and square roots.
            _ => {
                let k = (r % 4096) as f32 + 1.0;
                ((k * k).to_bits(), k.to_bits())
            }
        };
        a.push(x);
        b.push(y);
    }
    (a, b)
}

fn same_bits(got: u32, want: u32) -> bool {
    got == want || (f32::from_bits(got).is_nan() && f32::from_bits(want).is_nan())
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn exact_division_sqrt_and_f16_match_the_cpu_bit_for_bit() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("quantize ieee"));
    // Every f16 pattern once.
    let n = 1 << 16;
    let (a, b) = probe_inputs(&mut rng, n);
    let (ab, bb) = (upload_bytes(&ctx, bytemuck::cast_slice(&a)), upload_bytes(&ctx, bytemuck::cast_slice(&b)));
    let out = ctx.storage("ieee probe out", 16 * n as u64).unwrap();
    let ieee = include_str!("../../../shaders/quant/ieee.wgsl");
    // Division estimates each quotient digit with a float reciprocal and corrects it: also with
    // one made 0.1% off on purpose (digits then often one too high or low), as a device with an
    // inexact division might have.
    let reciprocal = "let inv = 1.0 / f32(mb);";
    assert!(ieee.contains(reciprocal));
    for (label, inv) in [
        ("", reciprocal),
        (" (reciprocal 0.1% high)", "let inv = 1.001 / f32(mb);"),
        (" (reciprocal 0.1% low)", "let inv = 0.999 / f32(mb);"),
    ] {
        let source = format!("{}{IEEE_PROBE}", ieee.replace(reciprocal, inv));
        let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("ieee probe"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("ieee probe"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let groups = (n as u32).div_ceil(64);
        run(&ctx, &[Dispatch::new(&ctx, pipeline, &[(0, &ab), (1, &bb), (2, &out)], Grid::Fixed([groups, 1, 1]))], 1);
        let got: Vec<u32> = download(&ctx, &out, 4 * n).await.into_iter().map(f32::to_bits).collect();
        let mut wrong = [0usize; 4];
        for i in 0..n {
            let (x, y) = (f32::from_bits(a[i]), f32::from_bits(b[i]));
            let want = [
                (x / y).to_bits(),
                x.sqrt().to_bits(),
                f16::from_f32(x).to_bits() as u32,
                f16::from_bits(i as u16).to_f32().to_bits(),
            ];
            for (k, name) in ["a / b", "sqrt(a)", "f16(a)", "f32(f16 i)"].into_iter().enumerate() {
                let g = got[4 * i + k];
                if !same_bits(g, want[k]) {
                    if wrong[k] < 5 {
                        note(&format!(
                            "{name}{label}: a = {x:e} ({:#010x}), b = {y:e} ({:#010x}), i = {i}: got {g:#010x}, want {:#010x}",
                            a[i], b[i], want[k]
                        ));
                    }
                    wrong[k] += 1;
                }
            }
        }
        assert_eq!(wrong, [0; 4], "mismatches in a / b, sqrt(a), f16(a), f32(f16){label}");
    }
}
