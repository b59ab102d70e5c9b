// Token embeddings: row `tokens[t]` of the embedding table, dequantized, into x[t]. The table may
// be split by rows over several buffers; this dispatch serves the tokens whose row lies in its part.
struct Params {
    first_row: u32,
    rows: u32,
    cols: u32,
    _pad: u32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> weights_a: array<vec4<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    let token = tokens[t];
    if (token < p.first_row || token - p.first_row >= p.rows) {
        return;
    }
    let row_byte = (token - p.first_row) * row_bytes_a(p.cols);
    // 64 invocations take 4 weights each.
    for (var e = lid; e < p.cols / 4u; e += 64u) {
        let c = e / 8u;
        let i = e % 8u;
        y[t * (p.cols / 4u) + x4_a(c, i)] = dequant4_a(chunk_a(row_byte, c), i);
    }
}
