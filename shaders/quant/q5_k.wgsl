// Q5_K: 256 weights in 176 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins (as Q4_K),
// 32 bytes of fifth bits (bit j of byte l belongs to weight l of sub-block j), 128 bytes of
// nibbles laid out as in Q4_K; w = d · sc_j · q − dmin · m_j. Chunks are 16-byte pieces of the
// nibbles (k_scales.wgsl); the fifth bits of a piece's weights are one 16-byte piece too.
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 176u;

struct Head_$W {
    q: vec4<u32>,
    qh: vec4<u32>,
    // Bit of the low nibbles' sub-block in qh.
    bit: u32,
    sm: mat2x2<f32>,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + (chunk >> 3u) * 176u;
    let piece = chunk & 7u;
    let q = quad_$W(b + 48u + 16u * piece);
    let qh = quad_$W(b + 16u + 16u * (piece & 1u));
    return Head_$W(q, qh, (piece >> 1u) * 2u, piece_scales_$W(b, piece));
}

const MINS_$W: bool = true;

// The bytes q of weights 4i .. 4i + 3 of the chunk (x at x4_$W(chunk, i)).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    let hi = (h.qh[i & 3u] >> (h.bit + (i >> 2u))) & 0x01010101u;
    return nibbles4_$W(h.q, i) | (hi << 4u);
}

const QOFFSET_$W: i32 = 0;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return h.sm;
}
