// Byte access into a weight buffer holding GGUF blocks exactly as stored in the file. Blocks are
// 18, 20, 22, 34, 176 or 210 bytes long, so fields sit at any byte offset; buffers are padded by
// four bytes so that reading the word after the last one stays inside.
fn byte_$W(i: u32) -> u32 {
    return (weights_$W[i >> 2u] >> ((i & 3u) << 3u)) & 0xffu;
}

// Four bytes, little-endian, starting at any byte offset.
fn word_$W(i: u32) -> u32 {
    let s = (i & 3u) << 3u;
    let lo = weights_$W[i >> 2u];
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (weights_$W[(i >> 2u) + 1u] << (32u - s));
}

fn half_$W(i: u32) -> f32 {
    return unpack2x16float(word_$W(i) & 0xffffu).x;
}
