// Q4_1: 32 weights in 20 bytes: f16 scale d, f16 minimum m, 16 bytes of nibbles (low: 0..15,
// high: 16..31); w = d · q + m.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 20u;

struct Head_$W {
    qs: u32,
    d: f32,
    m: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + chunk * 20u;
    let dm = unpack2x16float(word_$W(b));
    return Head_$W(b + 4u, dm.x, dm.y);
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = word_$W(h.qs + 4u * (i & 3u)) >> (4u * (i >> 2u));
    return h.d * vec4<f32>(bytes4(w) & vec4<u32>(0xfu)) + h.m;
}
