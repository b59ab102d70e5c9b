// Activations rounded to int8 for packed integer dot products (the decode products round x
// in workgroup memory, matvec.wgsl's round_segment; the prefill products take it rounded,
// X_ROUNDED, by round_int8.wgsl): 16 values (one half of a weight chunk: x positions
// 16k .. 16k + 15 in every format) share the scale d = max |x| / 127, and x ≈ d · q with
// q = round(x / d) in −127 ..= 127, four to a u32.
struct XInt8 {
    q: vec4<u32>,
    d: f32,
    // Σ q, for the weights' offsets and mins.
    sum: i32,
}

// Adding 1.5 · 2^23 to an f32 in −2^22 .. 2^22 rounds it to an integer (to nearest, ties to even)
// and leaves that integer's two's complement in the low bits of the sum's bits: a rounding and a
// conversion in one addition (NVIDIA converts floats to integers at 1/8 of its FMA rate).
const ROUND_MAGIC: f32 = 12582912.0;

fn round_to_bytes4(v: vec4<f32>, inv_d: f32) -> u32 {
    return pack4xU8(bitcast<vec4<u32>>(v * inv_d + ROUND_MAGIC));
}

// The 16 values v0, v1, v2, v3 (in order), rounded.
fn x_int8(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) -> XInt8 {
    let m = max(max(abs(v0), abs(v1)), max(abs(v2), abs(v3)));
    let d = max(max(m.x, m.y), max(m.z, m.w)) * (1.0 / 127.0);
    let inv_d = select(0.0, 1.0 / d, d > 0.0);
    let q = vec4<u32>(round_to_bytes4(v0, inv_d), round_to_bytes4(v1, inv_d), round_to_bytes4(v2, inv_d), round_to_bytes4(v3, inv_d));
    let ones = 0x01010101u;
    let sum = (dot4I8Packed(q.x, ones) + dot4I8Packed(q.y, ones)) + (dot4I8Packed(q.z, ones) + dot4I8Packed(q.w, ones));
    return XInt8(q, d, sum);
}

// f32(v) for |v| < 2^22, exactly, without a conversion instruction (as ints_to_f32).
fn small_ints_to_f32(v: vec4<i32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v + 4194304) | vec4<u32>(0x4b000000u)) - 12582912.0;
}
