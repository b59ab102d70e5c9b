// Q4_0: 32 weights in 18 bytes: f16 scale d, then 16 bytes whose low nibbles are weights 0..15
// and high nibbles weights 16..31; w = d · (q − 8).
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 18u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + chunk * 18u;
    let d = half_$W(b);
    for (var j = 0u; j < 4u; j++) {
        let w = word_$W(b + 2u + 4u * j);
        for (var k = 0u; k < 4u; k++) {
            let q = (w >> (8u * k)) & 0xffu;
            out[4u * j + k] = d * (f32(q & 0xfu) - 8.0);
            out[4u * j + k + 16u] = d * (f32(q >> 4u) - 8.0);
        }
    }
    return out;
}
