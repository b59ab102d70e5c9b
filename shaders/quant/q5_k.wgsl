// Q5_K: 256 weights in 176 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins (as Q4_K),
// 32 bytes of fifth bits (bit j of byte l belongs to weight l of sub-block j), 128 bytes of
// nibbles laid out as in Q4_K; w = d · sc_j · q − dmin · m_j.
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 176u;

struct Head_$W {
    qs: u32,
    qh: u32,
    shift: u32,
    bit: u32,
    scale: f32,
    offset: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + (chunk >> 3u) * 176u;
    let j = chunk & 7u;
    let dd = unpack2x16float(word_$W(b));
    let sm = scale_min_k4_$W(b + 4u, j);
    return Head_$W(b + 48u + 32u * (j >> 1u), b + 16u, (j & 1u) * 4u, j, dd.x * sm.x, dd.y * sm.y);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let lo = bytes4(word_$W(h.qs + 4u * i) >> h.shift) & vec4<u32>(0xfu);
    let hi = bytes4(word_$W(h.qh + 4u * i) >> h.bit) & vec4<u32>(1u);
    return h.scale * vec4<f32>(lo | (hi << vec4<u32>(4u))) - h.offset;
}
