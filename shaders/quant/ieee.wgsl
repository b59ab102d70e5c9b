// Exact IEEE-754 f32 operations in integer arithmetic, for kernels whose output must match the
// CPU bit for bit. WGSL lets division and sqrt be a few ULP off, leaves f16 conversion of
// subnormals and ties to the implementation (pack2x16float), and may flush subnormals; these
// helpers give what the CPU gives (round to nearest, ties to even) on every device, without
// shader-f16.

// The bits of an f16 nearest to `v` (ties to even), like half::f16::from_f32: subnormal
// halves, ±inf beyond 65504 (from 65520 up), NaN stays a quiet NaN with its top payload bits.
fn f16_bits(v: f32) -> u32 {
    let u = bitcast<u32>(v);
    let sign = (u >> 16u) & 0x8000u;
    let e = (u >> 23u) & 0xffu;
    let f = u & 0x7fffffu;
    if (e == 255u) {
        return sign | 0x7c00u | select(0u, 0x200u | (f >> 13u), f != 0u);
    }
    // The f16 biased exponent.
    let he = i32(e) - 112;
    if (he >= 31) {
        return sign | 0x7c00u;
    }
    if (he <= 0) {
        // A subnormal half, m·2^−24, or zero (below 2^−25; f32 subnormals land here too).
        if (he < -10) {
            return sign;
        }
        let m = f | 0x800000u;
        let s = u32(14 - he);
        let q = m >> s;
        let rest = m & ((1u << s) - 1u);
        let half = 1u << (s - 1u);
        return sign | (q + select(0u, 1u, rest > half || (rest == half && (q & 1u) == 1u)));
    }
    let q = (u32(he) << 10u) | (f >> 13u);
    let rest = f & 0x1fffu;
    // A carry out of the mantissa steps the exponent, up to inf.
    return sign | (q + select(0u, 1u, rest > 0x1000u || (rest == 0x1000u && (q & 1u) == 1u)));
}

// The f32 value of f16 bits `h` (exact; subnormal halves are normal f32s; NaNs come out quiet,
// as from half::f16::to_f32).
fn f16_value(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let f = h & 0x3ffu;
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | select(0u, 0x400000u | (f << 13u), f != 0u));
    }
    if (e == 0u) {
        if (f == 0u) {
            return bitcast<f32>(sign);
        }
        // f·2^−24 = 1.x·2^(top−24), top the top bit of f.
        let top = 31u - countLeadingZeros(f);
        return bitcast<f32>(sign | ((top + 103u) << 23u) | ((f << (23u - top)) & 0x7fffffu));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (f << 13u));
}

// A finite nonzero f32 as m·2^(e−150), m with bit 23 set (subnormals normalized, e then ≤ 0).
struct Unpacked {
    m: u32,
    e: i32,
}

fn unpack_f32(u: u32) -> Unpacked {
    let e = (u >> 23u) & 0xffu;
    let f = u & 0x7fffffu;
    if (e == 0u) {
        let s = countLeadingZeros(f) - 8u;
        return Unpacked(f << s, 1 - i32(s));
    }
    return Unpacked(f | 0x800000u, i32(e));
}

// The bits (sign apart) of q·2^(e−151) rounded to nearest even: q in [2^24, 2^25), `sticky` when
// nonzero bits below q were dropped; e is the biased exponent the result has if it is normal.
// Gives subnormals, zero and inf where the exponent says so.
fn round_pack(q: u32, sticky: bool, e: i32) -> u32 {
    if (e >= 255) {
        return 0x7f800000u;
    }
    var shift = 1u;
    var base = 0u;
    if (e >= 1) {
        base = u32(e - 1) << 23u;
    } else {
        if (e < -23) {
            return 0u;
        }
        shift = u32(2 - e);
    }
    var m = q >> shift;
    let rest = q & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (sticky || (m & 1u) == 1u))) {
        m += 1u;
    }
    // m's leading bit adds one to the exponent field; a carry to 2^24 adds two; inf caps it.
    return min(base + m, 0x7f800000u);
}

// a / b, correctly rounded (ties to even), for any f32s: a long division of the mantissas.
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & 0x80000000u;
    let a_abs = ua & 0x7fffffffu;
    let b_abs = ub & 0x7fffffffu;
    if (a_abs >= 0x7f800000u || b_abs >= 0x7f800000u || a_abs == 0u || b_abs == 0u) {
        // NaN in, 0/0 and inf/inf: NaN; inf/x and x/0: inf; 0/x and x/inf: 0.
        if (a_abs > 0x7f800000u || b_abs > 0x7f800000u || a_abs == b_abs) {
            // (Built from a runtime value: a constant NaN is a shader-creation error in WGSL.)
            return bitcast<f32>(sign | 0x7fc00000u);
        }
        if (a_abs == 0x7f800000u || b_abs == 0u) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
        return bitcast<f32>(sign);
    }
    let x = unpack_f32(a_abs);
    let y = unpack_f32(b_abs);
    let mb = y.m;
    var r = x.m;
    var e = x.e - y.e + 127;
    if (r < mb) {
        r <<= 1u;
        e -= 1;
    }
    // ma / mb is in [1, 2): q = ⌊ma·2^24 / mb⌋, 8 bits per step (r·2^8 and digit·mb fit 32 bits).
    // Each digit is estimated with a float reciprocal, which is within ±1 of it whatever the
    // device's division accuracy, and corrected with the exact integer remainder.
    let inv = 1.0 / f32(mb);
    var q = 1u;
    r -= mb;
    for (var i = 0u; i < 3u; i++) {
        r <<= 8u;
        var digit = u32(f32(r) * inv);
        var product = digit * mb;
        if (product > r) {
            digit -= 1u;
            product -= mb;
        }
        r -= product;
        if (r >= mb) {
            digit += 1u;
            r -= mb;
        }
        q = (q << 8u) | digit;
    }
    return bitcast<f32>(sign | round_pack(q, r != 0u, e));
}

// √v, correctly rounded: the integer square root of the mantissa, digit by digit.
fn sqrt_rn(v: f32) -> f32 {
    let u = bitcast<u32>(v);
    if ((u & 0x7fffffffu) == 0u || u == 0x7f800000u) {
        return v;
    }
    if (u > 0x7f800000u) {
        // NaN or negative: a quiet NaN (from u, as a constant NaN is a shader-creation error).
        return bitcast<f32>(u | 0x7fc00000u);
    }
    let x = unpack_f32(u);
    // v = m·2^e with an even e.
    var m = x.m;
    var e = x.e - 150;
    if ((e & 1) != 0) {
        m <<= 1u;
        e -= 1;
    }
    // root = ⌊√(m·2^28)⌋ (m·2^28 < 2^53, held as hi:lo), rem = m·2^28 − root².
    let hi = m >> 4u;
    let lo = m << 28u;
    var root = 0u;
    var rem = 0u;
    for (var i = 26i; i >= 0i; i--) {
        let s = u32(2 * i);
        var pair = 0u;
        if (s >= 32u) {
            pair = (hi >> (s - 32u)) & 3u;
        } else {
            pair = (lo >> s) & 3u;
        }
        rem = (rem << 2u) | pair;
        let trial = (root << 2u) | 1u;
        if (rem >= trial) {
            rem -= trial;
            root = (root << 1u) | 1u;
        } else {
            root <<= 1u;
        }
    }
    // root is in [2^25, 2^27): bring it to [2^24, 2^25) for round_pack, the dropped bits sticky.
    var k = 1u;
    if (root >= (1u << 26u)) {
        k = 2u;
    }
    let sticky = rem != 0u || (root & ((1u << k) - 1u)) != 0u;
    return bitcast<f32>(round_pack(root >> k, sticky, e / 2 + 137 + i32(k)));
}
