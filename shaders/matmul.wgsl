// Y[t][r] = Σ_c W[r][c] · X[t][c] for a batch of tokens, the prefill path (bindings in
// product_io.wgsl). Register-tiled: each invocation owns ROWS rows (per matrix) × TOKENS tokens
// and keeps all their sums in registers. Per 4 weights of a chunk it loads the TOKENS tokens' x
// values once and decodes each of its rows' 4 weights once, then does ROWS × TOKENS dot products:
// every load serves several products, where one row × 16 tokens needed 16 loads per 16.
//
// A workgroup takes 64 × ROWS rows (invocation i: rows i, i + 64, …; adjacent invocations,
// adjacent rows, so stores coalesce) of one tile of TOKENS tokens. All its invocations read the
// same x values at the same time: x's addresses depend on the workgroup only, so a GPU serves
// each load as one broadcast (Mesa 22.3's lavapipe still gathers it lane by lane), and without
// workgroup memory there are no barriers. With SWIGLU a second matrix (up) shares the pass, as
// in matvec: ROWS rows of each. With X_ROUNDED (int8 activations, integer formats only) x comes
// rounded per 16 values (round_int8.wgsl), and each half-chunk of a row is four packed integer
// dot products per token instead of sixteen multiply-adds (see `dot_quad_int8`).
const TOKENS: u32 = {{MATMUL_TOKENS}}u;
// Sums of one row: TOKENS / 4 vec4s.
const QUADS: u32 = TOKENS / 4u;
const ROWS: u32 = {{MATMUL_ROWS}}u;
const WG: u32 = 64u;

#if X_ROUNDED
// With int8 activations: the rounded 16-value block `blk` (of a token's cols / 16) of each of the
// tile's tokens, and its (d, Σq).
fn tile_xq(tok0: u32, blk: u32) -> array<vec4<u32>, TOKENS> {
    var xs: array<vec4<u32>, TOKENS>;
    for (var t = 0u; t < TOKENS; t++) {
        xs[t] = xq[min(tok0 + t, step.n_tokens - 1u) * (p.cols / 16u) + blk];
    }
    return xs;
}

fn tile_x_meta(tok0: u32, blk: u32) -> array<vec2<f32>, TOKENS> {
    var xm: array<vec2<f32>, TOKENS>;
    for (var t = 0u; t < TOKENS; t++) {
        xm[t] = x_meta[min(tok0 + t, step.n_tokens - 1u) * (p.cols / 16u) + blk];
    }
    return xm;
}

// One half-chunk of a row (its 16 weights' bytes w, (scale, min) sm, the format's offset and
// whether it has mins) times the tile's tokens 4q .. 4q + 3: four packed dot products per token,
// exact in integers, then scaled once (as matvec_chunk_int8.wgsl).
fn dot_quad_int8(
    w: vec4<u32>,
    sm: vec2<f32>,
    offset: i32,
    mins: bool,
    xs: ptr<function, array<vec4<u32>, TOKENS>>,
    xm: ptr<function, array<vec2<f32>, TOKENS>>,
    q: u32,
) -> vec4<f32> {
    var dots: vec4<i32>;
    var d: vec4<f32>;
    var sums: vec4<f32>;
    for (var k = 0u; k < 4u; k++) {
        let t = 4u * q + k;
        let x4 = (*xs)[t];
        dots[k] = (dot4I8Packed(w.x, x4.x) + dot4I8Packed(w.y, x4.y)) + (dot4I8Packed(w.z, x4.z) + dot4I8Packed(w.w, x4.w));
        d[k] = (*xm)[t].x;
        sums[k] = (*xm)[t].y;
    }
    // Σ (q − offset) · x = Σ q · x − offset · Σ x: integers below 2^24, exact in f32.
    var r = sm.x * (small_ints_to_f32(dots) - f32(offset) * sums);
    if (mins) {
        r += sm.y * sums;
    }
    return d * r;
}
#else
// The x vec4s at input position `at` (in vec4s) of the tile's tokens tok0, tok0 + 1, …; tokens
// past the batch repeat the last one.
fn tile_x(tok0: u32, at: u32) -> array<vec4<f32>, TOKENS> {
    var xs: array<vec4<f32>, TOKENS>;
    for (var t = 0u; t < TOKENS; t++) {
        xs[t] = x[min(tok0 + t, step.n_tokens - 1u) * (p.cols / 4u) + at];
    }
    return xs;
}

// w · x of the tile's tokens 4q .. 4q + 3.
fn dot_quad(w: vec4<f32>, xs: ptr<function, array<vec4<f32>, TOKENS>>, q: u32) -> vec4<f32> {
    let t = 4u * q;
    return vec4<f32>(dot(w, (*xs)[t]), dot(w, (*xs)[t + 1u]), dot(w, (*xs)[t + 2u]), dot(w, (*xs)[t + 3u]));
}
#endif

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.x * WG * ROWS + lid;
    let tok0 = wid.y * TOKENS;
    let n = step.n_tokens;
    // A uniform exit only, so that the loads of x stay in uniform control flow (where compilers
    // may load once for all lanes); invocations past the matrix compute its last row and store
    // nothing (Llama's matrices are whole tiles).
    if (tok0 >= n) {
        return;
    }
    // Rows past the matrix repeat its last row (their results are not stored).
    var rb_a: array<u32, ROWS>;
    var acc_a: array<vec4<f32>, {{MATMUL_ACC}}>;
#if SWIGLU
    var rb_b: array<u32, ROWS>;
    var acc_b: array<vec4<f32>, {{MATMUL_ACC}}>;
#endif
    for (var r = 0u; r < ROWS; r++) {
        let row = min(row0 + r * WG, p.rows - 1u);
        rb_a[r] = row * row_bytes_a(p.cols);
#if SWIGLU
        rb_b[r] = row * row_bytes_b(p.cols);
#endif
    }
    for (var c = 0u; c < p.cols / 32u; c++) {
        var ha: array<Head_a, ROWS>;
#if SWIGLU
        var hb: array<Head_b, ROWS>;
#endif
        for (var r = 0u; r < ROWS; r++) {
            ha[r] = chunk_a(rb_a[r], c);
#if SWIGLU
            hb[r] = chunk_b(rb_b[r], c);
#endif
        }
        // Steps of half a chunk with int8 activations, of 4 weights otherwise.
#if X_ROUNDED
        let steps = 2u;
#else
        let steps = 8u;
#endif
        for (var s = 0u; s < steps; s++) {
            matmul_step_a(&acc_a, &ha, tok0, c, s);
#if SWIGLU
            matmul_step_b(&acc_b, &hb, tok0, c, s);
#endif
        }
    }
    let tokens_here = min(TOKENS, n - tok0);
    for (var r = 0u; r < ROWS; r++) {
        let row = row0 + r * WG;
        if (row >= p.rows) {
            break;
        }
        for (var t = 0u; t < tokens_here; t++) {
            let a = acc_a[QUADS * r + t / 4u][t % 4u];
#if SWIGLU
            let b = acc_b[QUADS * r + t / 4u][t % 4u];
#else
            let b = 0.0;
#endif
            write_out((tok0 + t) * p.out_stride + p.row_offset + row, a, b);
        }
    }
}
