// Q4_K: 256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and
// eight 6-bit mins, 128 bytes of nibbles. Sub-block j (32 weights) uses nibbles of bytes
// 32·(j/2) .. +32, low for even j, high for odd; w = d · sc_j · q − dmin · m_j.
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 144u;

struct Head_$W {
    qs: u32,
    shift: u32,
    scale: f32,
    offset: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + (chunk >> 3u) * 144u;
    let j = chunk & 7u;
    let dd = unpack2x16float(word_$W(b));
    let sm = scale_min_k4_$W(b + 4u, j);
    return Head_$W(b + 16u + 32u * (j >> 1u), (j & 1u) * 4u, dd.x * sm.x, dd.y * sm.y);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = word_$W(h.qs + 4u * i) >> h.shift;
    return h.scale * vec4<f32>(bytes4(w) & vec4<u32>(0xfu)) - h.offset;
}
