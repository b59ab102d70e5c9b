// The parameters both attention steps read (attention.wgsl, attention_merge.wgsl).
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(1) var<uniform> p: Params;
