// Shared by Q4_K and Q5_K, which pack their sub-block scales and mins the same way and order
// their 128 nibble bytes alike: sub-block j uses bytes 32·(j/2) .. +32, low nibbles for even j,
// high for odd.
//
// A chunk is one 16-byte piece of the nibbles (blocks are 144 and 176 bytes, so pieces are
// aligned): piece p of a block holds weights 16·(p&1) .. +16 of sub-blocks 2·(p/2) (low nibbles,
// dequant4's i < 4) and 2·(p/2) + 1 (high, i ≥ 4). Consecutive chunks are consecutive pieces, so
// the lanes of a row read consecutive 16-byte pieces: one load each, coalesced.

// llama.cpp's get_scale_min_k4: (scale, min) of sub-block j from the 12 packed bytes at `s`.
fn scale_min_k4_$W(s: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_$W(s + j) & 63u, byte_$W(s + j + 4u) & 63u);
    }
    let sc = (byte_$W(s + j + 4u) & 0xfu) | ((byte_$W(s + j - 4u) >> 6u) << 4u);
    let m = (byte_$W(s + j + 4u) >> 4u) | ((byte_$W(s + j) >> 6u) << 4u);
    return vec2<u32>(sc, m);
}

// (d · scale, −dmin · min) of the low and of the high nibbles' sub-blocks of chunk piece `piece` (0..8) of the
// block at `b`: w = d · scale · q − dmin · min.
fn piece_scales_$W(b: u32, piece: u32) -> mat2x2<f32> {
    let dd = unpack2x16float(u32_$W(b >> 2u)) * vec2<f32>(1.0, -1.0);
    let j = (piece >> 1u) * 2u;
    let sm = ints_to_f32(vec4<u32>(scale_min_k4_$W(b + 4u, j), scale_min_k4_$W(b + 4u, j + 1u)), 0.0);
    return mat2x2<f32>(dd * sm.xy, dd * sm.zw);
}

// Which vec4 of the row's x the chunk's weights 4i .. 4i + 3 multiply.
fn x4_$W(chunk: u32, i: u32) -> u32 {
    let piece = chunk & 7u;
    let sub = (piece >> 1u) * 2u + (i >> 2u);
    return (chunk >> 3u) * 64u + sub * 8u + (piece & 1u) * 4u + (i & 3u);
}
