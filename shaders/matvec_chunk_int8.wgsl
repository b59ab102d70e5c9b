// chunk_pair_$W with int8 activations (X_INT8, integer formats only): the same sums as
// matvec_chunk.wgsl, but each half of the chunk is 16 x values rounded to int8 with one scale
// (int8.wgsl; the workgroup rounded them once for all its rows, `x_block` in matvec.wgsl), so
// q · x is four packed 4-byte integer dot products per row, exact, instead of
// sixteen multiply-adds, and the weights are never converted to floats at all: their bytes
// (qbytes4_$W) go into the dot products as they are. This is how llama.cpp's GPU back ends
// multiply quantized matrices; the rounding of x changes the results by ≈ 0.5 % of a dot product
// (the CPU reference mirrors it: carebot_model::quant::round_to_int8_blocks).
fn chunk_pair_$W(c: u32, h0: Head_$W, h1: Head_$W) -> vec2<f32> {
    let s0 = scales_$W(h0);
    let s1 = scales_$W(h1);
    var acc = vec2<f32>(0.0);
    for (var half = 0u; half < 2u; half++) {
        let i = 4u * half;
        let xq = x_block(x4_$W(c, i) / 4u);
        var qx = vec2<i32>(0);
        for (var k = 0u; k < 4u; k++) {
            qx += vec2<i32>(dot4I8Packed(qbytes4_$W(h0, i + k), xq.q[k]), dot4I8Packed(qbytes4_$W(h1, i + k), xq.q[k]));
        }
        // Σ (q − offset) · x = Σ q · x − offset · Σ x, in integers; then one scale per half.
        let sums = small_ints_to_f32(vec4<i32>(qx - vec2<i32>(QOFFSET_$W * xq.sum), xq.sum, 0));
        var half_acc = vec2<f32>(s0[half].x, s1[half].x) * sums.xy;
        if (MINS_$W) {
            half_acc += vec2<f32>(s0[half].y, s1[half].y) * sums.z;
        }
        acc += xq.d * half_acc;
    }
    return acc;
}
