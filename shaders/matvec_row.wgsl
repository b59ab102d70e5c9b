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

// This lane's share of rows `row` and `row + 1` of matrix $W times x (32-weight chunks lane,
// lane + lanes, …: adjacent lanes read adjacent chunks). Past `last`, the matrix's last row, the
// second row repeats the first (its sum is not stored).
fn pair_dot_$W(row: u32, last: u32, lane: u32, lanes: u32) -> vec2<f32> {
    let stride = row_bytes_$W(p.cols);
    let rb0 = row * stride;
    let rb1 = min(row + 1u, last) * stride;
    var acc = vec2<f32>(0.0);
    for (var c = lane; c < p.cols / 32u; c += lanes) {
        acc += chunk_pair_$W(c, chunk_$W(rb0, c), chunk_$W(rb1, c));
    }
    return acc;
}
