// Q4_0: 32 weights in 18 bytes: f16 scale d, then 16 bytes whose low nibbles are weights 0..15
// and high nibbles weights 16..31; w = d · (q − 8).
//
// Repacked on upload (weights.rs): a row holds the 16 nibble bytes of every block, then every
// block's d, padded to 16 bytes. A chunk (one block) is then one aligned 16-byte load, and the
// lanes of a row read consecutive ones.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 18u;

struct Head_$W {
    q: vec4<u32>,
    d: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let blocks = p.cols / 32u;
    return Head_$W(quad_$W(row_byte + 16u * chunk), half_$W(row_byte + 16u * blocks + 2u * chunk));
}

const MINS_$W: bool = false;

// The bytes q of weights 4i .. 4i + 3 of the chunk (w = scale · (q − QOFFSET)).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    return nibbles4_$W(h.q, i);
}

const QOFFSET_$W: i32 = 8;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(h.d, 0.0, h.d, 0.0);
}
