// Y[t][r] = Σ_c W[r][c] · X[t][c] for a batch of tokens on cooperative matrices (tensor cores):
// the prefill path where the adapter multiplies S × S f16 matrices into f32 ones, S = 16 (GPUs)
// or 8 (lavapipe) (GpuOptions::coop_matrix; bindings in product_io.wgsl). The matrix unit does
// the multiply-adds; the invocations only decode weights, convert x to f16 and stage both in
// workgroup memory.
//
// A workgroup takes TILE_ROWS rows (of each matrix; with SWIGLU gate and up) × 32 tokens: TILES
// output tiles of S × S, each a subgroup's (at most 2 per subgroup: context.rs checks that the
// subgroups are small enough). Per stage of 64 columns (2 chunks of the format, 4 halves of 16
// consecutive x values each, in the format's order: x4_a), every invocation decodes one half
// chunk of one row into `w_stage` and converts 16 x values of one token into `x_stage`; then each
// subgroup multiplies its tiles' pieces along the stage. The results go through workgroup
// memory to the epilogue (write_out), which needs them element by element.
//
// Rounding: each weight (as decoded in f32) and each x value are rounded to f16 once; products
// and sums are f32. With SWIGLU both matrices order a chunk's x values alike (ops/matmul.rs
// checks).
const S: u32 = {{COOP}}u;
const TILE_ROWS: u32 = {{COOP_ROWS}}u;
const TOKENS: u32 = 32u;
const STAGE: u32 = 64u;
#if SWIGLU
const MATRICES: u32 = 2u;
#else
const MATRICES: u32 = 1u;
#endif
const ROW_TILES: u32 = TILE_ROWS / S;
const TOKEN_TILES: u32 = TOKENS / S;
// Tiles of one matrix, and of all.
const MATRIX_TILES: u32 = ROW_TILES * TOKEN_TILES;
const TILES: u32 = MATRICES * MATRIX_TILES;

// Weights, row-major: matrix m's row r at (m · TILE_ROWS + r) · STAGE.
var<workgroup> w_stage: array<f16, 2048>;
// x, token-major: token t at t · STAGE (column t of the 64 × 32 right-hand matrix).
var<workgroup> x_stage: array<f16, 2048>;
// The results, tile by tile, column-major (token-major): tile i's (r, t) at S² i + S t + r.
var<workgroup> y_stage: array<f32, 1024>;

// This invocation's share of a stage starting at chunk c: half `half` of chunk c + (item ≫ 1 & 1)
// of one row, and 16 x values of one token.
fn stage(lid: u32, c0: u32, row0: u32, tok0: u32) {
    let chunks = p.cols / 32u;
    // Weights: items (matrix, row, chunk, half), 128 in all.
    let half = lid & 1u;
    let cc = (lid >> 1u) & 1u;
    let r = (lid >> 2u) % TILE_ROWS;
    let m = (lid >> 2u) / TILE_ROWS;
    let c = min(c0 + cc, chunks - 1u);
    let row = min(row0 + r, p.rows - 1u);
    let at = (m * TILE_ROWS + r) * STAGE + (2u * cc + half) * 16u;
    var w: array<vec4<f32>, 4>;
#if SWIGLU
    if (m == 1u) {
        let h = chunk_b(row * row_bytes_b(p.cols), c);
        for (var j = 0u; j < 4u; j++) {
            w[j] = dequant4_b(h, 4u * half + j);
        }
    } else {
#endif
        let h = chunk_a(row * row_bytes_a(p.cols), c);
        for (var j = 0u; j < 4u; j++) {
            w[j] = dequant4_a(h, 4u * half + j);
        }
#if SWIGLU
    }
#endif
    // Columns past the matrix (a partial last stage) are 0 in x below, so any weight does.
    for (var j = 0u; j < 4u; j++) {
        let v = vec4<f16>(w[j]);
        for (var e = 0u; e < 4u; e++) {
            w_stage[at + 4u * j + e] = v[e];
        }
    }
    // x: items (token, chunk, half), 128 in all.
    let t = lid >> 2u;
    let tok = min(tok0 + t, step.n_tokens - 1u);
    let xc = c0 + cc;
    let xat = t * STAGE + (2u * cc + half) * 16u;
    for (var j = 0u; j < 4u; j++) {
        var v = vec4<f32>(0.0);
        if (xc < chunks) {
            v = x[tok * (p.cols / 4u) + x4_a(xc, 4u * half + j)];
        }
        let h = vec4<f16>(v);
        for (var e = 0u; e < 4u; e++) {
            x_stage[xat + 4u * j + e] = h[e];
        }
    }
}

// Tile i's share of the stage, added to acc. Tile i is matrix i / MATRIX_TILES, row tile
// (i / TOKEN_TILES) % ROW_TILES, token tile i % TOKEN_TILES.
fn multiply(i: u32, acc: coop_mat{{COOP}}x{{COOP}}<f32, C>) -> coop_mat{{COOP}}x{{COOP}}<f32, C> {
    var c = acc;
    let w0 = ((i / MATRIX_TILES) * TILE_ROWS + S * ((i / TOKEN_TILES) % ROW_TILES)) * STAGE;
    let x0 = S * (i % TOKEN_TILES) * STAGE;
    for (var k = 0u; k < STAGE; k += S) {
        let a = coopLoadT<coop_mat{{COOP}}x{{COOP}}<f16, A>>(&w_stage[w0 + k], STAGE);
        let b = coopLoad<coop_mat{{COOP}}x{{COOP}}<f16, B>>(&x_stage[x0 + k], STAGE);
        c = coopMultiplyAdd(a, b, c);
    }
    return c;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) subgroups: u32) {
    let row0 = wid.x * TILE_ROWS;
    let tok0 = wid.y * TOKENS;
    let n = step.n_tokens;
    if (tok0 >= n) {
        return;
    }
    // A subgroup's tiles: sg and sg + subgroups (where there are fewer subgroups than tiles).
    let first = sg;
    let second = sg + subgroups;
    var acc0: coop_mat{{COOP}}x{{COOP}}<f32, C>;
    var acc1: coop_mat{{COOP}}x{{COOP}}<f32, C>;
    for (var c0 = 0u; c0 < p.cols / 32u; c0 += STAGE / 32u) {
        workgroupBarrier();
        stage(lid, c0, row0, tok0);
        workgroupBarrier();
        if (first < TILES) {
            acc0 = multiply(first, acc0);
        }
        if (second < TILES) {
            acc1 = multiply(second, acc1);
        }
    }
    if (first < TILES) {
        coopStore(acc0, &y_stage[S * S * first], S);
    }
    if (second < TILES) {
        coopStore(acc1, &y_stage[S * S * second], S);
    }
    workgroupBarrier();
    // The epilogue: adjacent invocations, adjacent rows.
    let rows_here = min(TILE_ROWS, p.rows - min(row0, p.rows));
    let tokens_here = min(TOKENS, n - tok0);
    for (var k = lid; k < TILE_ROWS * TOKENS; k += 128u) {
        let r = k % TILE_ROWS;
        let t = k / TILE_ROWS;
        if (r < rows_here && t < tokens_here) {
            let at = S * (t % S) + r % S;
            let tile = (r / S) * TOKEN_TILES + t / S;
            let a = y_stage[S * S * tile + at];
#if SWIGLU
            let b = y_stage[S * S * (tile + MATRIX_TILES) + at];
#else
            let b = 0.0;
#endif
            write_out((tok0 + t) * p.out_stride + p.row_offset + row0 + r, a, b);
        }
    }
}
