//! Weight formats against llama.cpp: our quantizers must produce the bytes of llama.cpp's own
//! (`ggml_quantize_chunk`), and our dequantizers the floats of the `gguf` Python package, bit for bit.
//! Fixtures: `tests/fixtures/quant`, made by `tests/fixtures/scripts/gen_quant_fixtures.py`.

use carebot_model::quant::{self, GgmlType, QuantError, SUPPORTED_TYPES};
use carebot_model::rng::SplitMix64;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Bitwise equality (so that -0.0 vs 0.0 or NaN payloads would show up too).
fn assert_bits_eq(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    let bad: Vec<usize> = (0..ours.len()).filter(|&i| ours[i].to_bits() != theirs[i].to_bits()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ, first at {}: {} vs {}",
        bad.len(),
        ours.len(),
        bad[0],
        ours[bad[0]],
        theirs[bad[0]]
    );
}

#[test]
fn quantize_is_bit_exact_with_llamacpp_and_dequantize_with_gguf_py() {
    for ty in SUPPORTED_TYPES.into_iter().filter(|t| *t != GgmlType::F32) {
        let name = ty.name();
        let input = f32s(&fixture(&format!("{name}.input.f32")));
        let reference_q = fixture(&format!("{name}.quant.bin"));
        let reference_dq = f32s(&fixture(&format!("{name}.dequant.f32")));
        let ours_q = quant::quantize(ty, &input).unwrap();
        assert_eq!(ours_q.len(), reference_q.len(), "{name}: quantized size");
        let diff = ours_q.iter().zip(&reference_q).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} quantized bytes differ from llama.cpp");

        let mut ours_dq = vec![0.0f32; input.len()];
        quant::dequantize(ty, &reference_q, &mut ours_dq).unwrap();
        assert_bits_eq(&ours_dq, &reference_dq, &format!("{name} dequantize"));

        let rms = (input.iter().map(|v| v * v).sum::<f32>() / input.len() as f32).sqrt();
        let rmse =
            (input.iter().zip(&ours_dq).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / input.len() as f32).sqrt();
        println!("{name:5}: bit-exact with llama.cpp; round-trip RMSE / RMS = {:.4}", rmse / rms);
    }
}

#[test]
fn dequantize_random_blocks_bit_exact() {
    for ty in SUPPORTED_TYPES.into_iter().filter(|t| t.block_size() > 1) {
        let name = ty.name();
        let blocks = fixture(&format!("{name}.random_blocks.bin"));
        let reference = f32s(&fixture(&format!("{name}.random_blocks.dequant.f32")));
        let mut ours = vec![0.0f32; reference.len()];
        quant::dequantize(ty, &blocks, &mut ours).unwrap();
        assert_bits_eq(&ours, &reference, &format!("{name} random blocks"));
    }
}

#[test]
fn round_trip_error_is_what_each_format_promises() {
    // Odd number of blocks, fresh random values with outliers. Bounds sit ~25% above what
    // llama.cpp's quantizers give on this data, so a broken quantizer cannot hide.
    let mut rng = SplitMix64::new(0x5EED_0001);
    let x: Vec<f32> = (0..256 * 7).map(|i| rng.next_signed() * if i % 97 == 0 { 8.0 } else { 1.0 }).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    for (ty, bound) in [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 3e-4),
        (GgmlType::BF16, 2e-3),
        (GgmlType::Q8_0, 0.011),
        (GgmlType::Q6_K, 0.03),
        (GgmlType::Q5_0, 0.08),
        (GgmlType::Q5_1, 0.05),
        (GgmlType::Q5_K, 0.05),
        (GgmlType::Q4_0, 0.16),
        (GgmlType::Q4_1, 0.11),
        (GgmlType::Q4_K, 0.10),
    ] {
        let q = quant::quantize(ty, &x).unwrap();
        assert_eq!(q.len(), x.len() / ty.block_size() * ty.block_bytes());
        let mut y = vec![0.0f32; x.len()];
        quant::dequantize(ty, &q, &mut y).unwrap();
        let rmse = (x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt();
        println!("{:5} relative RMSE {:.4}", ty.name(), rmse / rms);
        assert!(rmse / rms <= bound, "{}: relative RMSE {} > {bound}", ty.name(), rmse / rms);
        assert!(rmse / rms > 0.0 || ty == GgmlType::F32);
    }
}

#[test]
fn bad_sizes_and_types_are_typed_errors() {
    let mut out = vec![0.0f32; 33];
    assert!(matches!(quant::dequantize(GgmlType::Q4_0, &[0; 18], &mut out), Err(QuantError::NotBlockAligned { .. })));
    let mut out = vec![0.0f32; 32];
    assert!(matches!(quant::dequantize(GgmlType::Q4_0, &[0; 17], &mut out), Err(QuantError::SizeMismatch { .. })));
    assert_eq!(
        quant::dequantize(GgmlType::IQ2_XXS, &[0; 66], &mut [0.0; 256]),
        Err(QuantError::Unsupported("IQ2_XXS"))
    );
    assert!(matches!(quant::quantize(GgmlType::Q6_K, &[1.0; 100]), Err(QuantError::NotBlockAligned { .. })));
    // Type table agrees with the block sizes llama.cpp defines.
    for (ty, block, bytes) in
        [(GgmlType::Q4_K, 256, 144), (GgmlType::Q6_K, 256, 210), (GgmlType::Q8_0, 32, 34), (GgmlType::BF16, 1, 2)]
    {
        assert_eq!((ty.block_size(), ty.block_bytes()), (block, bytes));
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
    }
}

/// The GPU's int8 activations, as the CPU reference mirrors them: per aligned block of 16 values
/// (and a shorter tail), x becomes d · q with d = max |x| / 127 and q an integer in −127 ..= 127,
/// within d / 2 of x, the largest value kept exactly; blocks are independent.
#[test]
fn int8_rounding_keeps_each_block_within_half_a_step() {
    let mut rng = SplitMix64::new(0x1e8_b10c);
    // 7 whole blocks and a tail of 5; magnitudes from 1e-3 to 1e3, and one block of zeros.
    let mut x: Vec<f32> = (0..117).map(|i| rng.next_signed() * 10f32.powi(i / 16 % 7 - 3)).collect();
    x[32..48].fill(0.0);
    let mut r = x.clone();
    quant::round_to_int8_blocks(&mut r);
    for (b, (xs, rs)) in x.chunks(quant::INT8_BLOCK).zip(r.chunks(quant::INT8_BLOCK)).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            assert!(rs.iter().all(|&v| v == 0.0), "block {b}");
            continue;
        }
        let d = amax / 127.0;
        for (&v, &q) in xs.iter().zip(rs) {
            let steps = q / d;
            assert!((steps - steps.round()).abs() < 1e-3 && steps.abs() <= 127.001, "block {b}: {v} → {q}");
            assert!((v - q).abs() <= d * 0.5001, "block {b}: {v} → {q} (step {d})");
            if v.abs() == amax {
                assert!((q - v).abs() <= v.abs() * 1e-6, "block {b}: the largest value {v} → {q}");
            }
        }
    }
    // Scaling one block by 1000 changes no other block.
    let mut y = x.clone();
    y[16..32].iter_mut().for_each(|v| *v *= 1000.0);
    quant::round_to_int8_blocks(&mut y);
    assert_eq!(y[..16], r[..16]);
    assert_eq!(y[32..], r[32..]);
}

/// `check_k_block`, the CPU's check of the GPU quantizer's output, passes what rounding can
/// change (any quant one step off) and refuses a real miscomputation (a quant 8 steps off), on
/// fresh checkpoint-like blocks. The byte ranges are the quants: Q4_K `qs` (bytes 16..144), Q6_K
/// `ql` (bytes 0..128); bit 0 of a byte moves a value one step, bit 3 moves it 8.
#[test]
fn the_block_check_passes_rounding_and_refuses_real_errors() {
    let seed = std::env::var("CAREBOT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("CAREBOT_TEST_SEED={seed}");
    let mut rng = SplitMix64::new(seed);
    for (ty, quants) in [(GgmlType::Q4_K, 16..144), (GgmlType::Q6_K, 0..128)] {
        for _ in 0..400 {
            let scale = 10f32.powf(-3.0 + 2.5 * rng.next_f32());
            let x: Vec<f32> = (0..256).map(|_| scale * (rng.next_signed() + rng.next_signed())).collect();
            let cpu = quant::quantize(ty, &x).unwrap();
            quant::check_k_block(ty, &x, &cpu).unwrap();
            let byte = quants.start + (rng.next_u64() % quants.len() as u64) as usize;
            let mut block = cpu.clone();
            block[byte] ^= 0x01;
            if let Err(e) = quant::check_k_block(ty, &x, &block) {
                panic!("{}: one step at byte {byte} refused: {e}", ty.name());
            }
            block[byte] ^= 0x01 | 0x08;
            assert!(quant::check_k_block(ty, &x, &block).is_err(), "{}: 8 steps at byte {byte} passed", ty.name());
        }
    }
}
