// Q8_0: 32 weights in 34 bytes: f16 scale d, then 32 signed bytes; w = d · q.
//
// Repacked on upload (weights.rs): a row holds the 32 weight bytes of every block, then every
// block's d, padded to 16 bytes. A chunk (one block) is then two aligned 16-byte loads, and the
// lanes of a row read consecutive ones.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 34u;

struct Head_$W {
    q0: vec4<u32>,
    q1: vec4<u32>,
    d: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let blocks = p.cols / 32u;
    let q = row_byte + 32u * chunk;
    return Head_$W(quad_$W(q), quad_$W(q + 16u), half_$W(row_byte + 32u * blocks + 2u * chunk));
}

const MINS_$W: bool = false;

// The signed bytes q of weights 4i .. 4i + 3 of the chunk (w = d · q).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    return select(h.q0[i & 3u], h.q1[i & 3u], i >= 4u);
}

const QOFFSET_$W: i32 = 0;
const SIGNED_$W: bool = true;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(h.d, 0.0, h.d, 0.0);
}
