// The layout F16 and BF16 share: 2-byte values in order, two to a u32.
const BLOCK_ELEMS_$W: u32 = 1u;
const BLOCK_BYTES_$W: u32 = 2u;

struct Head_$W {
    b: u32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    return Head_$W(row_byte + chunk * 64u);
}

// Weights 4i .. 4i + 3 of the chunk, two 16-bit values in each u32 (the lower one first).
fn halves4_$W(h: Head_$W, i: u32) -> vec2<u32> {
    let q = quad_$W(h.b + 16u * (i >> 1u));
    return select(q.xy, q.zw, (i & 1u) == 1u);
}
