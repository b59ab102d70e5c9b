//! The k-quants used by Llama-3 Q4_K_M files: Q4_K, Q5_K (256-value super-blocks of eight 32-value
//! sub-blocks with 6-bit scales and minimums) and Q6_K (sixteen 16-value sub-blocks with 8-bit
//! scales). Quantizers are llama.cpp's `quantize_row_q*_K_ref`, which is also what `llama-quantize`
//! runs when no importance matrix is given.

use super::{GgmlType, QK_K, f16_at, nearest_int, put_f16};

const Q4_K_BYTES: usize = 144;
const Q5_K_BYTES: usize = 176;
const Q6_K_BYTES: usize = 210;

/// Scale and minimum of sub-block `j` from the 12 packed scale bytes of a Q4_K/Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K block: d (f16), dmin (f16), scales[12], qs[128].
pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
        let scales = &b[4..16];
        for (chunk, (q, y)) in b[16..].chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * chunk, scales);
            let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Q5_K block: d, dmin, scales[12], qh[32], qs[128].
pub fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q5_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
        let scales = &b[4..16];
        let qh = &b[16..48];
        for (chunk, (ql, y)) in b[48..].chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * chunk, scales);
            let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for l in 0..32 {
                let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0x0f) + hi1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + hi2) as f32 - m2;
            }
        }
    }
}

/// Q6_K block: ql[128], qh[64], scales[16] (i8), d (f16).
pub fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(&b[208..]);
        for half in 0..2 {
            let ql = &b[64 * half..64 * half + 64];
            let qh = &b[128 + 32 * half..128 + 32 * half + 32];
            let sc = &b[192 + 8 * half..192 + 8 * half + 8];
            let y = &mut y[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// ggml's `make_qkx2_quants`: asymmetric `nmax`-level quantization of one sub-block with a weighted
/// search over scales; writes levels to `levels` and returns (scale, -min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * diff * diff;
            }
            if cur_error < best_error {
                levels[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Shared Q4_K/Q5_K quantization of one super-block: the 8 sub-block scales/mins packed into 6 bits
/// each (`scales_out`, 12 bytes), d and dmin, and the final levels (0..=nmax) for all 256 values.
fn quantize_k_superblock(x: &[f32], nmax: i32, rmin: f32, nstep: i32, header: &mut [u8], levels: &mut [u8; QK_K]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |a, v| a + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for l in 0..32 {
            weights[l] = av_x + xs[l].abs();
        }
        let (s, m) = make_qkx2_quants(xs, &weights, nmax, &mut levels[32 * j..32 * j + 32], rmin, 0.1, nstep);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut header[4..16];
    packed.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(header, max_scale / 63.0);
    put_f16(&mut header[2..], max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(header), f16_at(&header[2..]));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &header[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

pub fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q4_K_BYTES)) {
        let mut levels = [0u8; QK_K];
        quantize_k_superblock(x, 15, -1.0, 20, b, &mut levels);
        for (chunk, q) in b[16..].chunks_exact_mut(32).enumerate() {
            for l in 0..32 {
                q[l] = levels[64 * chunk + l] | (levels[64 * chunk + l + 32] << 4);
            }
        }
    }
}

pub fn quantize_q5_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q5_K_BYTES)) {
        let mut levels = [0u8; QK_K];
        quantize_k_superblock(x, 31, -0.5, 15, b, &mut levels);
        let (qh, ql) = b[16..].split_at_mut(32);
        qh.fill(0);
        for (chunk, ql) in ql.chunks_exact_mut(32).enumerate() {
            let (m1, m2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for j in 0..32 {
                let mut l1 = levels[64 * chunk + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = levels[64 * chunk + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
        }
    }
}

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights x²): symmetric quantization to
/// -nmax..nmax-1 with a search over 19 scales; levels are stored offset by nmax.
fn make_qx_quants(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = level(iscale, v);
        levels[i] = (l + nmax) as u8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = level(iscale, v);
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                levels[i] = (nmax + level(iscale, v)) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

pub fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q6_K_BYTES)) {
        let mut levels = [0u8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..16 {
            let s = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut levels[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        b.fill(0);
        if max_abs_scale < GROUP_MAX_EPS {
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(&mut b[208..], 1.0 / iscale);
        for ib in 0..16 {
            b[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(&b[208..]);
        for j in 0..16 {
            let d = d_all * (b[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                levels[16 * j + ii] = (l + 32) as u8;
            }
        }
        let (ql, rest) = b.split_at_mut(128);
        let qh = &mut rest[..64];
        for half in 0..2 {
            let ql = &mut ql[64 * half..64 * half + 64];
            let qh = &mut qh[32 * half..32 * half + 32];
            let lv = &levels[128 * half..128 * half + 128];
            for l in 0..32 {
                let (q1, q2, q3, q4) = (lv[l], lv[l + 32], lv[l + 64], lv[l + 96]);
                ql[l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                ql[l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                qh[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// The quantization step of every value of a Q4_K or Q6_K block: its sub-block's `d · scale`.
fn k_steps(ty: GgmlType, block: &[u8]) -> [f32; QK_K] {
    let mut steps = [0f32; QK_K];
    for (i, step) in steps.iter_mut().enumerate() {
        *step = match ty {
            GgmlType::Q4_K => f16_at(&block[0..2]) * f32::from(scale_min_k4(i / 32, &block[4..16]).0),
            _ => (f16_at(&block[208..210]) * f32::from(block[192 + i / 16] as i8)).abs(),
        };
    }
    steps
}

/// Checks that `block`, a Q4_K or Q6_K block made by another quantizer (the GPU's) from the
/// super-block `x`, is this crate's block or as faithful: every value within the worst error of
/// the CPU's block in its sub-block plus one quantization step. Another float rounding may pick
/// other levels now and then; a wrong block (a driver's miscomputation) is far outside.
pub fn check_k_block(ty: GgmlType, x: &[f32], block: &[u8]) -> Result<(), String> {
    let sub = match ty {
        GgmlType::Q4_K => 32,
        GgmlType::Q6_K => 16,
        _ => return Err(format!("{} blocks are not checked here", ty.name())),
    };
    if x.len() != QK_K || block.len() != ty.block_bytes() {
        return Err(format!("a {} block is {} values in {} bytes", ty.name(), QK_K, ty.block_bytes()));
    }
    let cpu = super::quantize(ty, x).map_err(|e| e.to_string())?;
    if block == &cpu[..] {
        return Ok(());
    }
    let (mut got, mut want) = ([0f32; QK_K], [0f32; QK_K]);
    super::dequantize(ty, block, &mut got).map_err(|e| e.to_string())?;
    super::dequantize(ty, &cpu, &mut want).map_err(|e| e.to_string())?;
    let steps = k_steps(ty, &cpu);
    for s in (0..QK_K).step_by(sub) {
        let cpu_err = (s..s + sub).map(|i| (want[i] - x[i]).abs()).fold(0f32, f32::max);
        for i in s..s + sub {
            let err = (got[i] - x[i]).abs();
            // The relative slack covers the float rounding of a value exactly one step past
            // the sub-block's worst (seen: 1 ulp over on a block of values near 1e-3).
            let tolerance = (cpu_err + steps[i]) * (1.0 + 1e-5) + 1e-6 * x[i].abs();
            // A NaN error fails too.
            if err.is_nan() || err > tolerance {
                return Err(format!(
                    "value {i} is {} but the block gives {} (error {err}); the CPU's gives {} (worst error {cpu_err} in \
                     its sub-block, step {})",
                    x[i], got[i], want[i], steps[i]
                ));
            }
        }
    }
    Ok(())
}
