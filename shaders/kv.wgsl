// How the KV cache stores a pair of adjacent values: f32, native f16 (shader-f16), or two f16
// packed into a u32 with pack2x16float, which needs no shader-f16.
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
