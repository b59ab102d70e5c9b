// What F16 and BF16 share: 2-byte values, two to a u32 (the lower one first).
const BLOCK_BYTES_$W: u32 = 2u;

// Weights 4i .. 4i + 3 of the chunk.
fn halves4_$W(h: Head_$W, i: u32) -> vec2<u32> {
    let q = quad_$W(h.b + 16u * (i >> 1u));
    return select(q.xy, q.zw, (i & 1u) == 1u);
}
