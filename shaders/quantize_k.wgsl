// Quantizes f32 values into GGUF k-quant super-blocks: Q4_K, or Q6_K with the Q6_K flag. One
// invocation per 256-value super-block runs llama.cpp's quantize_row_q4_K_ref /
// quantize_row_q6_K_ref (the model crate's quant/kquants.rs) step for step, with the same
// summation order, comparisons and clamps, so that the bytes match the CPU's:
// - division, sqrt and f16 conversion are the exact integer versions of quant/ieee.wgsl;
// - every product that is added to something goes through `rounded`, so that no compiler can
//   contract it into an fma (which rounds once instead of twice);
// - `nearest_int` rounds half to even like ggml's float trick.
// What can still differ: devices that flush subnormal f32s to zero (WGSL allows it), on blocks
// whose sums or products pass below 2^−126 — tiny weights only.
//
// Output: Q6_K blocks are 210 bytes, so an odd block starts in the middle of a word whose first
// half ends the block before it. The host clears the output, then every invocation ORs its
// bytes in with atomicOr (`put4`/`put2`): bytes of different blocks never overlap, so the
// order does not matter and the one shared word per block pair is assembled correctly without
// pairing blocks up in one invocation. Q4_K blocks (144 bytes) are word-aligned and take the
// same path.

struct Params {
    // Super-blocks to quantize.
    n_blocks: u32,
    // Always 0: see `rounded`.
    zero: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<atomic<u32>>;

// x itself, rounded to f32 where it is computed: XOR with a zero the compiler cannot see keeps a
// product from being fused with the addition it feeds.
fn rounded(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ p.zero);
}

// ggml's nearest_int: round half to even through x + 1.5·2^23, exact for |x| < 2^22. Beyond that
// ggml returns the low mantissa bits of that sum, and so does this.
fn nearest_int(x: f32) -> i32 {
    if (abs(x) < 4194304.0) {
        return i32(round(x));
    }
    return i32(bitcast<u32>(rounded(x) + 12582912.0) & 0x7fffffu) - 0x400000;
}

// 0.1 as the CPU's f32 (not left to the WGSL literal's rounding).
fn rdelta() -> f32 {
    return bitcast<f32>(0x3dcccccdu);
}

// Writes 4 bytes at byte offset `o` (even) of the cleared output.
fn put4(o: u32, w: u32) {
    let i = o >> 2u;
    if ((o & 3u) == 0u) {
        atomicOr(&dst[i], w);
    } else {
        atomicOr(&dst[i], w << 16u);
        atomicOr(&dst[i + 1u], w >> 16u);
    }
}

// Writes 2 bytes at byte offset `o` (even) of the cleared output.
fn put2(o: u32, h: u32) {
    atomicOr(&dst[o >> 2u], h << ((o & 3u) * 8u));
}

#if Q6_K
// Q6_K: ql[128] (low nibbles), qh[64] (2-bit high parts), scales[16] (i8), f16 d.
const BLOCK_BYTES: u32 = 210u;

// What make_qx_quants found for one 16-value sub-block: its scale, and the levels it chose
// (off + level(iscale, x)), which are kept when the sub-block's final scale is 0.
struct SubBlock {
    scale: f32,
    iscale: f32,
    off: i32,
}

fn level6(iscale: f32, v: f32) -> i32 {
    return clamp(nearest_int(iscale * v), -32, 31);
}

// make_qx_quants with nmax = 32 and weights x² (rmse_type 1) on x[x0..x0 + 16].
// Σ w·x·l and Σ w·l² (w = x²) over a 16-value sub-block at levels from `iscale`, summed in the
// CPU's order.
fn weighted_sums(x0: u32, iscale: f32) -> vec2<f32> {
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < 16u; i++) {
        let v = src[x0 + i];
        let l = f32(level6(iscale, v));
        let w = v * v;
        sumlx += rounded(w * v * l);
        suml2 += rounded(w * l * l);
    }
    return vec2<f32>(sumlx, suml2);
}

fn make_qx_quants(x0: u32) -> SubBlock {
    var mx = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < 16u; i++) {
        let v = src[x0 + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    // GROUP_MAX_EPS = 1e-15: levels all 0.
    if (amax < bitcast<f32>(0x26901d7du)) {
        return SubBlock(0.0, 0.0, 0);
    }
    var iscale = div_rn(-32.0, mx);
    let first = weighted_sums(x0, iscale);
    var sumlx = first.x;
    var suml2 = first.y;
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = div_rn(sumlx, suml2);
    }
    var best = scale * sumlx;
    var chosen = iscale;
    for (var k = -9; k <= 9; k++) {
        if (k == 0) {
            continue;
        }
        iscale = div_rn(-(32.0 + rounded(rdelta() * f32(k))), mx);
        let sums = weighted_sums(x0, iscale);
        sumlx = sums.x;
        suml2 = sums.y;
        if (suml2 > 0.0 && rounded(sumlx * sumlx) > rounded(best * suml2)) {
            chosen = iscale;
            scale = div_rn(sumlx, suml2);
            best = scale * sumlx;
        }
    }
    return SubBlock(scale, chosen, 32);
}

// The stored level (0..63) of value v of a sub-block whose step is d.
fn final_level(v: f32, d: f32, s: SubBlock) -> u32 {
    if (d == 0.0) {
        return u32(s.off + level6(s.iscale, v));
    }
    return u32(clamp(nearest_int(div_rn(v, d)), -32, 31) + 32);
}

fn quantize_block(b: u32) {
    let x = b * 256u;
    var sub: array<SubBlock, 16>;
    var max_scale = 0.0;
    var max_abs_scale = 0.0;
    for (var ib = 0u; ib < 16u; ib++) {
        let s = make_qx_quants(x + 16u * ib);
        sub[ib] = s;
        if (abs(s.scale) > max_abs_scale) {
            max_abs_scale = abs(s.scale);
            max_scale = s.scale;
        }
    }
    if (max_abs_scale < bitcast<f32>(0x26901d7du)) {
        // The block stays all zero.
        return;
    }
    let o = b * BLOCK_BYTES;
    let iscale = div_rn(-128.0, max_scale);
    let dh = f16_bits(div_rn(1.0, iscale));
    put2(o + 208u, dh);
    let d_all = f16_value(dh);
    // The i8 scales, and each sub-block's step d_all · scale.
    var d: array<f32, 16>;
    for (var q = 0u; q < 4u; q++) {
        var w = 0u;
        for (var t = 0u; t < 4u; t++) {
            let ib = 4u * q + t;
            let sc = bitcast<u32>(min(nearest_int(iscale * sub[ib].scale), 127)) & 0xffu;
            d[ib] = d_all * f32(bitcast<i32>(sc << 24u) >> 24u);
            w |= sc << (8u * t);
        }
        put4(o + 192u + 4u * q, w);
    }
    // Each half of 128 values: value l + 32k of the half is nibble k / 2 of ql[l + 32·(k & 1)]
    // and bits 2k..2k+1 of qh[l]; four values of l per written word.
    for (var h = 0u; h < 2u; h++) {
        for (var g = 0u; g < 8u; g++) {
            var lo = 0u;
            var hi = 0u;
            var top = 0u;
            for (var t = 0u; t < 4u; t++) {
                let l = 4u * g + t;
                let i = 128u * h + l;
                let ib = i / 16u;
                let q1 = final_level(src[x + i], d[ib], sub[ib]);
                let q2 = final_level(src[x + i + 32u], d[ib + 2u], sub[ib + 2u]);
                let q3 = final_level(src[x + i + 64u], d[ib + 4u], sub[ib + 4u]);
                let q4 = final_level(src[x + i + 96u], d[ib + 6u], sub[ib + 6u]);
                lo |= ((q1 & 0xfu) | ((q3 & 0xfu) << 4u)) << (8u * t);
                hi |= ((q2 & 0xfu) | ((q4 & 0xfu) << 4u)) << (8u * t);
                top |= ((q1 >> 4u) | ((q2 >> 4u) << 2u) | ((q3 >> 4u) << 4u) | ((q4 >> 4u) << 6u)) << (8u * t);
            }
            put4(o + 64u * h + 4u * g, lo);
            put4(o + 64u * h + 32u + 4u * g, hi);
            put4(o + 128u + 32u * h + 4u * g, top);
        }
    }
}
#else
// Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, qs[128] (nibbles).
const BLOCK_BYTES: u32 = 144u;

// What make_qkx2_quants found for one 32-value sub-block: scale and −min, and what its levels
// were computed with (level4(iscale, x, min)), which are kept when the final scale is 0.
struct SubBlock {
    scale: f32,
    neg_min: f32,
    iscale: f32,
    min: f32,
}

fn level4(iscale: f32, v: f32, mn: f32) -> i32 {
    return clamp(nearest_int(iscale * (v - mn)), 0, 15);
}

// make_qkx2_quants with nmax = 15, rmin = −1, rdelta = 0.1, nstep = 20 on x[x0..x0 + 32], with
// weights av_x + |x|.
fn make_qkx2_quants(x0: u32, av_x: f32) -> SubBlock {
    let nmax = 15.0;
    var mn = src[x0];
    var mx = mn;
    var sum_w = av_x + abs(mn);
    var sum_x = rounded(sum_w * mn);
    for (var i = 1u; i < 32u; i++) {
        let v = src[x0 + i];
        if (v < mn) {
            mn = v;
        }
        if (v > mx) {
            mx = v;
        }
        let w = av_x + abs(v);
        sum_w += w;
        sum_x += rounded(w * v);
    }
    if (mn > 0.0) {
        mn = 0.0;
    }
    if (mx == mn) {
        // Levels all 0 (what iscale 0 gives).
        return SubBlock(0.0, -mn, 0.0, mn);
    }
    var iscale = div_rn(nmax, mx - mn);
    var scale = div_rn(1.0, iscale);
    var chosen = vec2<f32>(iscale, mn);
    var best_error = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let v = src[x0 + i];
        let l = f32(level4(iscale, v, mn));
        let diff = rounded(scale * l) + mn - v;
        best_error += rounded((av_x + abs(v)) * diff * diff);
    }
    for (var k = 0; k <= 20; k++) {
        // (rmin + rdelta·k) + nmax, rounded in that order (not re-associated as k·0.1 + 14).
        // min changes when a step wins: later steps use the new one, as ggml does.
        iscale = div_rn(rounded(-1.0 + rounded(rdelta() * f32(k))) + nmax, mx - mn);
        var sum_l = 0.0;
        var sum_l2 = 0.0;
        var sum_xl = 0.0;
        for (var i = 0u; i < 32u; i++) {
            let v = src[x0 + i];
            let l = f32(level4(iscale, v, mn));
            let wl = (av_x + abs(v)) * l;
            sum_l += rounded(wl);
            sum_l2 += rounded(wl * l);
            sum_xl += rounded(wl * v);
        }
        let det = rounded(sum_w * sum_l2) - rounded(sum_l * sum_l);
        if (det > 0.0) {
            var this_scale = div_rn(rounded(sum_w * sum_xl) - rounded(sum_x * sum_l), det);
            var this_min = div_rn(rounded(sum_l2 * sum_x) - rounded(sum_l * sum_xl), det);
            if (this_min > 0.0) {
                this_min = 0.0;
                this_scale = div_rn(sum_xl, sum_l2);
            }
            var cur_error = 0.0;
            for (var i = 0u; i < 32u; i++) {
                let v = src[x0 + i];
                let l = f32(level4(iscale, v, mn));
                let diff = rounded(this_scale * l) + this_min - v;
                cur_error += rounded((av_x + abs(v)) * diff * diff);
            }
            if (cur_error < best_error) {
                chosen = vec2<f32>(iscale, mn);
                best_error = cur_error;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    return SubBlock(scale, -mn, chosen.x, chosen.y);
}

// The stored level (0..15) of value v of a sub-block with step d and offset dm.
fn final_level(v: f32, d: f32, dm: f32, s: SubBlock) -> u32 {
    if (d == 0.0) {
        return u32(level4(s.iscale, v, s.min));
    }
    return u32(clamp(nearest_int(div_rn(v + dm, d)), 0, 15));
}

// The 6-bit code of v·inv (ggml: (nearest_int(..) as u8).min(63)).
fn code6(inv: f32, v: f32) -> u32 {
    return min(bitcast<u32>(nearest_int(inv * v)) & 0xffu, 63u);
}

fn quantize_block(b: u32) {
    let x = b * 256u;
    var sub: array<SubBlock, 8>;
    var max_scale = 0.0;
    var max_min = 0.0;
    for (var j = 0u; j < 8u; j++) {
        var sum_x2 = 0.0;
        for (var l = 0u; l < 32u; l++) {
            let v = src[x + 32u * j + l];
            sum_x2 += rounded(v * v);
        }
        // sum_x2 / 32, exactly.
        let s = make_qkx2_quants(x + 32u * j, sqrt_rn(sum_x2 * 0.03125));
        sub[j] = s;
        if (s.scale > max_scale) {
            max_scale = s.scale;
        }
        if (s.neg_min > max_min) {
            max_min = s.neg_min;
        }
    }
    var inv_scale = 0.0;
    if (max_scale > 0.0) {
        inv_scale = div_rn(63.0, max_scale);
    }
    var inv_min = 0.0;
    if (max_min > 0.0) {
        inv_min = div_rn(63.0, max_min);
    }
    var ls: array<u32, 8>;
    var lm: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) {
        ls[j] = code6(inv_scale, sub[j].scale);
        lm[j] = code6(inv_min, sub[j].neg_min);
    }
    // get_scale_min_k4's packing: bytes 0..3 scales 0..3 (+ top bits of 4..7), 4..7 mins 0..3
    // (+ top bits of 4..7), 8..11 low nibbles of scale and min 4..7.
    var packed = vec3<u32>(0u);
    for (var j = 0u; j < 4u; j++) {
        let sh = 8u * j;
        packed.x |= (ls[j] | ((ls[j + 4u] >> 4u) << 6u)) << sh;
        packed.y |= (lm[j] | ((lm[j + 4u] >> 4u) << 6u)) << sh;
        packed.z |= ((ls[j + 4u] & 0xfu) | ((lm[j + 4u] & 0xfu) << 4u)) << sh;
    }
    let dh = f16_bits(div_rn(max_scale, 63.0));
    let mh = f16_bits(div_rn(max_min, 63.0));
    let o = b * BLOCK_BYTES;
    put4(o, dh | (mh << 16u));
    put4(o + 4u, packed.x);
    put4(o + 8u, packed.y);
    put4(o + 12u, packed.z);
    let d_all = f16_value(dh);
    let dmin_all = f16_value(mh);
    // Byte l of chunk c: sub-block 2c's level l in the low nibble, 2c + 1's in the high one.
    for (var c = 0u; c < 4u; c++) {
        let j = 2u * c;
        let d0 = d_all * f32(ls[j]);
        let dm0 = rounded(dmin_all * f32(lm[j]));
        let d1 = d_all * f32(ls[j + 1u]);
        let dm1 = rounded(dmin_all * f32(lm[j + 1u]));
        for (var g = 0u; g < 8u; g++) {
            var w = 0u;
            for (var t = 0u; t < 4u; t++) {
                let l = 4u * g + t;
                let lo = final_level(src[x + 32u * j + l], d0, dm0, sub[j]);
                let hi = final_level(src[x + 32u * j + 32u + l], d1, dm1, sub[j + 1u]);
                w |= (lo | (hi << 4u)) << (8u * t);
            }
            put4(o + 16u + 32u * c + 4u * g, w);
        }
    }
}
#endif

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = flat_group(wid, nwg) * 64u + lid;
    if (b < p.n_blocks) {
        quantize_block(b);
    }
}
