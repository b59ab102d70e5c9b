// How the KV cache stores a pair of adjacent values: f32, native f16 (shader-f16), or two f16
// packed into a u32 with pack2x16float, which needs no shader-f16. Attention reads keys 16 bytes
// at a time, KV_QUAD pairs (`kv_quad_pair` takes pair k of such a piece; the engine requires
// head sizes that are multiples of 8, so a head's pieces are whole).
#if KV_F32
alias KvPair = vec2<f32>;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}
fn kv_unpack(w: KvPair) -> vec2<f32> {
    return w;
}
#elif KV_F16
alias KvPair = vec2<f16>;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return vec2<f16>(v);
}
fn kv_unpack(w: KvPair) -> vec2<f32> {
    return vec2<f32>(w);
}
#else
alias KvPair = u32;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return pack2x16float(v);
}
fn kv_unpack(w: KvPair) -> vec2<f32> {
    return unpack2x16float(w);
}
#endif

#if KV_F32
const KV_QUAD: u32 = 2u;
fn kv_quad_pair(q: vec4<u32>, k: u32) -> vec2<f32> {
    let f = bitcast<vec4<f32>>(q);
    return select(f.xy, f.zw, k == 1u);
}
#else
// Both 16-bit formats lay a pair out as pack2x16float does (low half first). (Reading a native
// f16 pair with bitcast<vec2<f16>> instead failed the attention test on lavapipe: not looked into.)
const KV_QUAD: u32 = 4u;
fn kv_quad_pair(q: vec4<u32>, k: u32) -> vec2<f32> {
    return unpack2x16float(q[k]);
}
#endif
