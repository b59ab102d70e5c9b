// Q4_1: 32 weights in 20 bytes: f16 scale d, f16 minimum m, 16 bytes of nibbles (low: 0..15,
// high: 16..31); w = d · q + m.
//
// Repacked on upload (weights.rs): a row holds every block's 16 nibble bytes, then every block's
// (d, m), padded to 16 bytes; a chunk (one block) is one aligned 16-byte load and one word.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 20u;

struct Head_$W {
    q: vec4<u32>,
    d: f32,
    m: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let blocks = p.cols / 32u;
    let dm = unpack2x16float(u32_$W((row_byte + 16u * blocks + 4u * chunk) >> 2u));
    return Head_$W(quad_$W(row_byte + 16u * chunk), dm.x, dm.y);
}

const MINS_$W: bool = true;

// The bytes q of weights 4i .. 4i + 3 of the chunk (w = d · q + m).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    return nibbles4_$W(h.q, i);
}

const QOFFSET_$W: i32 = 0;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(h.d, h.m, h.d, h.m);
}
