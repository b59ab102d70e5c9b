// BF16: the top 16 bits of an f32 (layout in floats.wgsl, half_floats.wgsl).

// Weights 4i .. 4i + 3 of the chunk (no scale: shader.rs adds UNSCALED).
fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = halves4_$W(h, i);
    return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));
}
