// Y[t][r] = Σ_c W[r][c] · X[t][c] for a batch of tokens, the prefill path (bindings in
// product_io.wgsl). Each invocation owns one row and a tile of 16 tokens: it decodes its row 4
// weights at a time, once per tile, and multiplies them into 16 running sums (four vec4s). Inputs
// come straight from the storage buffer: the invocations of a workgroup read the same x values
// together, which caches serve as a broadcast, and without workgroup memory there are no
// barriers. With SWIGLU a second matrix (up) shares the pass, as in matvec.

const TILE_TOKENS: u32 = 16u;

// w · x for the tile's tokens t .. t + 3 at input position `i` (in vec4s), given their row starts.
fn dot4(w: vec4<f32>, starts: vec4<u32>, i: u32) -> vec4<f32> {
    return vec4<f32>(dot(w, x[starts.x + i]), dot(w, x[starts.y + i]), dot(w, x[starts.z + i]), dot(w, x[starts.w + i]));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x * 64u + lid;
    let tok0 = wid.y * TILE_TOKENS;
    let n = step.n_tokens;
    if (row >= p.rows || tok0 >= n) {
        return;
    }
    // Where each token's inputs start; tokens past the batch repeat the last one (results unused).
    let last = n - 1u;
    let cols4 = p.cols / 4u;
    let t = vec4<u32>(0u, 1u, 2u, 3u) + tok0;
    let s0 = min(t, vec4<u32>(last)) * cols4;
    let s1 = min(t + 4u, vec4<u32>(last)) * cols4;
    let s2 = min(t + 8u, vec4<u32>(last)) * cols4;
    let s3 = min(t + 12u, vec4<u32>(last)) * cols4;
    let rb_a = row * row_bytes_a(p.cols);
#if SWIGLU
    let rb_b = row * row_bytes_b(p.cols);
#endif
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    for (var c = 0u; c < p.cols / 32u; c++) {
        let ha = chunk_a(rb_a, c);
#if SWIGLU
        let hb = chunk_b(rb_b, c);
#endif
        for (var i = 0u; i < 8u; i++) {
            let at = x4_a(c, i);
            let wa = dequant4_a(ha, i);
            a0 += dot4(wa, s0, at);
            a1 += dot4(wa, s1, at);
            a2 += dot4(wa, s2, at);
            a3 += dot4(wa, s3, at);
#if SWIGLU
            let wb = dequant4_b(hb, i);
            let bt = x4_b(c, i);
            b0 += dot4(wb, s0, bt);
            b1 += dot4(wb, s1, bt);
            b2 += dot4(wb, s2, bt);
            b3 += dot4(wb, s3, bt);
#endif
        }
    }
    let here = min(TILE_TOKENS, n - tok0);
    for (var k = 0u; k < here; k++) {
        var a: vec4<f32>;
        var b: vec4<f32>;
        switch (k / 4u) {
            case 0u: { a = a0; b = b0; }
            case 1u: { a = a1; b = b1; }
            case 2u: { a = a2; b = b2; }
            default: { a = a3; b = b3; }
        }
        write_out((tok0 + k) * p.out_stride + p.row_offset + row, a[k % 4u], b[k % 4u]);
    }
}
