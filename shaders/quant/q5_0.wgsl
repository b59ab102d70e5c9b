// Q5_0: 32 weights in 22 bytes: f16 scale d, 32 fifth bits (bit e belongs to weight e), 16 bytes
// of nibbles (low: 0..15, high: 16..31); w = d · (q − 16).
//
// Repacked on upload (weights.rs): a row holds every block's 16 nibble bytes, then every block's
// fifth bits, then every d, padded to 16 bytes; a chunk (one block) is one aligned 16-byte load,
// one word and one f16.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 22u;

struct Head_$W {
    q: vec4<u32>,
    qh: u32,
    d: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let blocks = p.cols / 32u;
    let qh = u32_$W((row_byte + 16u * blocks + 4u * chunk) >> 2u);
    return Head_$W(quad_$W(row_byte + 16u * chunk), qh, half_$W(row_byte + 20u * blocks + 2u * chunk));
}

const MINS_$W: bool = false;

// The bytes q of weights 4i .. 4i + 3 of the chunk (w = d · (q − QOFFSET)).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    return nibbles4_$W(h.q, i) | fifth_bits4_$W(h.qh, i);
}

const QOFFSET_$W: i32 = 16;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(h.d, 0.0, h.d, 0.0);
}
