// BF16: the top 16 bits of an f32.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

struct Head_$W {
    w0: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W((row_byte >> 2u) + chunk * 16u);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let a = weights_$W[h.w0 + 2u * i];
    let b = weights_$W[h.w0 + 2u * i + 1u];
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}
