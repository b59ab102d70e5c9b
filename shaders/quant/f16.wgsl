// F16: IEEE half floats, decoded with unpack2x16float so no shader-f16 is needed.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

struct Head_$W {
    w0: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W((row_byte >> 2u) + chunk * 16u);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = h.w0 + 2u * i;
    return vec4<f32>(unpack2x16float(weights_$W[w]), unpack2x16float(weights_$W[w + 1u]));
}
