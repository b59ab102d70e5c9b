// Q6_K: 256 weights in 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high parts,
// 16 signed 8-bit scales, f16 d last. Sub-block j = 4n + k takes low nibbles from bytes
// 64n + 32·(k & 1) .. +32 (high nibble when k ≥ 2) and bits 2k..2k+1 of bytes 128 + 32n .. +32;
// w = d · scale[8n + 2k + l/16] · (q − 32).
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 210u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + (chunk >> 3u) * 210u;
    let n = (chunk & 7u) >> 2u;
    let k = chunk & 3u;
    let d = half_$W(b + 208u);
    let sc_base = b + 192u + 8u * n + 2u * k;
    let sc_lo = d * f32(bitcast<i32>(byte_$W(sc_base) << 24u) >> 24u);
    let sc_hi = d * f32(bitcast<i32>(byte_$W(sc_base + 1u) << 24u) >> 24u);
    let shift = (k >> 1u) * 4u;
    let ql0 = b + 64u * n + 32u * (k & 1u);
    let qh0 = b + 128u + 32u * n;
    for (var i = 0u; i < 8u; i++) {
        let lw = word_$W(ql0 + 4u * i);
        let hw = word_$W(qh0 + 4u * i);
        let sc = select(sc_hi, sc_lo, i < 4u);
        for (var e = 0u; e < 4u; e++) {
            let q = ((lw >> (8u * e + shift)) & 0xfu) | (((hw >> (8u * e + 2u * k)) & 3u) << 4u);
            out[4u * i + e] = sc * (f32(q) - 32.0);
        }
    }
    return out;
}
