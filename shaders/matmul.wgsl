// Y[t][r] = Σ_c W[r][c] · X[t][c] for a batch of tokens, the prefill path. A workgroup computes a
// tile of 32 rows × 16 tokens. Each step, every invocation dequantizes 4 weights of the tile's
// next 32 columns into workgroup memory, then each invocation accumulates one row for two tokens.
// With SWIGLU a second matrix (up) shares the pass, as in matvec.
struct Params {
    rows: u32,
    cols: u32,
    row_offset: u32,
    // Length of one output row (one token's outputs).
    out_stride: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> weights_a: array<u32>;
#if SWIGLU
@group(0) @binding(5) var<storage, read> weights_b: array<u32>;
#endif

const TILE_ROWS: u32 = 32u;
const TILE_TOKENS: u32 = 16u;
// Rows padded to 9 vec4 so that the 32 rows read in one step fall on different banks.
const PITCH: u32 = 9u;

var<workgroup> tile_a: array<vec4<f32>, 288>;
#if SWIGLU
var<workgroup> tile_b: array<vec4<f32>, 288>;
#endif
var<workgroup> tile_x: array<vec4<f32>, 128>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.x * TILE_ROWS;
    let tok0 = wid.y * TILE_TOKENS;
    let n = step.n_tokens;
    // Compute role: row r of the tile for tokens tg and tg + 8.
    let r = lid % TILE_ROWS;
    let tg = lid / TILE_ROWS;
    // Load role: weights 4·li .. 4·li + 3 of row lr.
    let lr = lid / 8u;
    let li = lid % 8u;
    let load_row = min(row0 + lr, p.rows - 1u);
    let chunks = p.cols / 32u;
    let rb_a = load_row * (p.cols / BLOCK_ELEMS_a * BLOCK_BYTES_a);
#if SWIGLU
    let rb_b = load_row * (p.cols / BLOCK_ELEMS_b * BLOCK_BYTES_b);
#endif
    var a0 = 0.0;
    var a1 = 0.0;
    var b0 = 0.0;
    var b1 = 0.0;
    for (var c = 0u; c < chunks; c++) {
        tile_a[lr * PITCH + li] = dequant4_a(chunk_a(rb_a, c), li);
#if SWIGLU
        tile_b[lr * PITCH + li] = dequant4_b(chunk_b(rb_b, c), li);
#endif
        if (lid < TILE_TOKENS * 8u) {
            let t = tok0 + lid / 8u;
            var v = vec4<f32>(0.0);
            if (t < n) {
                v = x[t * (p.cols / 4u) + c * 8u + lid % 8u];
            }
            tile_x[lid] = v;
        }
        workgroupBarrier();
        for (var i = 0u; i < 8u; i++) {
            let x0 = tile_x[tg * 8u + i];
            let x1 = tile_x[(tg + 8u) * 8u + i];
            let wa = tile_a[r * PITCH + i];
            a0 += dot(wa, x0);
            a1 += dot(wa, x1);
#if SWIGLU
            let wb = tile_b[r * PITCH + i];
            b0 += dot(wb, x0);
            b1 += dot(wb, x1);
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
