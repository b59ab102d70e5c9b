// y = x / rms(x) · w, one workgroup per token (along y): prefill, and decode unless it folds the
// norm into the matrix products around it (matvec's NORM_NEXT and NORM).
struct Params {
    dim: u32,
    eps: f32,
    // Where the weights start in `w` (the model keeps all norm weights in one buffer).
    w_offset: u32,
    _pad: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = x[t * p.dim + i];
        ss += v * v;
    }
    partial[lid] = ss;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(partial[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 256u) {
        y[t * p.dim + i] = x[t * p.dim + i] * scale * w[p.w_offset + i];
    }
}
