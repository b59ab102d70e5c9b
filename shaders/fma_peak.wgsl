// Peak multiply-add rate, the compute roofline prefill is compared against: f32, or with F16 the
// rate of f16 (where `shader-f16` exists; many GPUs pack two f16 multiply-adds per lane, so it
// is a separate roofline). Each invocation runs 8 independent vec4 FMA chains (enough
// independent work to hide FMA latency) for `iters` rounds, a uniform so the compiler cannot fold
// the loop, and writes one value so nothing is optimized away. 64 floating-point operations per
// invocation per round.
#if F16
alias real = f16;
#else
alias real = f32;
#endif

struct Params {
    iters: u32,
    // Multiplier and addend: the chains stay finite for any number of rounds.
    m: f32,
    c: f32,
    _pad: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> sink: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = real(f32(gid.x) * 1.0e-7);
    let m = vec4<real>(real(p.m));
    let c = vec4<real>(real(p.c));
    var a0 = vec4<real>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    sink[gid.x] = f32(dot((a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7), vec4<real>(1.0)));
}
