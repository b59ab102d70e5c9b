// Q6_K: 256 weights in 210 bytes: 128 bytes of low nibbles (ql), 64 bytes of 2-bit high parts
// (qh), 16 signed 8-bit scales, f16 d last. In each half n of a block, byte l < 32 of ql[64n..]
// holds weights 128n + l (low nibble) and + 64 (high), byte l + 32 weights 128n + 32 + l and
// + 96; their high parts are bits 0-1, 4-5, 2-3, 6-7 of qh[32n + l]; scale s covers weights
// 16s .. 16s + 15; w = d · scale · (q − 32).
//
// Repacked on upload (weights.rs): a row holds every block's ql, then every block's qh, then the
// scales, then the d values, padded to 16 bytes, so a chunk's low and high parts are one aligned
// 16-byte load each. Chunk = piece pc of a block's ql (16 bytes, pc = 4n + r): weights
// 128n + 16r .. +16 (low nibbles, scale 8n + r) and 64 further on (high nibbles, scale 8n + r + 4).
const BLOCK_ELEMS_$W: u32 = 256u;
const BLOCK_BYTES_$W: u32 = 210u;

struct Head_$W {
    ql: vec4<u32>,
    qh: vec4<u32>,
    shift: u32,
    // d · scale of the low and of the high nibbles' weights.
    sc: vec2<f32>,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let blocks = p.cols / 256u;
    let blk = chunk >> 3u;
    let pc = chunk & 7u;
    let n = pc >> 2u;
    let r = pc & 3u;
    let ql = quad_$W(row_byte + 128u * blk + 16u * pc);
    let qh = quad_$W(row_byte + 128u * blocks + 64u * blk + 32u * n + 16u * (r & 1u));
    let s = row_byte + 192u * blocks + 16u * blk + 8u * n + r;
    // Signed bytes, top bit flipped: q + 128.
    let sc = ints_to_f32(vec4<u32>(byte_$W(s), byte_$W(s + 4u), 0u, 0u) ^ vec4<u32>(0x80u), 128.0).xy;
    let d = half_$W(row_byte + 208u * blocks + 2u * blk);
    return Head_$W(ql, qh, 2u * (r >> 1u), d * sc);
}

const MINS_$W: bool = false;

// The bytes q of weights 4i .. 4i + 3 of the chunk (w = d · scale · (q − QOFFSET); x at
// x4_$W(chunk, i)).
fn qbytes4_$W(h: Head_$W, i: u32) -> u32 {
    let hi = (h.qh[i & 3u] >> (h.shift + 4u * (i >> 2u))) & 0x03030303u;
    return nibbles4_$W(h.ql, i) | (hi << 4u);
}

const QOFFSET_$W: i32 = 32;
const SIGNED_$W: bool = false;

fn scales_$W(h: Head_$W) -> mat2x2<f32> {
    return mat2x2<f32>(h.sc.x, 0.0, h.sc.y, 0.0);
}

// Which vec4 of the row's x the chunk's weights 4i .. 4i + 3 multiply.
fn x4_$W(chunk: u32, i: u32) -> u32 {
    let pc = chunk & 7u;
    return (chunk >> 3u) * 64u + 16u * (pc >> 2u) + 4u * pc + 16u * (i >> 2u) + (i & 3u);
}
