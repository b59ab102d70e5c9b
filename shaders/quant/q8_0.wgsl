// Q8_0: 32 weights in 34 bytes: f16 scale d, then 32 signed bytes; w = d · q.
const BLOCK_ELEMS_$W: u32 = 32u;
const BLOCK_BYTES_$W: u32 = 34u;

struct Head_$W {
    qs: u32,
    d: f32,
}

fn chunk_$W(row_byte: u32, chunk: u32) -> Head_$W {
    let b = row_byte + chunk * 34u;
    return Head_$W(b + 2u, half_$W(b));
}

fn dequant4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = word_$W(h.qs + 4u * i);
    // Each byte moved to the top, then arithmetic-shifted back down: sign extension.
    let q = bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u);
    return h.d * vec4<f32>(q);
}
