// F32: plain little-endian floats (layout in floats.wgsl).
const BLOCK_BYTES_$W: u32 = 4u;

// Weights 4i .. 4i + 3 of the chunk (no scale: shader.rs adds UNSCALED).
fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(quad_$W(h.b + 16u * i));
}
