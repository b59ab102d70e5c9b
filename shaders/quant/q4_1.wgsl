// Q4_1: 32 weights in 20 bytes: f16 scale d, f16 minimum m, 16 bytes of nibbles (low: 0..15,
// high: 16..31); w = d · q + m.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 20u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + chunk * 20u;
    let d = half_$W(b);
    let m = half_$W(b + 2u);
    for (var j = 0u; j < 4u; j++) {
        let w = word_$W(b + 4u + 4u * j);
        for (var k = 0u; k < 4u; k++) {
            let q = (w >> (8u * k)) & 0xffu;
            out[4u * j + k] = d * f32(q & 0xfu) + m;
            out[4u * j + k + 16u] = d * f32(q >> 4u) + m;
        }
    }
    return out;
}
