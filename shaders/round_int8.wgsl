// x rounded to int8 per 16 values (int8.wgsl) once per batch, for the prefill products that
// multiply it with packed integer dot products (X_ROUNDED in matmul.wgsl): for each token and each
// 16-value block of its `cols` values, the 16 bytes q and (d, Σq).
struct Params {
    cols: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> xq: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> x_meta: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blocks = p.cols / 16u;
    let b = wid.x * 64u + lid;
    let t = wid.y;
    if (b >= blocks || t >= step.n_tokens) {
        return;
    }
    let i = t * blocks + b;
    let r = x_int8(x[4u * i], x[4u * i + 1u], x[4u * i + 2u], x[4u * i + 3u]);
    xq[i] = r.q;
    x_meta[i] = vec2<f32>(r.d, f32(r.sum));
}
