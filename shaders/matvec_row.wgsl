// This lane's share of row `row` of matrix $W times x: 32-weight chunks lane, lane + LANES, …
fn row_dot_$W(row: u32, lane: u32) -> f32 {
    let row_byte = row * (p.cols / BLOCK_ELEMS_$W * BLOCK_BYTES_$W);
    var acc = 0.0;
    for (var c = lane; c < p.cols / 32u; c += LANES) {
        let h = chunk_$W(row_byte, c);
        for (var i = 0u; i < 8u; i++) {
            acc += dot(dequant4_$W(h, i), x_at(c * 8u + i));
        }
    }
    return acc;
}
