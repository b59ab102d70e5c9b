// Causal grouped-query attention over the KV cache, one workgroup per (query head, token). Keys
// are visited 64 at a time with an online softmax (running max and sum, rescaled as the max grows),
// so no score array proportional to the context is kept and long contexts cannot overflow.
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> q: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<KvPair>;
@group(0) @binding(4) var<storage, read> v_cache: array<KvPair>;
@group(0) @binding(5) var<storage, read_write> out: array<vec2<f32>>;

const WG: u32 = 64u;
// head_dim ≤ 256: each invocation owns up to two (value, value) pairs of the output.
const PAIRS_PER_LANE: u32 = 2u;
// Scores of masked or missing keys; finite so that (max − score) never makes NaN.
const NEG: f32 = -3.0e38;

var<workgroup> q_head: array<vec2<f32>, 128>;
var<workgroup> reduce: array<f32, 64>;
var<workgroup> weight: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let half = p.head_dim / 2u;
    let kv_pairs = p.n_kv_heads * half;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let n_keys = step.pos0 + t + 1u;
    for (var j = lid; j < half; j += WG) {
        q_head[j] = q[(t * p.n_heads + h) * half + j];
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc: array<vec2<f32>, PAIRS_PER_LANE>;
    for (var p0 = 0u; p0 < n_keys; p0 += WG) {
        let key = p0 + lid;
        var s = NEG;
        if (key < n_keys) {
            var d = 0.0;
            let base = key * kv_pairs + kvh * half;
            for (var j = 0u; j < half; j++) {
                let kk = kv_unpack(k_cache[base + j]);
                d += dot(q_head[j], kk);
            }
            s = d * p.scale;
        }
        reduce[lid] = s;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid < w) {
                reduce[lid] = max(reduce[lid], reduce[lid + w]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, reduce[0]);
        let correction = exp(m - m_new);
        weight[lid] = exp(s - m_new);
        workgroupBarrier();
        let n_here = min(WG, n_keys - p0);
        var sum = 0.0;
        for (var i = 0u; i < n_here; i++) {
            sum += weight[i];
        }
        l = l * correction + sum;
        for (var e = 0u; e < PAIRS_PER_LANE; e++) {
            let j = lid + e * WG;
            if (j < half) {
                var a = acc[e] * correction;
                for (var i = 0u; i < n_here; i++) {
                    a += weight[i] * kv_unpack(v_cache[(p0 + i) * kv_pairs + kvh * half + j]);
                }
                acc[e] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var e = 0u; e < PAIRS_PER_LANE; e++) {
        let j = lid + e * WG;
        if (j < half) {
            out[(t * p.n_heads + h) * half + j] = acc[e] / l;
        }
    }
}
