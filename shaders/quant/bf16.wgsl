// BF16: the top 16 bits of an f32.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

struct Head_$W {
    b: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W(row_byte + chunk * 64u);
}

// Weights 4i .. 4i + 3 of the chunk (no scale: shader.rs adds UNSCALED).
fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let q = quad_$W(h.b + 16u * (i >> 1u));
    let w = select(q.xy, q.zw, (i & 1u) == 1u);
    let a = w.x;
    let b = w.y;
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}
