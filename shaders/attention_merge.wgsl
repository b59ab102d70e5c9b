// The second step of split decode attention (attention.wgsl): for one query head, combine the
// key ranges' unnormalized sums, each rescaled from its own running max to the overall one.
@group(0) @binding(5) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> partials: array<vec2<f32>>;

const KEYS_PER_SPLIT: u32 = {{ATTENTION_KEYS_PER_SPLIT}}u;
const MAX_SPLITS: u32 = {{ATTENTION_MAX_SPLITS}}u;
const NEG: f32 = -3.0e38;

// How many ranges the decoded token's keys were split into (attention::decode_splits in Rust).
fn decode_splits(n_keys: u32) -> u32 {
    return min((n_keys + KEYS_PER_SPLIT - 1u) / KEYS_PER_SPLIT, MAX_SPLITS);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let half = p.head_dim / 2u;
    let splits = decode_splits(step.pos0 + 1u);
    // Range s's record for this head: (max, denominator), then the sum's pairs.
    let record = p.n_heads * (half + 1u);
    let first = h * (half + 1u);
    var mx = NEG;
    for (var s = 0u; s < splits; s++) {
        mx = max(mx, partials[first + s * record].x);
    }
    var l = 0.0;
    for (var s = 0u; s < splits; s++) {
        let ml = partials[first + s * record];
        l += ml.y * exp(ml.x - mx);
    }
    for (var j = lid; j < half; j += 64u) {
        var a = vec2<f32>(0.0);
        for (var s = 0u; s < splits; s++) {
            let w = exp(partials[first + s * record].x - mx);
            a += w * partials[first + s * record + 1u + j];
        }
        out[h * half + j] = a / l;
    }
}
