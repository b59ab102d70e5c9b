// Q4_K: 256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and
// eight 6-bit mins, 128 bytes of nibbles. Sub-block j (32 weights) uses nibbles of bytes
// 32·(j/2) .. +32, low for even j, high for odd; w = d · sc_j · q − dmin · m_j.
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 144u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + (chunk >> 3u) * 144u;
    let j = chunk & 7u;
    let dd = unpack2x16float(word_$W(b));
    let sm = scale_min_k4_$W(b + 4u, j);
    let scale = dd.x * sm.x;
    let offset = dd.y * sm.y;
    let shift = (j & 1u) * 4u;
    let q0 = b + 16u + 32u * (j >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let w = word_$W(q0 + 4u * i);
        for (var k = 0u; k < 4u; k++) {
            out[4u * i + k] = scale * f32((w >> (8u * k + shift)) & 0xfu) - offset;
        }
    }
    return out;
}
