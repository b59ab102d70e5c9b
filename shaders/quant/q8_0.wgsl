// Q8_0: 32 weights in 34 bytes: f16 scale d, then 32 signed bytes; w = d · q.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 34u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + chunk * 34u;
    let d = half_$W(b);
    for (var j = 0u; j < 8u; j++) {
        let w = word_$W(b + 2u + 4u * j);
        for (var k = 0u; k < 4u; k++) {
            // Shift the byte to the top, then arithmetic-shift back down to sign-extend it.
            out[4u * j + k] = d * f32(bitcast<i32>(w << (24u - 8u * k)) >> 24u);
        }
    }
    return out;
}
