// F32: plain little-endian floats (rows are a multiple of 32 long, so chunks are word-aligned).
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 4u;

struct Head_$W {
    w0: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W((row_byte >> 2u) + chunk * 32u);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = h.w0 + 4u * i;
    return bitcast<vec4<f32>>(vec4<u32>(weights_$W[w], weights_$W[w + 1u], weights_$W[w + 2u], weights_$W[w + 3u]));
}
