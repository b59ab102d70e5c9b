// Streaming read of a whole buffer, 16 bytes per load, for measuring the device's read bandwidth
// (the roofline decode is compared against). Each invocation folds what it read into one word it
// writes out, so the loads cannot be optimized away; there is no workgroup reduction (barriers
// would cost more than the reads on CPU drivers).
struct Params {
    // Length of the buffer in vec4<u32>.
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    var acc = vec4<u32>(0u);
    for (var i = gid.x; i < p.n; i += stride) {
        acc ^= src[i];
    }
    sink[gid.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
