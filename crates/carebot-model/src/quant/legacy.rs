//! The 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each block starts with an f16 scale `d` (Q4_1/Q5_1 add an f16 minimum `m`); 4-bit values keep
//! elements 0..16 in the low nibbles and 16..32 in the high nibbles; Q5 adds a 32-bit mask of fifth
//! bits. Quantizers are llama.cpp's `quantize_row_*_ref`, including their truncating casts.

use super::{f16_at, put_f16};

const QK: usize = 32;

fn blocks<'a>(src: &'a [u8], dst: &'a mut [f32], bytes: usize) -> impl Iterator<Item = (&'a [u8], &'a mut [f32])> {
    src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK))
}

fn blocks_mut<'a>(src: &'a [f32], dst: &'a mut [u8], bytes: usize) -> impl Iterator<Item = (&'a [f32], &'a mut [u8])> {
    src.chunks_exact(QK).zip(dst.chunks_exact_mut(bytes))
}

/// Value with the largest magnitude (the first one on ties), as ggml picks it.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (if v < lo { v } else { lo }, if v > hi { v } else { hi }))
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// Fifth bit of element `j` (0..32) from a Q5 block's `qh` mask.
fn fifth_bit(qh: u32, j: usize) -> u8 {
    (((qh >> j) & 1) << 4) as u8
}

pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks(src, dst, 18) {
        let d = f16_at(b);
        for j in 0..16 {
            y[j] = ((b[2 + j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks(src, dst, 20) {
        let (d, m) = (f16_at(b), f16_at(&b[2..]));
        for j in 0..16 {
            y[j] = (b[4 + j] & 0x0f) as f32 * d + m;
            y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks(src, dst, 22) {
        let d = f16_at(b);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let q0 = ((b[6 + j] & 0x0f) | fifth_bit(qh, j)) as i32 - 16;
            let q1 = ((b[6 + j] >> 4) | fifth_bit(qh, j + 16)) as i32 - 16;
            y[j] = q0 as f32 * d;
            y[j + 16] = q1 as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks(src, dst, 24) {
        let (d, m) = (f16_at(b), f16_at(&b[2..]));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..16 {
            y[j] = ((b[8 + j] & 0x0f) | fifth_bit(qh, j)) as f32 * d + m;
            y[j + 16] = ((b[8 + j] >> 4) | fifth_bit(qh, j + 16)) as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks(src, dst, 34) {
        let d = f16_at(b);
        for j in 0..QK {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
}

pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in blocks_mut(src, dst, 18) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        put_f16(b, d);
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b[2 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in blocks_mut(src, dst, 20) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        put_f16(b, d);
        put_f16(&mut b[2..], min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b[4 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in blocks_mut(src, dst, 22) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        put_f16(b, d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            b[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in blocks_mut(src, dst, 24) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        put_f16(b, d);
        put_f16(&mut b[2..], min);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] - min) * id + 0.5) as u8;
            let q1 = ((x[j + 16] - min) * id + 0.5) as u8;
            b[8 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in blocks_mut(src, dst, 34) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        put_f16(b, d);
        for j in 0..QK {
            b[2 + j] = (x[j] * id).round() as i8 as u8;
        }
    }
}
