// Streaming read of a whole buffer, 16 bytes per load, for measuring the device's read bandwidth
// (the roofline decode is compared against). Each workgroup folds what it read into one word so
// the loads cannot be optimized away.
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

var<workgroup> fold: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let stride = nwg.x * 256u;
    var acc = vec4<u32>(0u);
    for (var i = wid.x * 256u + lid; i < p.n; i += stride) {
        acc ^= src[i];
    }
    fold[lid] = acc.x ^ acc.y ^ acc.z ^ acc.w;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            fold[lid] ^= fold[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        sink[wid.x] = fold[0];
    }
}
