// F16: IEEE half floats, decoded with unpack2x16float so no shader-f16 is needed.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let w0 = (row_byte >> 2u) + chunk * 16u;
    for (var i = 0u; i < 16u; i++) {
        let v = unpack2x16float(weights_$W[w0 + i]);
        out[2u * i] = v.x;
        out[2u * i + 1u] = v.y;
    }
    return out;
}
