// Causal grouped-query attention over the KV cache. A workgroup takes HEADS query heads that share
// one KV head, so their keys and values are read once for all of them, and one range of keys,
// visited 64 at a time with an online softmax (running max and sum, rescaled as the max grows):
// no score array proportional to the context is kept and long contexts cannot overflow.
// - A batch (prefill): one workgroup per (head group, token), over every key up to the token.
// - One token (decode): its keys split into nwg.z ranges, a workgroup each, so a long context
//   is spread over the whole GPU instead of queueing behind one workgroup per head. Each range
//   leaves, per head, a record in `partials`: (running max, denominator), then the unnormalized
//   sum (head_dim / 2 pairs); and
//   attention_merge.wgsl combines them (with a single range the result is written directly).
@group(0) @binding(2) var<storage, read> q: array<vec2<f32>>;
// Keys are read 16 bytes at a time (kv.wgsl), values a pair at a time.
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<KvPair>;
@group(0) @binding(5) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec2<f32>>;

// Query heads per workgroup (a divisor of the heads per KV head, at most 8; set in Rust), so
// that the per-head loops below unroll and their sums stay in registers.
const HEADS: u32 = {{ATTENTION_HEADS}}u;
const WG: u32 = 64u;
// head_dim ≤ 256: an invocation owns up to two (value, value) pairs of the output.
const PAIRS_PER_LANE: u32 = 2u;
// Scores of missing keys; finite so that (max − score) never makes NaN.
const NEG: f32 = -3.0e38;

// The group's queries, [head][pair]; once the last chunk is done, the key slices' sums.
var<workgroup> q_heads: array<vec2<f32>, 1024>;
// [head][key of the chunk]: scores, then softmax weights.
var<workgroup> scores: array<f32, 512>;
var<workgroup> head_max: array<f32, 8>;
var<workgroup> head_sum: array<f32, 8>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h0 = wid.x * HEADS;
    let t = wid.y;
    let split = wid.z;
    let splits = nwg.z;
    let half = p.head_dim / 2u;
    let kv_pairs = p.n_kv_heads * half;
    let kv0 = (h0 / (p.n_heads / p.n_kv_heads)) * half;
    let n_keys = step.pos0 + t + 1u;
    let per_split = (n_keys + splits - 1u) / splits;
    let k_begin = min(n_keys, split * per_split);
    let k_end = min(n_keys, k_begin + per_split);
    for (var i = lid; i < HEADS * half; i += WG) {
        q_heads[i] = q[(t * p.n_heads + h0) * half + i];
    }
    // In the value sums an invocation owns pair `lane` (and lane + 64 when head_dim > 128); when
    // head_dim < 128, several key slices of `lanes` invocations sum side by side.
    let lanes = min(half, WG);
    let slices = WG / lanes;
    let slice = lid / lanes;
    let lane = lid % lanes;
    // Running max, same in every invocation; running denominator of head `lid`.
    var m: array<f32, HEADS>;
    for (var g = 0u; g < HEADS; g++) {
        m[g] = NEG;
    }
    var l = 0.0;
    var acc: array<vec2<f32>, PAIRS_PER_LANE * HEADS>;
    workgroupBarrier();

    for (var c0 = k_begin; c0 < k_end; c0 += WG) {
        let n_here = min(WG, k_end - c0);
        // Scores: an invocation per key, every head of the group from one read of the key, in
        // 16-byte pieces (a quarter of the load instructions of pair-by-pair reads).
        if (lid < n_here) {
            let base = ((c0 + lid) * kv_pairs + kv0) / KV_QUAD;
            // Zeroed explicitly: Chromium's WebGPU on SwiftShader kept the previous chunk's sums
            // in this array when it relied on WGSL zeroing it at its declaration (the browser
            // attention test failed).
            var d: array<f32, HEADS>;
            for (var g = 0u; g < HEADS; g++) {
                d[g] = 0.0;
            }
            for (var piece = 0u; piece < half / KV_QUAD; piece++) {
                let kq = k_cache[base + piece];
                for (var k = 0u; k < KV_QUAD; k++) {
                    let kk = kv_quad_pair(kq, k);
                    let j = piece * KV_QUAD + k;
                    for (var g = 0u; g < HEADS; g++) {
                        d[g] += dot(q_heads[g * half + j], kk);
                    }
                }
            }
            for (var g = 0u; g < HEADS; g++) {
                scores[g * WG + lid] = d[g] * p.scale;
            }
        }
        workgroupBarrier();
        if (lid < HEADS) {
            var mx = m[lid];
            for (var i = 0u; i < n_here; i++) {
                mx = max(mx, scores[lid * WG + i]);
            }
            head_max[lid] = mx;
        }
        workgroupBarrier();
        // Rescale what was summed under the old max; scores become weights.
        var correction: array<f32, HEADS>;
        for (var g = 0u; g < HEADS; g++) {
            correction[g] = exp(m[g] - head_max[g]);
            m[g] = head_max[g];
            if (lid < n_here) {
                scores[g * WG + lid] = exp(scores[g * WG + lid] - m[g]);
            }
        }
        workgroupBarrier();
        if (lid < HEADS) {
            var sum = 0.0;
            for (var i = 0u; i < n_here; i++) {
                sum += scores[lid * WG + i];
            }
            l = l * correction[lid] + sum;
        }
        // Values: each read once for every head of the group.
        for (var e = 0u; e < PAIRS_PER_LANE; e++) {
            let j = lane + e * WG;
            if (slice < slices && j < half) {
                for (var g = 0u; g < HEADS; g++) {
                    acc[e * HEADS + g] *= correction[g];
                }
                for (var i = slice; i < n_here; i += slices) {
                    let v = kv_unpack(v_cache[(c0 + i) * kv_pairs + kv0 + j]);
                    for (var g = 0u; g < HEADS; g++) {
                        acc[e * HEADS + g] += scores[g * WG + i] * v;
                    }
                }
            }
        }
        // The next chunk overwrites the weights.
        workgroupBarrier();
    }

    // Key slices 1, 2, … hand their sums to slice 0 through q_heads (no longer read).
    if (lid < HEADS) {
        head_sum[lid] = l;
    }
    if (slices > 1u && slice > 0u && slice < slices) {
        for (var g = 0u; g < HEADS; g++) {
            q_heads[((slice - 1u) * HEADS + g) * half + lane] = acc[g];
        }
    }
    workgroupBarrier();
    if (slice != 0u) {
        return;
    }
    for (var e = 0u; e < PAIRS_PER_LANE; e++) {
        let j = lane + e * WG;
        if (j < half) {
            for (var g = 0u; g < HEADS; g++) {
                var a = acc[e * HEADS + g];
                for (var s = 1u; s < slices; s++) {
                    a += q_heads[((s - 1u) * HEADS + g) * half + lane];
                }
                let h = h0 + g;
                if (splits == 1u) {
                    out[(t * p.n_heads + h) * half + j] = a / head_sum[g];
                } else {
                    partials[(split * p.n_heads + h) * (half + 1u) + 1u + j] = a;
                }
            }
        }
    }
    if (splits > 1u && lid < HEADS) {
        partials[(split * p.n_heads + h0 + lid) * (half + 1u)] = vec2<f32>(m[lid], l);
    }
}
