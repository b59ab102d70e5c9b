// y = W · x for one token, the decode path (bindings in product_io.wgsl). W is dequantized on the
// fly, 4 weights at a time; with SWIGLU a second matrix (up) shares the pass and
// y = silu(W_a x) · (W_b x). A workgroup takes ROWS rows as ROWS / 2 pairs of adjacent rows with
// LANES lanes each (set in shader.rs): an invocation sums both rows of its pair
// (`pair_dot_*` in matvec_row.wgsl), so every x value it reads serves two rows, and the lanes of
// a pair add up their partial sums at the end.
//
// x is read at the batch's last token (the only one whose logits are needed after a prefill).
//
// Fusions, each saving dependent dispatches per layer (≈2 µs each on a fast GPU):
// - NORM: x is the residual stream; every workgroup computes the RMS of the token itself (dim
//   values, cheap next to its weight rows on a GPU) and reads x / rms · norm weight.
// - QKV: rows [0, q_rows) come from W_a (q), the next kv_rows from W_b (k), the rest from W_c
//   (v). All three counts are even, so a pair never straddles two matrices, and a pair is
//   exactly a RoPE pair: the invocation that summed it rotates it and writes q to y and k, v
//   straight into the KV cache at the token's position.
const LANES: u32 = {{MATVEC_LANES}}u;
const ROWS: u32 = {{MATVEC_ROWS}}u;

var<workgroup> partial_a: array<vec2<f32>, 256>;
var<workgroup> partial_b: array<vec2<f32>, 256>;

// First vec4 of the token x is read from.
var<private> x_base: u32;

fn x_at(i: u32) -> vec4<f32> {
#if NORM
    return x[x_base + i] * consts[p.norm_offset + i];
#else
    return x[x_base + i];
#endif
}

#if NORM
// 1 / rms of the token (all 256 invocations take part).
fn inverse_rms(lid: u32) -> f32 {
    var ss = 0.0;
    for (var i = lid; i < p.cols / 4u; i += 256u) {
        let v = x[x_base + i];
        ss += dot(v, v);
    }
    // Two levels of 16 instead of a tree of 8 steps: 2 barriers, not 8.
    partial_a[lid].x = ss;
    workgroupBarrier();
    if (lid < 16u) {
        var sum = 0.0;
        for (var i = 0u; i < 16u; i++) {
            sum += partial_a[lid * 16u + i].x;
        }
        partial_b[lid].x = sum;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < 16u; i++) {
        total += partial_b[i].x;
    }
    // Everyone has read the total before the arrays are reused.
    workgroupBarrier();
    return 1.0 / sqrt(total / f32(p.cols) + p.eps);
}
#endif

#if SWIGLU
// Rows `row`, `row + 1` of W_a and of W_b in one loop: each x value is read once for all four.
fn swiglu_pair_dot(row: u32, lane: u32) -> vec4<f32> {
    let last = p.rows - 1u;
    let rb_a = row * row_bytes_a(p.cols);
    let rb_a1 = min(row + 1u, last) * row_bytes_a(p.cols);
    let rb_b = row * row_bytes_b(p.cols);
    let rb_b1 = min(row + 1u, last) * row_bytes_b(p.cols);
    var acc = vec4<f32>(0.0);
    for (var c = lane; c < p.cols / 32u; c += LANES) {
        let ha = chunk_a(rb_a, c);
        let ha1 = chunk_a(rb_a1, c);
        let hb = chunk_b(rb_b, c);
        let hb1 = chunk_b(rb_b1, c);
        for (var i = 0u; i < 8u; i++) {
            // The same x when both formats order a chunk alike (the compiler merges the reads).
            let xa = x_at(x4_a(c, i));
            let xb = x_at(x4_b(c, i));
            acc += vec4<f32>(dot(dequant4_a(ha, i), xa), dot(dequant4_a(ha1, i), xa),
                             dot(dequant4_b(hb, i), xb), dot(dequant4_b(hb1, i), xb));
        }
    }
    return acc;
}
#endif

#if QKV
// (cos, sin) of RoPE pair `i` of a head at position `pos`.
fn rope_pair(pos: u32, i: u32) -> vec2<f32> {
    let k = pos * (p.head_dim / 2u) + i;
    let t = consts[p.table_offset + k / 2u];
    return select(t.xy, t.zw, (k & 1u) == 1u);
}

// The sums of rows `row` and `row + 1`: a RoPE pair of q or k, or two values of v.
fn store_qkv_pair(row: u32, pair: vec2<f32>) {
    let pos = step.pos0 + step.n_tokens - 1u;
    let half = p.head_dim / 2u;
    let kv_pairs = p.kv_rows / 2u;
    if (row < p.q_rows) {
        let r = rope_rotate(pair, rope_pair(pos, (row / 2u) % half));
        y[row] = r.x;
        y[row + 1u] = r.y;
    } else if (row < p.q_rows + p.kv_rows) {
        let j = (row - p.q_rows) / 2u;
        k_cache[pos * kv_pairs + j] = kv_pack(rope_rotate(pair, rope_pair(pos, j % half)));
    } else {
        let j = (row - p.q_rows - p.kv_rows) / 2u;
        v_cache[pos * kv_pairs + j] = kv_pack(pair);
    }
}
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg) * ROWS + 2u * (lid / LANES);
    let lane = lid % LANES;
    x_base = (step.n_tokens - 1u) * (p.cols / 4u);
#if NORM
    let scale = inverse_rms(lid);
#else
    let scale = 1.0;
#endif
    var acc_a = vec2<f32>(0.0);
    var acc_b = vec2<f32>(0.0);
    if (row < p.rows) {
#if QKV
        if (row < p.q_rows) {
            acc_a = pair_dot_a(row, p.q_rows - 1u, lane);
        } else if (row < p.q_rows + p.kv_rows) {
            acc_a = pair_dot_b(row - p.q_rows, p.kv_rows - 1u, lane);
        } else {
            acc_a = pair_dot_c(row - p.q_rows - p.kv_rows, p.kv_rows - 1u, lane);
        }
#elif SWIGLU
        let ab = swiglu_pair_dot(row, lane);
        acc_a = ab.xy;
        acc_b = ab.zw;
#else
        acc_a = pair_dot_a(row, p.rows - 1u, lane);
#endif
    }
    partial_a[lid] = acc_a * scale;
    partial_b[lid] = acc_b * scale;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial_a[lid] += partial_a[lid + s];
            partial_b[lid] += partial_b[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.rows) {
#if QKV
        store_qkv_pair(row, partial_a[lid]);
#else
        write_out(p.row_offset + row, partial_a[lid].x, partial_b[lid].x);
        if (row + 1u < p.rows) {
            write_out(p.row_offset + row + 1u, partial_a[lid].y, partial_b[lid].y);
        }
#endif
    }
}
