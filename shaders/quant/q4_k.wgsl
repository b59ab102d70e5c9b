// Q4_K: 256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and
// eight 6-bit mins, 128 bytes of nibbles; w = d · sc_j · q − dmin · m_j. Chunks are 16-byte
// pieces of the nibbles (k_scales.wgsl).
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 144u;

struct Head_$W {
    q: vec4<u32>,
    // Columns: (d · scale, −dmin · min) of the low and of the high nibbles' sub-block.
    sm: mat2x2<f32>,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + (chunk >> 3u) * 144u;
    let piece = chunk & 7u;
    return Head_$W(quad_$W(b + 16u + 16u * piece), piece_scales_$W(b, piece));
}

const MINS_$W: bool = true;

// The bytes q of weights 4i .. 4i + 3 of the chunk (x at x4_$W(chunk, i)).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    return nibbles4_$W(h.q, i);
}

const QOFFSET_$W: i32 = 0;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return h.sm;
}
