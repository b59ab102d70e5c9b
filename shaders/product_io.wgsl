// What the matrix products (matvec, matmul) read and write: W (`rows × cols` of this part of a
// matrix split by rows, any GGUF format) times x, into y through an epilogue; with SWIGLU, a
// second matrix (up) split the same way.
struct Params {
    rows: u32,
    cols: u32,
    // Output index of this part's first row (big matrices are split by rows).
    row_offset: u32,
    // Length of one token's output row (the batched product's token stride).
    out_stride: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> weights_a: array<u32>;
#if SWIGLU
@group(0) @binding(5) var<storage, read> weights_b: array<u32>;
#endif
