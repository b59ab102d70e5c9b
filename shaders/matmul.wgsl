// Y[t][r] = Σ_c W[r][c] · X[t][c] for a batch of tokens, the prefill path. A workgroup computes a
// tile of 32 rows × 16 tokens; each step dequantizes one 32-weight chunk of each of its rows into
// workgroup memory and multiplies it with the matching 32 inputs of each token. With SWIGLU a
// second matrix (up) shares the pass, as in matvec.
struct Params {
    rows: u32,
    cols: u32,
    row_offset: u32,
    // Length of one output row (one token's outputs).
    out_stride: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> weights_a: array<u32>;
#if SWIGLU
@group(0) @binding(5) var<storage, read> weights_b: array<u32>;
#endif

const TILE_ROWS: u32 = 32u;
const TILE_TOKENS: u32 = 16u;
// Rows are padded to 33 floats so the 32 lanes reading one column hit different banks.
const PITCH: u32 = 33u;

var<workgroup> tile_a: array<f32, 1056>;
#if SWIGLU
var<workgroup> tile_b: array<f32, 1056>;
#endif
var<workgroup> tile_x: array<f32, 512>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.x * TILE_ROWS;
    let tok0 = wid.y * TILE_TOKENS;
    let n = step.n_tokens;
    let r = lid % TILE_ROWS;
    // This invocation's two tokens: tg and tg + 8 within the tile.
    let tg = lid / TILE_ROWS;
    let chunks = p.cols / 32u;
    let rb_a = p.cols / BLOCK_ELEMS_a * BLOCK_BYTES_a;
#if SWIGLU
    let rb_b = p.cols / BLOCK_ELEMS_b * BLOCK_BYTES_b;
#endif
    var a0 = 0.0;
    var a1 = 0.0;
    var b0 = 0.0;
    var b1 = 0.0;
    for (var c = 0u; c < chunks; c++) {
        if (lid < TILE_ROWS) {
            let row = row0 + lid;
            if (row < p.rows) {
                let w = dequant32_a(row * rb_a, c);
                for (var i = 0u; i < 32u; i++) {
                    tile_a[lid * PITCH + i] = w[i];
                }
            }
        }
#if SWIGLU
        else if (lid < 2u * TILE_ROWS) {
            let row = row0 + lid - TILE_ROWS;
            if (row < p.rows) {
                let w = dequant32_b(row * rb_b, c);
                for (var i = 0u; i < 32u; i++) {
                    tile_b[(lid - TILE_ROWS) * PITCH + i] = w[i];
                }
            }
        }
#endif
        for (var e = lid; e < 512u; e += 256u) {
            let t = tok0 + e / 32u;
            var v = 0.0;
            if (t < n) {
                v = x[t * p.cols + c * 32u + e % 32u];
            }
            tile_x[e] = v;
        }
        workgroupBarrier();
        for (var i = 0u; i < 32u; i++) {
            let x0 = tile_x[tg * 32u + i];
            let x1 = tile_x[(tg + 8u) * 32u + i];
            let wa = tile_a[r * PITCH + i];
            a0 += wa * x0;
            a1 += wa * x1;
#if SWIGLU
            let wb = tile_b[r * PITCH + i];
            b0 += wb * x0;
            b1 += wb * x1;
#endif
        }
        workgroupBarrier();
    }
    let row = row0 + r;
    if (row < p.rows) {
        let t0 = tok0 + tg;
        if (t0 < n) {
            write_out(t0 * p.out_stride + p.row_offset + row, a0, b0);
        }
        if (t0 + 8u < n) {
            write_out((t0 + 8u) * p.out_stride + p.row_offset + row, a1, b1);
        }
    }
}
