// Q5_0: 32 weights in 22 bytes: f16 scale d, 32 fifth bits (one u32), 16 bytes of nibbles;
// w = d · (q − 16).
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 22u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + chunk * 22u;
    let d = half_$W(b);
    let qh = word_$W(b + 2u);
    for (var j = 0u; j < 4u; j++) {
        let w = word_$W(b + 6u + 4u * j);
        for (var k = 0u; k < 4u; k++) {
            let i = 4u * j + k;
            let q = (w >> (8u * k)) & 0xffu;
            let lo = (q & 0xfu) | (((qh >> i) & 1u) << 4u);
            let hi = (q >> 4u) | (((qh >> (i + 16u)) & 1u) << 4u);
            out[i] = d * (f32(lo) - 16.0);
            out[i + 16u] = d * (f32(hi) - 16.0);
        }
    }
    return out;
}
