// This lane's share of rows `row` and `row + 1` of matrix $W times x (32-weight chunks lane,
// lane + lanes, …: adjacent lanes read adjacent chunks): each x value is read once for both
// rows. Past `last`, the matrix's last row, the second row repeats the first (its sum is not
// stored).
fn pair_dot_$W(row: u32, last: u32, lane: u32, lanes: u32) -> vec2<f32> {
    let stride = row_bytes_$W(p.cols);
    let rb0 = row * stride;
    let rb1 = min(row + 1u, last) * stride;
    var acc = vec2<f32>(0.0);
    for (var c = lane; c < p.cols / 32u; c += lanes) {
        let h0 = chunk_$W(rb0, c);
        let h1 = chunk_$W(rb1, c);
        for (var i = 0u; i < 8u; i++) {
            let xi = x_at(x4_$W(c, i));
            acc += vec2<f32>(dot(dequant4_$W(h0, i), xi), dot(dequant4_$W(h1, i), xi));
        }
    }
    return acc;
}
