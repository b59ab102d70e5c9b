// Shared by every kernel: the per-submit step uniform. The engine writes it once per forward
// call, so bind groups and per-op parameter buffers are created once at load time.
struct Step {
    // Tokens in this batch.
    n_tokens: u32,
    // Cache position of the batch's first token.
    pos0: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;

// Workgroup index of a dispatch that may be spread over x and y (x is capped at 65535).
fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The four bytes of a word, lowest first.
fn bytes4(w: u32) -> vec4<u32> {
    return vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(0xffu);
}

// f32(q) − offset for integers 0 ≤ q < 2^23, exactly, without an int → float conversion
// instruction: q becomes the mantissa of 2^23 + q, and 2^23 + offset is taken away (one add; the
// compiler folds the constants). NVIDIA GPUs convert at 1/8 the rate they multiply-add (CUDA
// guide: 16 conversions per SM and clock against 128 FMAs), so dequantizing with conversions
// would cost a decoded token more time than reading its 4-bit weights.
fn ints_to_f32(q: vec4<u32>, offset: f32) -> vec4<f32> {
    return bitcast<vec4<f32>>(q | vec4<u32>(0x4b000000u)) - (8388608.0 + offset);
}

// RoPE: the pair (a.x, a.y) rotated by the angle whose (cos, sin) is `cs`.
fn rope_rotate(a: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * cs.x - a.y * cs.y, a.x * cs.y + a.y * cs.x);
}
