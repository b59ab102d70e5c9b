// Chunk c's share of two rows of matrix $W (heads h0, h1) times x: each x value is read once for
// both rows, and each half of the chunk (weights 4i .. 4i + 3 for i < 4, then i ≥ 4) sums q · x
// before its scale multiplies the sum once, so a weight costs one multiply-add (the mins' share
// is min · Σ x, with Σ x shared by the two rows).
fn chunk_pair_$W(c: u32, h0: Head_$W, h1: Head_$W) -> vec2<f32> {
    let s0 = scales_$W(h0);
    let s1 = scales_$W(h1);
    var acc = vec2<f32>(0.0);
    for (var half = 0u; half < 2u; half++) {
        var qx = vec2<f32>(0.0);
        var sx = 0.0;
        for (var k = 0u; k < 4u; k++) {
            let i = 4u * half + k;
            let xi = x_at(x4_$W(c, i));
            qx += vec2<f32>(dot(quants4_$W(h0, i), xi), dot(quants4_$W(h1, i), xi));
            if (MINS_$W) {
                sx += (xi.x + xi.y) + (xi.z + xi.w);
            }
        }
        acc += vec2<f32>(s0[half].x, s1[half].x) * qx;
        if (MINS_$W) {
            acc += vec2<f32>(s0[half].y, s1[half].y) * sx;
        }
    }
    return acc;
}
