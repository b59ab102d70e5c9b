// F16: IEEE half floats (layout in floats.wgsl, half_floats.wgsl), decoded with
// unpack2x16float so no shader-f16 is needed.

// Weights 4i .. 4i + 3 of the chunk (no scale: shader.rs adds UNSCALED).
fn quants4_$W(h: Head_$W, i: u32) -> vec4<f32> {
    let w = halves4_$W(h, i);
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
