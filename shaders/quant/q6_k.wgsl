// Q6_K: 256 weights in 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high parts,
// 16 signed 8-bit scales, f16 d last. Sub-block j = 4n + k takes low nibbles from bytes
// 64n + 32·(k & 1) .. +32 (high nibble when k ≥ 2) and bits 2k..2k+1 of bytes 128 + 32n .. +32;
// w = d · scale[8n + 2k + l/16] · (q − 32).
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 210u;

struct Head_$W {
    ql: u32,
    qh: u32,
    shift: u32,
    hshift: u32,
    // d · scale for weights 0..15 and 16..31 of the chunk.
    sc_lo: f32,
    sc_hi: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + (chunk >> 3u) * 210u;
    let n = (chunk & 7u) >> 2u;
    let k = chunk & 3u;
    let d = half_$W(b + 208u);
    let sc = b + 192u + 8u * n + 2u * k;
    let sc_lo = d * f32(bitcast<i32>(byte_$W(sc) << 24u) >> 24u);
    let sc_hi = d * f32(bitcast<i32>(byte_$W(sc + 1u) << 24u) >> 24u);
    return Head_$W(b + 64u * n + 32u * (k & 1u), b + 128u + 32u * n, (k >> 1u) * 4u, 2u * k, sc_lo, sc_hi);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let lo = bytes4(word_$W(h.ql + 4u * i) >> h.shift) & vec4<u32>(0xfu);
    let hi = bytes4(word_$W(h.qh + 4u * i) >> h.hshift) & vec4<u32>(3u);
    let sc = select(h.sc_hi, h.sc_lo, i < 4u);
    return sc * (vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0);
}
