// This lane's share of rows `row` and `row + 1` of matrix $W times x (32-weight chunks
// chunk_begin + lane, + lanes, … before chunk_end: adjacent lanes read adjacent chunks). Past
// `last`, the matrix's last row, the second row repeats the first (its sum is not stored).
fn pair_dot_$W(row: u32, last: u32, lane: u32, lanes: u32) -> vec2<f32> {
    let stride = row_bytes_$W(p.cols);
    let rb0 = row * stride;
    let rb1 = min(row + 1u, last) * stride;
    var acc = vec2<f32>(0.0);
    for (var c = chunk_begin + lane; c < chunk_end; c += lanes) {
        acc += chunk_pair_$W(c, chunk_$W(rb0, c), chunk_$W(rb1, c));
    }
    return acc;
}
