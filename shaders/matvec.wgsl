// y = W · x for one token, the decode path (bindings in product_io.wgsl). W is dequantized on the
// fly, 4 weights at a time; with SWIGLU a second matrix (up) shares the pass and
// y = silu(W_a x) · (W_b x). A workgroup takes ROWS rows with LANES lanes each (set in shader.rs);
// lane i sums 32-weight chunks i, i + LANES, … of its row, then the lanes of a row add up.
const LANES: u32 = {{MATVEC_LANES}}u;
const ROWS: u32 = {{MATVEC_ROWS}}u;

var<workgroup> partial_a: array<f32, 256>;
var<workgroup> partial_b: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg) * ROWS + lid / LANES;
    let lane = lid % LANES;
    let chunks = p.cols / 32u;
    var acc_a = 0.0;
    var acc_b = 0.0;
    if (row < p.rows) {
        let rb_a = row * (p.cols / BLOCK_ELEMS_a * BLOCK_BYTES_a);
#if SWIGLU
        let rb_b = row * (p.cols / BLOCK_ELEMS_b * BLOCK_BYTES_b);
#endif
        for (var c = lane; c < chunks; c += LANES) {
            let ha = chunk_a(rb_a, c);
#if SWIGLU
            let hb = chunk_b(rb_b, c);
#endif
            for (var i = 0u; i < 8u; i++) {
                let xi = x[c * 8u + i];
                acc_a += dot(dequant4_a(ha, i), xi);
#if SWIGLU
                acc_b += dot(dequant4_b(hb, i), xi);
#endif
            }
        }
    }
    partial_a[lid] = acc_a;
    partial_b[lid] = acc_b;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial_a[lid] += partial_a[lid + s];
            partial_b[lid] += partial_b[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.rows) {
        write_out(p.row_offset + row, partial_a[lid], partial_b[lid]);
    }
}
