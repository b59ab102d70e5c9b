// Access into a weight buffer, bound as vec4<u32> so that formats whose pieces are 16-byte
// aligned (F32, F16, BF16, Q4_K, Q5_K, and Q4_0, Q8_0 and Q6_K as repacked on upload:
// weights.rs) load them in one instruction, adjacent lanes reading adjacent pieces. The legacy
// Q4_1, Q5_0 and Q5_1 are read a word at a time, their fields at any byte offset; buffers are
// padded so that reading the word after the last one stays inside.

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

// Four bytes, little-endian, starting at any byte offset.
fn word_$W(i: u32) -> u32 {
    let s = (i & 3u) << 3u;
    let lo = u32_$W(i >> 2u);
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (u32_$W((i >> 2u) + 1u) << (32u - s));
}

// An f16 at an even byte offset (every f16 field of a GGUF block is at one): one load.
fn half_$W(i: u32) -> f32 {
    return unpack2x16float(u32_$W(i >> 2u) >> ((i & 2u) << 3u)).x;
}
