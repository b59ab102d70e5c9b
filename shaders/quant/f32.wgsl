// F32: plain little-endian floats (rows are a multiple of 32 long, so chunks are 16-byte aligned).
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 4u;

struct Head_$W {
    b: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W(row_byte + chunk * 128u);
}

// Weights 4i .. 4i + 3 of the chunk (no scale: shader.rs adds UNSCALED).
fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(quad_$W(h.b + 16u * i));
}
