// BF16: the top 16 bits of an f32.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let w0 = (row_byte >> 2u) + chunk * 16u;
    for (var i = 0u; i < 16u; i++) {
        let w = weights_$W[w0 + i];
        out[2u * i] = bitcast<f32>(w << 16u);
        out[2u * i + 1u] = bitcast<f32>(w & 0xffff0000u);
    }
    return out;
}
