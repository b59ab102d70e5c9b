// Q5_1: 32 weights in 24 bytes: f16 scale d, f16 minimum m, 32 fifth bits, 16 bytes of nibbles;
// w = d · q + m.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 24u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + chunk * 24u;
    let d = half_$W(b);
    let m = half_$W(b + 2u);
    let qh = word_$W(b + 4u);
    for (var j = 0u; j < 4u; j++) {
        let w = word_$W(b + 8u + 4u * j);
        for (var k = 0u; k < 4u; k++) {
            let i = 4u * j + k;
            let q = (w >> (8u * k)) & 0xffu;
            let lo = (q & 0xfu) | (((qh >> i) & 1u) << 4u);
            let hi = (q >> 4u) | (((qh >> (i + 16u)) & 1u) << 4u);
            out[i] = d * f32(lo) + m;
            out[i + 16u] = d * f32(hi) + m;
        }
    }
    return out;
}
