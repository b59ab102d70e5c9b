// What the matrix products (matvec, matmul) read and write: W (`rows × cols` of this part of a
// matrix split by rows, any GGUF format) times x, into y through an epilogue; with SWIGLU, a
// second matrix (up) split the same way. The decode-only fusions (matvec) add: NORM_NEXT, the
// next RMSNorm's weighting and sums of squares written to `next_x` (its weights in the model's
// `consts` buffer); NORM, reading such an x; and QKV, three matrices (q, k, v) in one pass with
// RoPE (its table in `consts`) and the KV-cache append as the epilogue. CONSTS is on with
// NORM_NEXT or QKV (shader.rs sets it). With X_ROUNDED (prefill with int8 activations) x comes
// rounded, as bytes and scales.
struct Params {
    rows: u32,
    cols: u32,
    // Output index of this part's first row (big matrices are split by rows).
    row_offset: u32,
    // Length of one token's output row (the batched product's token stride).
    out_stride: u32,
    // NORM_NEXT: the next norm's weights' first vec4 in `consts`. NORM: epsilon.
    norm_offset: u32,
    eps: f32,
    // QKV: rows of q and of each of k and v, the RoPE table's first vec4 in `consts`, head size.
    q_rows: u32,
    kv_rows: u32,
    table_offset: u32,
    head_dim: u32,
    // NORM_NEXT: this part's first slot for its workgroups' sums of squares. NORM: how many
    // slots x has.
    slot0: u32,
    slots: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
#if X_ROUNDED
// x rounded to int8 per 16 values (round_int8.wgsl): each block's bytes, and its (d, Σq).
@group(0) @binding(2) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(11) var<storage, read> x_meta: array<vec2<f32>>;
#else
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> weights_a: array<vec4<u32>>;
#if SWIGLU
@group(0) @binding(5) var<storage, read> weights_b: array<vec4<u32>>;
#endif
#if QKV
@group(0) @binding(5) var<storage, read> weights_b: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> weights_c: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read_write> k_cache: array<KvPair>;
@group(0) @binding(9) var<storage, read_write> v_cache: array<KvPair>;
#endif
#if CONSTS
@group(0) @binding(7) var<storage, read> consts: array<vec4<f32>>;
#endif
#if NORM_NEXT
@group(0) @binding(10) var<storage, read_write> next_x: array<f32>;
#endif
