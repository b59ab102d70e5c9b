// Q4_0: 32 weights in 18 bytes: f16 scale d, then 16 bytes whose low nibbles are weights 0..15
// and high nibbles weights 16..31; w = d · (q − 8).
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 18u;

struct Head_$W {
    qs: u32,
    d: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + chunk * 18u;
    return Head_$W(b + 2u, half_$W(b));
}

// Weights 4i .. 4i + 3 of the chunk.
fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = word_$W(h.qs + 4u * (i & 3u)) >> (4u * (i >> 2u));
    return h.d * (vec4<f32>(bytes4(w) & vec4<u32>(0xfu)) - 8.0);
}
