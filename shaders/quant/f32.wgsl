// F32: plain little-endian floats (rows are a multiple of 32 long, so chunks are word-aligned).
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 4u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let w0 = (row_byte >> 2u) + chunk * 32u;
    for (var i = 0u; i < 32u; i++) {
        out[i] = bitcast<f32>(weights_$W[w0 + i]);
    }
    return out;
}
