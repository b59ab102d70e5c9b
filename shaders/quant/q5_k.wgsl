// Q5_K: 256 weights in 176 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins (as Q4_K),
// 32 bytes of fifth bits (bit j of byte l belongs to weight l of sub-block j), 128 bytes of
// nibbles laid out as in Q4_K; w = d · sc_j · q − dmin · m_j.
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 176u;

fn dequant32_$W(row_byte: u32, chunk: u32) -> array<f32, 32> {
    var out: array<f32, 32>;
    let b = row_byte + (chunk >> 3u) * 176u;
    let j = chunk & 7u;
    let dd = unpack2x16float(word_$W(b));
    let sm = scale_min_k4_$W(b + 4u, j);
    let scale = dd.x * sm.x;
    let offset = dd.y * sm.y;
    let shift = (j & 1u) * 4u;
    let q0 = b + 48u + 32u * (j >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let w = word_$W(q0 + 4u * i);
        let h = word_$W(b + 16u + 4u * i);
        for (var k = 0u; k < 4u; k++) {
            let q = ((w >> (8u * k + shift)) & 0xfu) | (((h >> (8u * k + j)) & 1u) << 4u);
            out[4u * i + k] = scale * f32(q) - offset;
        }
    }
    return out;
}
