// y = W · x for one token, the decode path (bindings in product_io.wgsl). W is dequantized on the
// fly, 4 weights at a time; with SWIGLU a second matrix (up) shares the pass and
// y = silu(W_a x) · (W_b x). A workgroup takes ROWS rows as ROWS / 2 pairs of adjacent rows, with
// LANES = 512 / ROWS invocations each: an invocation sums both rows of its pair (`pair_dot_*` in
// matvec_row.wgsl), so every x value it reads serves two rows, and the lanes of a pair add up
// their partial sums at the end. Without SUBGROUPS they add up through workgroup memory,
// log2(LANES) barriers. With SUBGROUPS (the adapter has them) a subgroup's lanes add up with
// subgroupAdd and one barrier gathers the subgroups' sums (see `main`).
//
// x is read at the batch's last token (the only one whose logits are needed after a prefill).
// A chunk's share of a pair is `chunk_pair_*`: matvec_chunk.wgsl, or with X_INT8 (int8
// activations) matvec_chunk_int8.wgsl for the integer formats. With X_INT8 the workgroup first
// rounds x to int8 blocks in workgroup memory, a segment of SEGMENT_BLOCKS blocks at a time
// (the whole x for most products), so that each x value is rounded once per workgroup rather
// than once per row pair, and the row pairs read 4 bytes where they read 16.
//
// Fusions, each saving dependent dispatches per layer (≈2 µs each on a fast GPU):
// - An RMSNorm folded in, split between the product that adds to the residual stream and the
//   one that reads its norm. NORM_NEXT (with ADD): besides y += W x, the product writes
//   y ⊙ w (w: the next norm's weights, in `consts`) to `next_x`, and each workgroup the sum of
//   its rows' y² after them, at f32 `out_stride + slot0 + workgroup`. NORM: x is such a
//   `next_x`; the sums give 1 / rms, a scalar applied to the finished dot products, so the inner
//   loop reads x exactly as without a norm.
// - QKV: rows [0, q_rows) come from W_a (q), the next kv_rows from W_b (k), the rest from W_c
//   (v). All three counts are even, so a pair never straddles two matrices, and a pair is
//   exactly a RoPE pair: the invocation that summed it rotates it and writes q to y and k, v
//   straight into the KV cache at the token's position.
const LANES: u32 = {{MATVEC_LANES}}u;
const ROWS: u32 = {{MATVEC_ROWS}}u;

#if SUBGROUPS
// Numbers the workgroup's subgroups as they arrive (WGSL promises no order of invocations in
// subgroups, so the index comes from here, not from local_invocation_index).
var<workgroup> subgroups_seen: atomic<u32>;
// A subgroup's sums of its share of a pair, (a, a + 1, b, b + 1), at pair · share + its share:
// at most max(ROWS / 2, 256 / subgroup size) slots (context.rs uses subgroups only of ≥ 4).
var<workgroup> partial: array<vec4<f32>, 64>;
#else
var<workgroup> partial_a: array<vec2<f32>, 256>;
var<workgroup> partial_b: array<vec2<f32>, 256>;
#endif

// First vec4 of the token x is read from.
var<private> x_base: u32;
// The chunks the row pairs sum now (pair_dot_*): all of them, or with X_INT8 a segment's.
var<private> chunk_begin: u32;
var<private> chunk_end: u32;

#if X_INT8
// A segment of x, rounded: 256 blocks of 16 values (4096 values, 6 KiB), the blocks' bytes and
// their (d, Σq as its bits).
const SEGMENT_BLOCKS: u32 = 256u;
var<workgroup> segment_q: array<vec4<u32>, 256>;
var<workgroup> segment_meta: array<vec2<u32>, 256>;
// The segment's first block.
var<private> segment_block0: u32;

// Rounds segment `s` of x into workgroup memory, a block per invocation, and makes it the
// segment the row pairs sum. Every invocation calls it (it holds barriers).
fn round_segment(s: u32, lid: u32) {
    // The previous segment's readers are done.
    workgroupBarrier();
    segment_block0 = s * SEGMENT_BLOCKS;
    let b = segment_block0 + lid;
    if (b < p.cols / 16u) {
        let r = x_int8(x_at(4u * b), x_at(4u * b + 1u), x_at(4u * b + 2u), x_at(4u * b + 3u));
        segment_q[lid] = r.q;
        segment_meta[lid] = vec2<u32>(bitcast<u32>(r.d), bitcast<u32>(r.sum));
    }
    // A chunk's 32 values are within one segment: segments are whole 256-value super-blocks.
    chunk_begin = segment_block0 / 2u;
    chunk_end = min(p.cols / 32u, chunk_begin + SEGMENT_BLOCKS / 2u);
    workgroupBarrier();
}

// Block b of x (values 16b .. 16b + 15), rounded; b is in the current segment.
fn x_block(b: u32) -> XInt8 {
    let m = segment_meta[b - segment_block0];
    return XInt8(segment_q[b - segment_block0], bitcast<f32>(m.x), bitcast<i32>(m.y));
}

// Sums of a lane's share of one or more row pairs, kept across segments.
const PAIR_SUMS: u32 = max(1u, ROWS / 4u);
#endif

fn x_at(i: u32) -> vec4<f32> {
    return x[x_base + i];
}

#if NORM
// 1 / rms of the token whose weighted values x holds, from the `p.slots` sums of squares after
// them: every invocation adds them all itself (the same addresses across the workgroup, so no
// barrier), in the same order, so all get the same value.
fn inverse_rms() -> f32 {
    let first = p.cols / 4u;
    var total = vec4<f32>(0.0);
    for (var i = 0u; i < p.slots; i += 4u) {
        let keep = vec4<u32>(i, i + 1u, i + 2u, i + 3u) < vec4<u32>(p.slots);
        total += select(vec4<f32>(0.0), x[first + i / 4u], keep);
    }
    let ss = (total.x + total.y) + (total.z + total.w);
    return 1.0 / sqrt(ss / f32(p.cols) + p.eps);
}
#endif

#if NORM_NEXT
// Each pair's share of its workgroup's sum of squares.
var<workgroup> pair_squares: array<f32, 32>;

// y[i] += a, and next_x[i] = y[i] · w[i] for the next norm's weights w; returns y[i]².
fn add_and_weigh(i: u32, a: f32) -> f32 {
    let v = y[i] + a;
    y[i] = v;
    let j = p.norm_offset * 4u + i;
    next_x[i] = v * consts[j / 4u][j % 4u];
    return v * v;
}
#endif

#if SWIGLU
// Rows `row`, `row + 1` of W_a and of W_b in one loop: each x value is read once for all four.
fn swiglu_pair_dot(row: u32, lane: u32, lanes: u32) -> vec4<f32> {
    let last = p.rows - 1u;
    let rb_a = row * row_bytes_a(p.cols);
    let rb_a1 = min(row + 1u, last) * row_bytes_a(p.cols);
    let rb_b = row * row_bytes_b(p.cols);
    let rb_b1 = min(row + 1u, last) * row_bytes_b(p.cols);
    var acc = vec4<f32>(0.0);
    for (var c = chunk_begin + lane; c < chunk_end; c += lanes) {
        // All four chunks' loads first; the x values are the same when both formats order a
        // chunk alike (the compiler can merge the reads).
        let ha = chunk_a(rb_a, c);
        let ha1 = chunk_a(rb_a1, c);
        let hb = chunk_b(rb_b, c);
        let hb1 = chunk_b(rb_b1, c);
        acc += vec4<f32>(chunk_pair_a(c, ha, ha1), chunk_pair_b(c, hb, hb1));
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

// This lane's share of pair `row`, `row + 1`: (a, a + 1) and, with SWIGLU, (b, b + 1). No early
// return: with SUBGROUPS a subgroupAdd follows the call.
fn pair_sums(row: u32, lane: u32, lanes: u32) -> vec4<f32> {
    var ab = vec4<f32>(0.0);
    if (row < p.rows) {
#if QKV
        if (row < p.q_rows) {
            ab = vec4<f32>(pair_dot_a(row, p.q_rows - 1u, lane, lanes), 0.0, 0.0);
        } else if (row < p.q_rows + p.kv_rows) {
            ab = vec4<f32>(pair_dot_b(row - p.q_rows, p.kv_rows - 1u, lane, lanes), 0.0, 0.0);
        } else {
            ab = vec4<f32>(pair_dot_c(row - p.q_rows - p.kv_rows, p.kv_rows - 1u, lane, lanes), 0.0, 0.0);
        }
#elif SWIGLU
        ab = swiglu_pair_dot(row, lane, lanes);
#else
        ab = vec4<f32>(pair_dot_a(row, p.rows - 1u, lane, lanes), 0.0, 0.0);
#endif
    }
    return ab;
}

// Pair `pair` of the workgroup, rows `row`, `row + 1`, is summed: `ab` = (a, a + 1, b, b + 1).
fn finish_pair(row: u32, pair: u32, ab: vec4<f32>) {
#if NORM_NEXT
    var squares = 0.0;
    if (row < p.rows) {
        squares = add_and_weigh(p.row_offset + row, ab.x);
        if (row + 1u < p.rows) {
            squares += add_and_weigh(p.row_offset + row + 1u, ab.y);
        }
    }
    pair_squares[pair] = squares;
#else
    if (row < p.rows) {
#if QKV
        store_qkv_pair(row, ab.xy);
#else
        write_out(p.row_offset + row, ab.x, ab.z);
        if (row + 1u < p.rows) {
            write_out(p.row_offset + row + 1u, ab.y, ab.w);
        }
#endif
    }
#endif
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
    let group = flat_group(wid, nwg);
    x_base = (step.n_tokens - 1u) * (p.cols / 4u);
    chunk_begin = 0u;
    chunk_end = p.cols / 32u;
#if NORM
    // A `next_x` holds one token.
    x_base = 0u;
    let scale = inverse_rms();
#else
    let scale = 1.0;
#endif
#if SUBGROUPS
    // 256 / sg_size subgroups (powers of two) take the ROWS / 2 pairs: with fewer subgroups than
    // pairs, a subgroup sums `per` pairs one after the other; with more, `share` subgroups split
    // each pair's chunks between them. Either way every invocation works, a subgroup adds up its
    // lanes with no barrier, and one barrier gathers the subgroups' sums of each pair.
    var sg = 0u;
    if (sg_lane == 0u) {
        sg = atomicAdd(&subgroups_seen, 1u);
    }
    sg = subgroupBroadcast(sg, 0u);
    let subgroups = 256u / sg_size;
    let per = max(1u, (ROWS / 2u) / subgroups);
    let share = max(1u, subgroups / (ROWS / 2u));
    // This subgroup's pairs are first_pair .. first_pair + per − 1, and this invocation is lane
    // `lane` of the share · sg_size that split each of them.
    let first_pair = (sg / share) * per;
    let lane = (sg % share) * sg_size + sg_lane;
#if X_INT8
    // per ≤ PAIR_SUMS: subgroups have at most 128 invocations, so there are at least 2.
    var sums: array<vec4<f32>, PAIR_SUMS>;
    for (var s = 0u; s * SEGMENT_BLOCKS < p.cols / 16u; s++) {
        round_segment(s, lid);
        for (var k = 0u; k < per; k++) {
            sums[k] += pair_sums(group * ROWS + 2u * (first_pair + k), lane, share * sg_size);
        }
    }
#endif
    for (var k = 0u; k < per; k++) {
        let pair = first_pair + k;
#if X_INT8
        let ab = subgroupAdd(sums[k]);
#else
        let ab = subgroupAdd(pair_sums(group * ROWS + 2u * pair, lane, share * sg_size));
#endif
        if (sg_lane == 0u) {
            partial[pair * share + sg % share] = ab;
        }
    }
    workgroupBarrier();
    if (lid < ROWS / 2u) {
        var ab = vec4<f32>(0.0);
        for (var i = 0u; i < share; i++) {
            ab += partial[lid * share + i];
        }
        finish_pair(group * ROWS + 2u * lid, lid, ab * scale);
    }
#else
    let pair = lid / LANES;
    let lane = lid % LANES;
    let row = group * ROWS + 2u * pair;
#if X_INT8
    var ab = vec4<f32>(0.0);
    for (var s = 0u; s * SEGMENT_BLOCKS < p.cols / 16u; s++) {
        round_segment(s, lid);
        ab += pair_sums(row, lane, LANES);
    }
    ab *= scale;
#else
    let ab = pair_sums(row, lane, LANES) * scale;
#endif
    partial_a[lid] = ab.xy;
    partial_b[lid] = ab.zw;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial_a[lid] += partial_a[lid + s];
            partial_b[lid] += partial_b[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        finish_pair(row, pair, vec4<f32>(partial_a[lid], partial_b[lid]));
    }
#endif
#if NORM_NEXT
    workgroupBarrier();
    if (lid == 0u && group * ROWS < p.rows) {
        var sum = 0.0;
        for (var i = 0u; i < ROWS / 2u; i++) {
            sum += pair_squares[i];
        }
        next_x[p.out_stride + p.slot0 + group] = sum;
    }
#endif
}
