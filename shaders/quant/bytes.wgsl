// Access into a weight buffer, bound as vec4<u32> so that a lane loads a chunk's weight bytes
// 16 at a time, adjacent lanes reading adjacent pieces of a row. Every format's pieces are
// aligned: F32, F16, BF16, Q4_K and Q5_K as stored in the file, the others as repacked on upload
// (weights.rs). Buffers are padded to whole vec4s.

// Bytes of one row of `cols` values as laid out on the GPU (ROW_ALIGN_$W comes from weights.rs).
fn row_bytes_$W(cols: u32) -> u32 {
    return (cols / BLOCK_ELEMS_$W * BLOCK_BYTES_$W + ROW_ALIGN_$W - 1u) / ROW_ALIGN_$W * ROW_ALIGN_$W;
}

// Word `i` (counted in u32s).
fn u32_$W(i: u32) -> u32 {
    return weights_$W[i >> 2u][i & 3u];
}

// The 16 bytes at byte offset `i`, a multiple of 16.
fn quad_$W(i: u32) -> vec4<u32> {
    return weights_$W[i >> 4u];
}

fn byte_$W(i: u32) -> u32 {
    return (u32_$W(i >> 2u) >> ((i & 3u) << 3u)) & 0xffu;
}

// An f16 at an even byte offset (every f16 field of a GGUF block is at one): one load.
fn half_$W(i: u32) -> f32 {
    return unpack2x16float(u32_$W(i >> 2u) >> ((i & 2u) << 3u)).x;
}

// Weights 4i .. 4i + 3 of a 16-byte piece of nibbles, one per byte: the low nibbles of word
// i % 4 for i < 4, its high nibbles for i ≥ 4 (how every 4- to 6-bit format packs a piece).
fn nibbles4_$W(q: vec4<u32>, i: u32) -> u32 {
    return (q[i & 3u] >> (4u * (i >> 2u))) & 0x0f0f0f0fu;
}
