// One step of matrix $W through a chunk in matmul.wgsl: its ROWS rows (heads h) times the tile's
// tokens, added to their sums. With SWIGLU gate (a) and up (b) take each step in turn, so where
// both formats order a chunk alike the compiler merges their loads of x.
#if X_ROUNDED
// Half-chunk `half` (weights 16·half .. 16·half + 15 of each row) as packed dot products.
fn matmul_step_$W(acc: ptr<function, array<vec4<f32>, {{MATMUL_ACC}}>>, h: ptr<function, array<Head_$W, ROWS>>, tok0: u32, c: u32, half: u32) {
    let i = 4u * half;
    var xs = tile_xq(tok0, x4_$W(c, i) / 4u);
    var xm = tile_x_meta(tok0, x4_$W(c, i) / 4u);
    for (var r = 0u; r < ROWS; r++) {
        let hr = (*h)[r];
        let w = vec4<u32>(qbytes4_$W(hr, i), qbytes4_$W(hr, i + 1u), qbytes4_$W(hr, i + 2u), qbytes4_$W(hr, i + 3u));
        for (var q = 0u; q < QUADS; q++) {
            (*acc)[QUADS * r + q] += dot_quad_int8(w, scales_$W(hr)[half], QOFFSET_$W, MINS_$W, &xs, &xm, q);
        }
    }
}
#else
// Weights 4i .. 4i + 3 of each row, decoded once for all the tile's tokens.
fn matmul_step_$W(acc: ptr<function, array<vec4<f32>, {{MATMUL_ACC}}>>, h: ptr<function, array<Head_$W, ROWS>>, tok0: u32, c: u32, i: u32) {
    var xs = tile_x(tok0, x4_$W(c, i));
    for (var r = 0u; r < ROWS; r++) {
        let w = dequant4_$W((*h)[r], i);
        for (var q = 0u; q < QUADS; q++) {
            (*acc)[QUADS * r + q] += dot_quad(w, &xs, q);
        }
    }
}
#endif
