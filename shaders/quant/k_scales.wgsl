// Shared by Q4_K and Q5_K, which pack their sub-block scales and mins the same way.
// llama.cpp's get_scale_min_k4: (scale, min) of sub-block j from the 12 packed bytes at `s`.
fn scale_min_k4_$W(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_$W(s + j) & 63u), f32(byte_$W(s + j + 4u) & 63u));
    }
    let sc = (byte_$W(s + j + 4u) & 0xfu) | ((byte_$W(s + j - 4u) >> 6u) << 4u);
    let m = (byte_$W(s + j + 4u) >> 4u) | ((byte_$W(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
