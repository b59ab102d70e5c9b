// Candidate selection for the sampler, so that a token reads back a few numbers instead of the
// whole vocabulary's logits: the exact top k (k ≤ 64) of the logits after llama.cpp's repetition
// penalty, best first, ties to the lower id, NaN never selected, plus the softmax state
// (max, Σ exp((l' − max) / T)) over the whole vocabulary.
//
// Every workgroup reduces ITEMS = 4096 items (16 per invocation) to one record: its best KMAX
// (key, id) pairs in order, and its softmax state. Phase one (this file's `main`) reads logits,
// 4096 per workgroup; merging (`select_merge.wgsl`, assembled after this file's shared part with
// the SELECT_MERGE flag) reduces up to 64 records per workgroup, level after level, to one.
//
// Within a workgroup, with no sorting network and three barriers: each invocation finds its
// best item; the k-th best of those 256 is a lower bound T for the k-th best item (k distinct
// items reach it). Only the k invocations whose best reaches T hold items that do, so at most
// k · 16 ≤ 1024 items are staged in workgroup memory, and each staged item's rank among them
// (count of better ones) is its place in the record.
//
// Values are ranked by a u32 key that orders them like f32::total_cmp (so -0.0 < +0.0, as the
// CPU sampler sorts); NaN gets key 0, which also marks an empty slot. The penalty is applied on
// the fly: the logits buffer is not modified, and a penalized value is computed bit-exactly as
// the CPU does (in integers, see `round_pack`). Infinities and NaN are handled on the bits, since
// WGSL lets an implementation assume floats are finite.

struct SelectParams {
    vocab: u32,
    // Candidates wanted, 1..=KMAX.
    k: u32,
    // Bits of the repetition penalty (a normal positive f32).
    penalty: u32,
    // 1 / temperature, or 0 when no softmax state is wanted (greedy).
    inv_temp: f32,
    // The `penalized` bitmap has bits set.
    has_penalty: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(1) var<uniform> p: SelectParams;
// Output records of REC words: keys [0, KMAX), ids [KMAX, 2·KMAX), then max and Σ (f32 bits).
@group(0) @binding(4) var<storage, read_write> records: array<u32>;

const WG: u32 = 256u;
const E: u32 = 16u;
const ITEMS: u32 = 4096u;
const KMAX: u32 = 64u;
const REC: u32 = 130u;
const NONE: u32 = 0xffffffffu;
// The most negative finite f32.
const LOWEST: f32 = -0x1.fffffep+127f;

var<private> item_key: array<u32, E>;
var<private> item_id: array<u32, E>;

// Staged items (at most KMAX · E); before that, each invocation's best.
var<workgroup> sk: array<u32, 1024>;
var<workgroup> si: array<u32, 1024>;
var<workgroup> staged: atomic<u32>;
var<workgroup> bound_key: u32;
var<workgroup> bound_id: u32;
var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

fn is_nan_bits(bits: u32) -> bool {
    return (bits & 0x7fffffffu) > 0x7f800000u;
}

// Larger key = larger value, in f32::total_cmp order; 0 for NaN.
fn sort_key(bits: u32) -> u32 {
    if (is_nan_bits(bits)) {
        return 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn better(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// exp(d) for the softmax state, 0 far below (and for -inf or NaN d), exactly 1 at 0.
fn weight(d: f32) -> f32 {
    if (d == 0.0) {
        return 1.0;
    }
    if (d > -88.0) {
        return exp(d);
    }
    return 0.0;
}

// Running (max, Σ exp((x − max)/T)) of one more finite or +inf value x.
fn softmax_add(state: vec2<f32>, x: f32) -> vec2<f32> {
    if (x > state.x) {
        return vec2<f32>(x, state.y * weight((state.x - x) * p.inv_temp) + 1.0);
    }
    return vec2<f32>(state.x, state.y + weight((x - state.x) * p.inv_temp));
}

fn softmax_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * weight((a.x - m) * p.inv_temp) + b.y * weight((b.x - m) * p.inv_temp));
}

// Merges every invocation's state into the record at `rec`.
fn softmax_write(lid: u32, state: vec2<f32>, rec: u32) {
    red_m[lid] = state.x;
    red_s[lid] = state.y;
    workgroupBarrier();
    if (lid < 16u) {
        var s = vec2<f32>(red_m[lid * 16u], red_s[lid * 16u]);
        for (var j = 1u; j < 16u; j++) {
            s = softmax_merge(s, vec2<f32>(red_m[lid * 16u + j], red_s[lid * 16u + j]));
        }
        red_m[lid * 16u] = s.x;
        red_s[lid * 16u] = s.y;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s = vec2<f32>(red_m[0], red_s[0]);
        for (var j = 1u; j < 16u; j++) {
            s = softmax_merge(s, vec2<f32>(red_m[j * 16u], red_s[j * 16u]));
        }
        records[rec + 2u * KMAX] = bitcast<u32>(s.x);
        records[rec + 2u * KMAX + 1u] = bitcast<u32>(s.y);
    }
}

// Writes the best KMAX of the workgroup's items (every invocation's item_key/item_id; key 0 is
// no item) in order to the record at `rec`, empty slots last. The first k are exactly the top
// k; the rest are real items too, so records can be merged again.
fn select_items(lid: u32, rec: u32) {
    var bk = 0u;
    var bi = NONE;
    for (var e = 0u; e < E; e++) {
        if (item_key[e] != 0u && better(item_key[e], item_id[e], bk, bi)) {
            bk = item_key[e];
            bi = item_id[e];
        }
    }
    sk[lid] = bk;
    si[lid] = bi;
    if (lid == 0u) {
        bound_key = 0u;
        bound_id = NONE;
        atomicStore(&staged, 0u);
    }
    workgroupBarrier();
    // The k-th best of the invocations' bests (none if fewer than k have items: all items count).
    if (bk != 0u) {
        // Counting stops once k better ones are found: then this one is not the k-th.
        var rank = 0u;
        for (var j = 0u; j < WG && rank < p.k; j++) {
            if (better(sk[j], si[j], bk, bi)) {
                rank += 1u;
            }
        }
        if (rank == p.k - 1u) {
            bound_key = bk;
            bound_id = bi;
        }
    }
    workgroupBarrier();
    let tk = bound_key;
    let ti = bound_id;
    if (bk != 0u && !better(tk, ti, bk, bi)) {
        for (var e = 0u; e < E; e++) {
            if (item_key[e] != 0u && !better(tk, ti, item_key[e], item_id[e])) {
                let slot = atomicAdd(&staged, 1u);
                sk[slot] = item_key[e];
                si[slot] = item_id[e];
            }
        }
    }
    workgroupBarrier();
    let n = atomicLoad(&staged);
    for (var s = lid; s < n; s += WG) {
        let key = sk[s];
        let id = si[s];
        var rank = 0u;
        for (var j = 0u; j < n; j++) {
            if (better(sk[j], si[j], key, id)) {
                rank += 1u;
            }
        }
        if (rank < KMAX) {
            records[rec + rank] = key;
            records[rec + KMAX + rank] = id;
        }
    }
    if (lid < KMAX && lid >= n) {
        records[rec + lid] = 0u;
        records[rec + KMAX + lid] = NONE;
    }
}

#if SELECT_MERGE
#else
@group(0) @binding(2) var<storage, read> logits: array<u32>;
// Bit i set: logit i gets the repetition penalty.
@group(0) @binding(3) var<storage, read> penalized: array<u32>;

// The repetition penalty is computed in integers, correctly rounded: WGSL's `/` may be 2.5 ulp
// off, and `*` may flush subnormals to zero, while the candidates must carry exactly the values
// the CPU sampler computes. Only penalized ids (a few per token) take this path.

struct Unpacked {
    // Significand in [2^23, 2^24).
    m: u32,
    // Biased exponent, below 1 for a (normalized) subnormal.
    e: i32,
}

// A finite non-zero magnitude as m · 2^(e − 150).
fn unpack(bits: u32) -> Unpacked {
    let e = i32(bits >> 23u);
    let m = bits & 0x7fffffu;
    if (e == 0) {
        let sh = countLeadingZeros(m) - 8u;
        return Unpacked(m << sh, 1 - i32(sh));
    }
    return Unpacked(m | 0x800000u, e);
}

// The f32 magnitude nearest (ties to even) q · 2^(e − 25), for q in [2^25, 2^26) and `sticky`
// true when something non-zero lies below q: a normal, subnormal, zero or +inf.
fn round_pack(q: u32, sticky: bool, e: i32) -> u32 {
    // Drop 2 bits for a normal result's 24-bit significand, more for a subnormal one.
    let shift = u32(clamp(-e - 124, 2, 27));
    if (shift > 26u) {
        return 0u;
    }
    var m = q >> shift;
    let half = 1u << (shift - 1u);
    let rest = q & ((half << 1u) - 1u);
    if (rest > half || (rest == half && (sticky || (m & 1u) == 1u))) {
        m = m + 1u;
    }
    if (shift > 2u) {
        // Subnormal (m = 2^23 after rounding up is the smallest normal, encoded the same way).
        return m;
    }
    if (e > 127) {
        return 0x7f800000u;
    }
    // m in [2^23, 2^24]: added to the exponent field minus one, a rounded-up 2^24 carries.
    return min((u32(e + 126) << 23u) + m, 0x7f800000u);
}

// a / b for a positive a (finite or +inf, not NaN) and a normal b > 0.
fn div_rn(a: u32, b: u32) -> u32 {
    if (a >= 0x7f800000u) {
        return a;
    }
    let x = unpack(a);
    let mb = (b & 0x7fffffu) | 0x800000u;
    // a / b = (ma / mb) · 2^e.
    var ma = x.m;
    var e = x.e - i32(b >> 23u);
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    // ma / mb is in [1, 2): 26 quotient bits (1 integer, 25 fraction) and the remainder.
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 26u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    return round_pack(q, r != 0u, e);
}

// |a| · b as a magnitude, for a finite non-zero a and a normal b > 0.
fn mul_rn(a: u32, b: u32) -> u32 {
    let x = unpack(a & 0x7fffffffu);
    let y = unpack(b);
    // The 48-bit product ma · mb in (hi, lo), from 16-bit halves.
    let a1 = x.m >> 16u;
    let a0 = x.m & 0xffffu;
    let b1 = y.m >> 16u;
    let b0 = y.m & 0xffffu;
    let mid = a1 * b0 + a0 * b1;
    let low = a0 * b0;
    let lo = low + (mid << 16u);
    let hi = a1 * b1 + (mid >> 16u) + select(0u, 1u, lo < low);
    // Product in [2^46, 2^48): keep its top 26 bits. a · b = P · 2^(ea + eb − 300).
    if (hi >= 0x8000u) {
        return round_pack((hi << 10u) | (lo >> 22u), (lo & 0x3fffffu) != 0u, x.e + y.e - 253);
    }
    return round_pack((hi << 11u) | (lo >> 21u), (lo & 0x1fffffu) != 0u, x.e + y.e - 254);
}

// llama.cpp's repetition penalty: l / penalty if l > 0, else l · penalty.
fn penalize(bits: u32) -> u32 {
    if (is_nan_bits(bits) || (bits & 0x7fffffffu) == 0u || bits == 0xff800000u) {
        return bits;
    }
    if ((bits & 0x80000000u) == 0u) {
        return div_rn(bits, p.penalty);
    }
    return 0x80000000u | mul_rn(bits, p.penalty);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = flat_group(wid, nwg);
    var state = vec2<f32>(LOWEST, 0.0);
    for (var e = 0u; e < E; e++) {
        let i = g * ITEMS + e * WG + lid;
        var key = 0u;
        if (i < p.vocab) {
            var bits = logits[i];
            if (p.has_penalty != 0u && ((penalized[i >> 5u] >> (i & 31u)) & 1u) != 0u) {
                bits = penalize(bits);
            }
            key = sort_key(bits);
            // NaN and -inf add nothing to Σ.
            if (p.inv_temp > 0.0 && key > 0x007fffffu) {
                state = softmax_add(state, bitcast<f32>(bits));
            }
        }
        item_key[e] = key;
        item_id[e] = i;
    }
    select_items(lid, g * REC);
    softmax_write(lid, state, g * REC);
}
#endif
