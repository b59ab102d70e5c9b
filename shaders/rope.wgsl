// RoPE on q and k (llama.cpp's GGUF llama convention: adjacent pairs rotate), then k and v go into
// the KV cache at their positions (the batched, prefill path; decode does this in matvec's QKV). One invocation per pair; the cos/sin table, computed on the CPU
// in f64 with any Llama-3.1 frequency factors, has one row of head_dim/2 pairs per position.
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    // The table's first pair in its buffer (the model keeps it after the norm weights).
    table_offset: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> q: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> k: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> v: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> rope_table: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<KvPair>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<KvPair>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    let pos = step.pos0 + t;
    let half = p.head_dim / 2u;
    let q_pairs = p.n_heads * half;
    let kv_pairs = p.n_kv_heads * half;
    let i = wid.x * 64u + lid;
    if (i < q_pairs) {
        q[t * q_pairs + i] = rope_rotate(q[t * q_pairs + i], rope_table[p.table_offset + pos * half + i % half]);
    } else if (i < q_pairs + kv_pairs) {
        let j = i - q_pairs;
        k_cache[pos * kv_pairs + j] = kv_pack(rope_rotate(k[t * kv_pairs + j], rope_table[p.table_offset + pos * half + j % half]));
    } else if (i < q_pairs + 2u * kv_pairs) {
        let j = i - q_pairs - kv_pairs;
        v_cache[pos * kv_pairs + j] = kv_pack(v[t * kv_pairs + j]);
    }
}
