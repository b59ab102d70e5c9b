//! Each kernel against the CPU reference on fresh random inputs, with sizes that are not
//! multiples of the workgroup sizes, and big matrices split over several buffers.

mod common;

use carebot_gpu::GpuOptions;
use carebot_gpu::ops::KvCache;
use carebot_gpu::ops::attention::{Attention, decode_splits, heads_per_group, partials_bytes};
use carebot_gpu::ops::embed::embed;
use carebot_gpu::ops::matmul::{
    Epilogue, MatMul, MatvecRows, NextNorm, Norm, PrefillTile, Product, ProductInput, coop_matrix_product,
    int8_activations, norm_slots,
};
use carebot_gpu::ops::qkv::QkvRopeStore;
use carebot_gpu::ops::rms_norm::rms_norm;
use carebot_gpu::ops::rope::{RopeAndStore, RopeTable, rope_table};
use carebot_gpu::ops::round_int8::{round_int8, rounded_bytes};
use carebot_gpu::shader::KvStorage;
use carebot_gpu::weights::GpuMatrix;
use carebot_model::config::LlamaConfig;
use carebot_model::quant::{self, GgmlType};
use carebot_model::reference::{self, QMatrix};
use carebot_model::rng::SplitMix64;
use common::*;
use half::f16;

/// Every weight format the model crate reads; the GPU engine must read them all.
const TYPES: [GgmlType; 11] = carebot_model::quant::SUPPORTED_TYPES;

/// A random `rows × cols` matrix in format `ty` (rows with different magnitudes and offsets, so
/// scales and mins vary).
fn random_matrix(rng: &mut SplitMix64, ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
    let mut values = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = 0.05 + 2.0 * rng.next_f32();
        let offset = 0.3 * rng.next_signed();
        values.extend((0..cols).map(|_| offset + scale * rng.next_signed()));
    }
    QMatrix { ty, rows, cols, data: quant::quantize(ty, &values).unwrap() }
}

/// The product of `w` by the kernel given under `epilogue`, `up` being the up matrix of SwiGLU.
fn product_of<'a>(
    w: &'a GpuMatrix,
    up: Option<&'a GpuMatrix>,
    x: impl Into<ProductInput<'a>>,
    y: &'a wgpu::Buffer,
    epilogue: Epilogue<'a>,
    kernel: Product,
) -> MatMul<'a> {
    let product = MatMul::new(w, x, y, kernel);
    match (epilogue, up) {
        (Epilogue::SwiGlu, Some(up)) => product.swiglu(up),
        _ => product.epilogue(epilogue),
    }
}

fn gpu_matrix(ctx: &carebot_gpu::GpuContext, m: &QMatrix, per_part: u32) -> GpuMatrix {
    let g = GpuMatrix::allocate(ctx, "test matrix", m.ty, m.rows as u32, m.cols as u32, per_part).unwrap();
    g.write(ctx, &m.data);
    g
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn embedding_gather_dequantizes_every_weight_type_like_the_cpu() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("embed"));
    // Two 256-value blocks per row natively, one in the browser.
    let (rows, cols) = if WEB { (37, 256) } else { (37, 512) };
    for ty in TYPES {
        let m = random_matrix(&mut rng, ty, rows, cols);
        // 5 rows per buffer: the table is split into 8 parts, the last one short.
        let g = gpu_matrix(&ctx, &m, 5);
        assert_eq!(g.parts.len(), 8);
        let mut tokens: Vec<u32> = (0..21).map(|_| (rng.next_u64() % rows as u64) as u32).collect();
        tokens.extend([0, rows as u32 - 1, 4, 5]);
        let tok = common::upload_bytes(&ctx, bytemuck::cast_slice(&tokens));
        let out = ctx.storage("embeddings", (tokens.len() * cols * 4) as u64).unwrap();
        run(&ctx, &embed(&ctx, &g, &tok, &out), tokens.len() as u32);
        let got = download(&ctx, &out, tokens.len() * cols).await;
        let mut want = vec![0f32; tokens.len() * cols];
        for (t, &tok) in tokens.iter().enumerate() {
            m.row(tok as usize, &mut want[t * cols..(t + 1) * cols]);
        }
        let err = rel_err(&got, &want);
        assert!(err <= 1e-6, "{}: relative error {err}", ty.name());
    }
}

/// The matrices of the product tests' i-th weight type: W (`TYPES[i]`) and, for SwiGLU, `up` of
/// another type, on the CPU and on the GPU, with their row count. 77 rows in parts of 30 (split
/// bindings, partial tiles) or 291 rows in one part: full prefill tiles (256 rows, 128 with
/// SwiGLU) and matvec groups (8–64 rows) then a partial one.
fn product_matrices(
    ctx: &carebot_gpu::GpuContext,
    rng: &mut SplitMix64,
    i: usize,
    cols: usize,
) -> (usize, QMatrix, QMatrix, GpuMatrix, GpuMatrix) {
    let (rows, per_part) = [(77, 30), (291, 291)][i % 2];
    let w = random_matrix(rng, TYPES[i], rows, cols);
    let up = random_matrix(rng, TYPES[(i + 3) % TYPES.len()], rows, cols);
    let (gw, gup) = (gpu_matrix(ctx, &w, per_part), gpu_matrix(ctx, &up, per_part));
    (rows, w, up, gw, gup)
}

/// The kernels the product tests run the i-th weight type through: the default matvec row count
/// and prefill tile, and one other of each (each other one on some of the types).
fn products_for_type(i: usize) -> [Product; 4] {
    let others = &PrefillTile::ALL[1..];
    [
        Product::LastToken(MatvecRows::default()),
        Product::LastToken(MatvecRows::ALL[1 + i % 3]),
        Product::Batch(PrefillTile::default()),
        Product::Batch(others[i / 2 % others.len()]),
    ]
}

/// The CPU reference of a product with its epilogue: W x stored, added to `y0`, or with SwiGLU
/// silu(W x) · (up x).
fn cpu_product(w: &QMatrix, up: &QMatrix, x: &[f32], y0: &[f32], epilogue: Epilogue) -> Vec<f32> {
    let mut a = vec![0f32; y0.len()];
    w.matmul(x, &mut a);
    match epilogue {
        Epilogue::Store => {}
        Epilogue::Add | Epilogue::AddThenNorm(_) => a.iter_mut().zip(y0).for_each(|(a, b)| *a += b),
        Epilogue::SwiGlu => {
            let mut u = vec![0f32; y0.len()];
            up.matmul(x, &mut u);
            a.iter_mut().zip(&u).for_each(|(g, u)| *g = reference::silu(*g) * u);
        }
    }
    a
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn matrix_products_match_the_cpu_for_every_type_and_epilogue() {
    for ctx in with_and_without_subgroups(GpuOptions::default()).await {
        note(&format!("matvec reductions with subgroup operations: {}", ctx.subgroups));
        let mut rng = SplitMix64::new(seed("matmul"));
        let cols = if WEB { 256 } else { 512 };
        // Decode (1 token), and batches of one partial / two full and a partial 8-token tile.
        let batches: &[usize] = if WEB { &[1, 17] } else { &[1, 5, 19] };
        for i in 0..TYPES.len() {
            let (rows, w, up, gw, gup) = product_matrices(&ctx, &mut rng, i, cols);
            for &n in batches {
                for product in products_for_type(i) {
                    if n > 1 && matches!(product, Product::LastToken(_)) {
                        continue;
                    }
                    for epilogue in [Epilogue::Store, Epilogue::Add, Epilogue::SwiGlu] {
                        let x = random(&mut rng, n * cols, -1.0, 1.0);
                        let y0 = random(&mut rng, n * rows, -4.0, 4.0);
                        let (xb, yb) = (upload(&ctx, &x), upload(&ctx, &y0));
                        let s = step(&ctx, n as u32, 0);
                        let upm = matches!(epilogue, Epilogue::SwiGlu).then_some(&gup);
                        run(&ctx, &product_of(&gw, upm, &xb, &yb, epilogue, product).dispatches(&ctx, &s), n as u32);
                        let got = download(&ctx, &yb, n * rows).await;
                        let want = cpu_product(&w, &up, &x, &y0, epilogue);
                        // f32 sums in another order: ~1e-6 here (a wrong weight decode gives ≥ 1e-2).
                        let err = rel_err(&got, &want);
                        assert!(err <= 1e-5, "{} {epilogue:?} n={n} {product:?}: relative error {err}", w.ty.name());
                    }
                }
            }
        }
    }
}

/// The products with int8 activations (`GpuOptions::int8_dot`), decode and prefill: x rounded per
/// 16 values (by the matrix–vector kernel itself, or by `round_int8` before the matrix–matrix
/// kernel) and multiplied by packed integer dot products, where every matrix of the product has
/// integer quants. They must match the CPU product of the same rounded x (sums in another order,
/// and now and then a value that rounds the other way within an f32 rounding of a tie), and be as
/// far from the unrounded product as the rounding makes them.
#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn int8_activation_products_match_the_cpu_with_x_rounded_alike() {
    for ctx in with_and_without_subgroups(GpuOptions { int8_dot: true, ..Default::default() }).await {
        if !ctx.int8_dot {
            note("no packed_4x8_integer_dot_product in this WGSL implementation: int8 activations untested here");
            return;
        }
        note(&format!("int8 activations on {}", ctx.describe()));
        int8_products_match_the_cpu(&ctx).await;
    }
}

async fn int8_products_match_the_cpu(ctx: &carebot_gpu::GpuContext) {
    let mut rng = SplitMix64::new(seed("matvec-int8"));
    let batches: &[usize] = if WEB { &[1, 11] } else { &[1, 5, 19] };
    // The matrix–vector kernel rounds x 4096 values at a time: wide rows take two such segments,
    // the second partial.
    let sizes = [(if WEB { 256 } else { 512 }, batches), (4096 + 256, &[1][..])];
    for ((cols, batches), i) in sizes.into_iter().flat_map(|size| (0..TYPES.len()).map(move |i| (size, i))) {
        let (rows, w, up, gw, gup) = product_matrices(ctx, &mut rng, i, cols);
        let ty = w.ty;
        for &n in batches {
            for product in products_for_type(i) {
                if n > 1 && matches!(product, Product::LastToken(_)) {
                    continue;
                }
                for epilogue in [Epilogue::Store, Epilogue::Add, Epilogue::SwiGlu] {
                    let upm = matches!(epilogue, Epilogue::SwiGlu).then_some(&gup);
                    let types: Vec<GgmlType> = std::iter::once(ty).chain(upm.map(|u| u.ty)).collect();
                    let rounds = int8_activations(ctx, &types);
                    // Values of very different sizes, as activations have: each 16-value block
                    // gets its own scale.
                    let mut x: Vec<f32> =
                        (0..n * cols).map(|_| rng.next_signed() * (0.01 + 8.0 * rng.next_f32().powi(4))).collect();
                    away_from_rounding_ties(&mut x);
                    let y0 = random(&mut rng, n * rows, -4.0, 4.0);
                    let (xb, yb) = (upload(ctx, &x), upload(ctx, &y0));
                    let s = step(ctx, n as u32, 0);
                    let (q_bytes, meta_bytes) = rounded_bytes(n as u64, cols as u64);
                    let (xq, meta) = (ctx.storage("xq", q_bytes).unwrap(), ctx.storage("x meta", meta_bytes).unwrap());
                    let mut dispatches = Vec::new();
                    let input = match product {
                        Product::Batch(_) if rounds => {
                            dispatches.push(round_int8(ctx, &s, &xb, &xq, &meta, cols as u32));
                            ProductInput::Int8 { q: &xq, meta: &meta }
                        }
                        _ => ProductInput::F32(&xb),
                    };
                    dispatches.extend(product_of(&gw, upm, input, &yb, epilogue, product).dispatches(ctx, &s));
                    run(ctx, &dispatches, n as u32);
                    let got = download(ctx, &yb, n * rows).await;
                    let want = |round: bool| {
                        let mut x = x.clone();
                        if round {
                            quant::round_to_int8_blocks(&mut x);
                        }
                        cpu_product(&w, &up, &x, &y0, epilogue)
                    };
                    let (mirror, plain) = (rel_err(&got, &want(true)), rel_err(&got, &want(false)));
                    let what = format!(
                        "{} {epilogue:?} n={n} cols={cols} {product:?}: {mirror:.1e} (unrounded {plain:.1e})",
                        ty.name()
                    );
                    if rounds {
                        assert!(mirror <= 1e-4, "{what}");
                        assert!(plain >= 10.0 * mirror && plain >= 1e-4, "x was not rounded: {what}");
                    } else {
                        assert!(plain <= 1e-5, "x was rounded for a float format: {what}");
                    }
                }
            }
        }
    }
}

/// The prefill product on cooperative matrices (`GpuOptions::coop_matrix`, where the adapter
/// multiplies 16 × 16 f16 matrices): it must match the CPU product of the same weights and x
/// rounded to f16 (as the kernel stages them), for every format and epilogue, with batches that
/// fill one 32-token tile partly and two tiles, and row counts that are not multiples of 16.
#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn coop_matrix_products_match_the_cpu_at_f16() {
    let Some(ctx) = context(GpuOptions { coop_matrix: true, ..Default::default() }).await else { return };
    if ctx.coop_matrix.is_none() {
        note("no f16 cooperative matrices on this adapter: the cooperative-matrix product untested here");
        return;
    }
    note(&format!("cooperative matrices on {}", ctx.describe()));
    let mut rng = SplitMix64::new(seed("matmul-coop"));
    let cols = 512;
    let to_f16 = |v: &[f32]| v.iter().map(|&v| f16::from_f32(v).to_f32()).collect::<Vec<f32>>();
    // The weights as the kernel stages them: decoded, then rounded to f16.
    let rounded = |m: &QMatrix| {
        let mut w = vec![0f32; m.rows * m.cols];
        for (r, row) in w.chunks_exact_mut(m.cols).enumerate() {
            m.row(r, row);
        }
        let data = to_f16(&w).iter().flat_map(|v| v.to_le_bytes()).collect();
        QMatrix { ty: GgmlType::F32, rows: m.rows, cols: m.cols, data }
    };
    for i in 0..TYPES.len() {
        let (rows, w, up, gw, gup) = product_matrices(&ctx, &mut rng, i, cols);
        let (w16, up16) = (rounded(&w), rounded(&up));
        for n in [1, 5, 37] {
            for epilogue in [Epilogue::Store, Epilogue::Add, Epilogue::SwiGlu] {
                let upm = matches!(epilogue, Epilogue::SwiGlu).then_some(&gup);
                let types: Vec<GgmlType> = std::iter::once(w.ty).chain(upm.map(|u| u.ty)).collect();
                if !coop_matrix_product(&ctx, &types) {
                    continue;
                }
                let x = random(&mut rng, n * cols, -2.0, 2.0);
                let y0 = random(&mut rng, n * rows, -4.0, 4.0);
                let (xb, yb) = (upload(&ctx, &x), upload(&ctx, &y0));
                let s = step(&ctx, n as u32, 0);
                run(&ctx, &product_of(&gw, upm, &xb, &yb, epilogue, Product::Coop).dispatches(&ctx, &s), n as u32);
                let got = download(&ctx, &yb, n * rows).await;
                let mirror = rel_err(&got, &cpu_product(&w16, &up16, &to_f16(&x), &y0, epilogue));
                let plain = rel_err(&got, &cpu_product(&w, &up, &x, &y0, epilogue));
                let what = format!("{} {epilogue:?} n={n}: {mirror:.1e} (in f32 {plain:.1e})", w.ty.name());
                assert!(mirror <= 1e-5, "{what}");
                assert!(plain <= 1e-2, "{what}");
            }
        }
    }
}

/// Moves each value that lies within 1e-3 of a step of a rounding tie of its int8 block (x / d
/// at k + 1/2) a hundredth of a step away from it, so that the GPU and the CPU, whose x / d may
/// differ in the last bits (WGSL division is exact only to 2.5 ulp), round every value alike.
/// Rounding at ties is `rounding_x_to_int8_matches_the_cpu`'s subject.
fn away_from_rounding_ties(x: &mut [f32]) {
    for block in x.chunks_mut(16) {
        let d = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for v in block.iter_mut().filter(|v| v.abs() < 127.0 * d) {
            if ((*v / d).abs().fract() - 0.5).abs() < 1e-3 {
                *v -= 0.01 * d * v.signum();
            }
        }
    }
}

/// The prefill's rounding kernel gives the CPU's rounding: the same scales bit for bit, and the
/// same integers but where a value lies within an f32 rounding of a tie.
#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn rounding_x_to_int8_matches_the_cpu() {
    let Some(ctx) = context(GpuOptions { int8_dot: true, ..Default::default() }).await else { return };
    if !ctx.int8_dot {
        note("no packed_4x8_integer_dot_product in this WGSL implementation: int8 rounding untested here");
        return;
    }
    let mut rng = SplitMix64::new(seed("round-int8"));
    // 13 tokens of 1072 values (67 blocks, more than one workgroup), magnitudes 1e-4 to 1e4, a
    // block of zeros, a block of one value and its negation (ties: ±127 exactly).
    let (n, cols) = (13usize, 1072usize);
    let mut x: Vec<f32> = (0..n * cols).map(|i| rng.next_signed() * 10f32.powi((i / 16 % 9) as i32 - 4)).collect();
    x[16..32].fill(0.0);
    x[32..48].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 3.5 } else { -3.5 });
    let xb = upload(&ctx, &x);
    let s = step(&ctx, n as u32, 0);
    let (q_bytes, meta_bytes) = rounded_bytes(n as u64, cols as u64);
    let (xq, meta) = (ctx.storage("xq", q_bytes).unwrap(), ctx.storage("x meta", meta_bytes).unwrap());
    run(&ctx, &[round_int8(&ctx, &s, &xb, &xq, &meta, cols as u32)], n as u32);
    let q: Vec<i8> = download(&ctx, &xq, n * cols / 4)
        .await
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .map(|b| b as i8)
        .collect();
    let m = download(&ctx, &meta, n * cols / 8).await;
    let mut want = x.clone();
    quant::round_to_int8_blocks(&mut want);
    let mut off = 0;
    for (b, (xs, ws)) in x.chunks(16).zip(want.chunks(16)).enumerate() {
        let d = xs.iter().fold(0f32, |a, v| a.max(v.abs())) * (1.0 / 127.0);
        assert_eq!(m[2 * b].to_bits(), d.to_bits(), "block {b}: scale");
        let qs = &q[16 * b..16 * (b + 1)];
        assert_eq!(m[2 * b + 1], qs.iter().map(|&v| v as f32).sum::<f32>(), "block {b}: Σq");
        for (k, (&qv, &wv)) in qs.iter().zip(ws).enumerate() {
            let wq = if d > 0.0 { (wv / d).round() } else { 0.0 };
            if qv as f32 != wq {
                assert_eq!((qv as f32 - wq).abs(), 1.0, "block {b} value {k}: {} → {qv}, CPU {wq}", xs[k]);
                off += 1;
            }
        }
    }
    note(&format!("{off} of {} values rounded the other way", n * cols));
    assert!(off * 1000 <= n * cols, "{off} values differ");
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn rms_norm_matches_the_cpu() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("rms_norm"));
    let (n, dim, offset) = (7usize, 300usize, 41usize);
    let x = random(&mut rng, n * dim, -3.0, 3.0);
    // The weights sit after other values in their buffer, as in the engine's `consts`.
    let consts = random(&mut rng, offset + dim + 5, 0.5, 1.5);
    let w = &consts[offset..offset + dim];
    let (xb, wb) = (upload(&ctx, &x), upload(&ctx, &consts));
    let y = ctx.storage("y", (n * dim * 4) as u64).unwrap();
    let mut want = vec![0f32; n * dim];
    for t in 0..n {
        reference::rms_norm(&mut want[t * dim..(t + 1) * dim], &x[t * dim..(t + 1) * dim], w, 1e-5);
    }
    run(&ctx, &[rms_norm(&ctx, &xb, &y, &wb, offset as u32, dim as u32, 1e-5)], n as u32);
    let err = rel_err(&download(&ctx, &y, n * dim).await, &want);
    assert!(err <= 1e-6, "{err}");
}

/// Norm weights at `offset` in a buffer of other random values, as the engine's `consts` holds them.
fn consts_with(rng: &mut SplitMix64, offset: usize, parts: &[&[f32]]) -> Vec<f32> {
    let mut consts = random(rng, offset, 0.5, 1.5);
    for p in parts {
        consts.extend_from_slice(p);
    }
    consts
}

/// What a product with [`NextNorm`] leaves for the next one, made on the CPU from `x` (one token):
/// x ⊙ w, then Σx² split into `slots` uneven sums, then stale values that must not be read.
fn weighted_with_slots(rng: &mut SplitMix64, x: &[f32], w: &[f32], slots: usize) -> Vec<f32> {
    let mut out: Vec<f32> = x.iter().zip(w).map(|(x, w)| x * w).collect();
    let mut bounds: Vec<usize> = (1..slots).map(|_| (rng.next_u64() % x.len() as u64) as usize).collect();
    bounds.sort_unstable();
    let edges: Vec<usize> = [0].into_iter().chain(bounds).chain([x.len()]).collect();
    out.extend(edges.windows(2).map(|e| x[e[0]..e[1]].iter().map(|v| v * v).sum::<f32>()));
    out.extend(random(rng, 7, 1e3, 1e4));
    out
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn norm_split_over_the_products_around_it_matches_norm_then_product() {
    for ctx in with_and_without_subgroups(GpuOptions::default()).await {
        note(&format!("matvec reductions with subgroup operations: {}", ctx.subgroups));
        let mut rng = SplitMix64::new(seed("matvec_norm"));
        // The producer adds W_h h to the residual stream (dim rows in parts of 200: several slot
        // ranges, each ending in a partial workgroup); the consumer has 77 rows in parts of 30.
        let (rows, dim) = if WEB { (77, 256) } else { (77, 512) };
        let (eps, offset) = (1e-5, 4 * 11);
        for (i, ty) in TYPES.into_iter().enumerate() {
            let w_h = random_matrix(&mut rng, ty, dim, dim);
            let w = random_matrix(&mut rng, TYPES[(i + 5) % TYPES.len()], rows, dim);
            let up = random_matrix(&mut rng, TYPES[(i + 7) % TYPES.len()], rows, dim);
            let (gh, gw, gup) = (gpu_matrix(&ctx, &w_h, 200), gpu_matrix(&ctx, &w, 30), gpu_matrix(&ctx, &up, 30));
            let (made_by, read_by) = (MatvecRows::ALL[i % 4], MatvecRows::ALL[(i + 1) % 4]);
            let h = random(&mut rng, dim, -1.0, 1.0);
            let x0 = random(&mut rng, dim, -3.0, 3.0);
            let norm_w = random(&mut rng, dim, 0.5, 1.5);
            let consts = upload(&ctx, &consts_with(&mut rng, offset, &[&norm_w]));
            let slots = norm_slots(&gh, made_by) as usize;
            let stale = random(&mut rng, dim + slots + 9, -9.0, 9.0);
            let (hb, xb, xnb) = (upload(&ctx, &h), upload(&ctx, &x0), upload(&ctx, &stale));
            let s = step(&ctx, 1, 0);
            let next = Epilogue::AddThenNorm(NextNorm { consts: &consts, offset: offset as u32, out: &xnb });
            run(&ctx, &MatMul::new(&gh, &hb, &xb, Product::LastToken(made_by)).epilogue(next).dispatches(&ctx, &s), 1);

            // First half: the residual sum, weighted, and one sum of squares per producer workgroup.
            let what = format!("{} made by {made_by}-row groups", ty.name());
            let mut x = vec![0f32; dim];
            w_h.matmul(&h, &mut x);
            x.iter_mut().zip(&x0).for_each(|(a, b)| *a += b);
            let got_x = download(&ctx, &xb, dim).await;
            assert!(rel_err(&got_x, &x) <= 1e-5, "{what}: residual {}", rel_err(&got_x, &x));
            let got = download(&ctx, &xnb, stale.len()).await;
            let weighted: Vec<f32> = x.iter().zip(&norm_w).map(|(x, w)| x * w).collect();
            let err = rel_err(&got[..dim], &weighted);
            assert!(err <= 1e-5, "{what}: weighted x {err}");
            let mut want_slots = Vec::new();
            for part in &gh.parts {
                for g in (0..part.rows).step_by(made_by.0 as usize) {
                    let first = (part.first_row + g) as usize;
                    let end = (part.first_row + (g + made_by.0).min(part.rows)) as usize;
                    want_slots.push(got_x[first..end].iter().map(|v| v * v).sum::<f32>());
                }
            }
            assert_eq!(want_slots.len(), slots);
            let err = rel_err(&got[dim..dim + slots], &want_slots);
            assert!(err <= 1e-5, "{what}: sums of squares {err}");
            assert_eq!(got[dim + slots..], stale[dim + slots..], "{what}: wrote past its slots");

            // Second half, in the product that reads it.
            let mut xn = vec![0f32; dim];
            reference::rms_norm(&mut xn, &x, &norm_w, eps);
            let norm = Norm { slots: slots as u32, eps };
            for epilogue in [Epilogue::Store, Epilogue::SwiGlu] {
                let yb = upload(&ctx, &random(&mut rng, rows, -4.0, 4.0));
                let upm = matches!(epilogue, Epilogue::SwiGlu).then_some(&gup);
                let product = product_of(&gw, upm, &xnb, &yb, epilogue, Product::LastToken(read_by));
                run(&ctx, &product.norm(Some(norm)).dispatches(&ctx, &s), 1);
                let mut want = vec![0f32; rows];
                w.matmul(&xn, &mut want);
                if upm.is_some() {
                    let mut u = vec![0f32; rows];
                    up.matmul(&xn, &mut u);
                    want.iter_mut().zip(&u).for_each(|(g, u)| *g = reference::silu(*g) * u);
                }
                let err = rel_err(&download(&ctx, &yb, rows).await, &want);
                assert!(err <= 1e-5, "{what}, read by {read_by}-row groups, {epilogue:?}: relative error {err}");
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn fused_qkv_projection_with_rope_and_cache_append_matches_the_cpu() {
    for ctx in with_and_without_subgroups(GpuOptions::default()).await {
        note(&format!("matvec reductions with subgroup operations: {}", ctx.subgroups));
        let mut rng = SplitMix64::new(seed("qkv"));
        use GgmlType::*;
        // (heads, kv heads, head size, q/k/v types), each with another matvec row count. The second:
        // dim 320, and the k/v boundary (row 360) falls inside one of its 16-row workgroups; the
        // third, Q4_K_M's mix with a Q6_K v.
        let cases = [
            (4, 2, 64, [Q8_0, F16, Q4_0]),
            (8, 1, 40, [Q5_1, Q4_0, Q8_0]),
            (2, 1, 128, [Q4_K, Q4_K, Q6_K]),
            (4, 4, 64, [Q5_K, BF16, Q4_1]),
        ];
        for (ci, (heads, kv_heads, hd, [tq, tk, tv])) in cases.into_iter().enumerate() {
            let group_rows = MatvecRows::ALL[ci];
            let cfg = small_config(heads, kv_heads, hd, 64);
            let (dim, q_dim, kv_dim) = (cfg.dim, cfg.q_dim(), cfg.kv_dim());
            let (n, pos0) = (2usize, 40usize);
            let pos = pos0 + n - 1;
            let wq = random_matrix(&mut rng, tq, q_dim, dim);
            let wk = random_matrix(&mut rng, tk, kv_dim, dim);
            let wv = random_matrix(&mut rng, tv, kv_dim, dim);
            let (gq, gk, gv) =
                (gpu_matrix(&ctx, &wq, 1 << 20), gpu_matrix(&ctx, &wk, 1 << 20), gpu_matrix(&ctx, &wv, 1 << 20));
            let x = random(&mut rng, n * dim, -3.0, 3.0);
            let norm_w = random(&mut rng, dim, 0.5, 1.5);
            let factors = random(&mut rng, hd / 2, 1.0, 8.0);
            let table = rope_table(&cfg, cfg.context_length, Some(&factors));
            let (eps, offset) = (1e-5, 4 * 3);
            let consts = upload(&ctx, &consts_with(&mut rng, offset, &[&norm_w, &table]));
            let table_offset = (offset + dim) as u32;

            // The norm finished here (x as a `NextNorm` product leaves it, one token, 5 sums of
            // squares), or already applied (the last token of x is normalized).
            let mut xn = vec![0f32; dim];
            reference::rms_norm(&mut xn, &x[(n - 1) * dim..], &norm_w, eps);
            let mut x_normalized = x.clone();
            x_normalized[(n - 1) * dim..].copy_from_slice(&xn);
            let x_weighted = weighted_with_slots(&mut rng, &x[(n - 1) * dim..], &norm_w, 5);
            let (mut want_q, mut want_k, mut want_v) = (vec![0f32; q_dim], vec![0f32; kv_dim], vec![0f32; kv_dim]);
            wq.matmul(&xn, &mut want_q);
            wk.matmul(&xn, &mut want_k);
            wv.matmul(&xn, &mut want_v);
            reference::rope(&mut want_q, hd, hd, pos, cfg.rope_theta, Some(&factors));
            reference::rope(&mut want_k, hd, hd, pos, cfg.rope_theta, Some(&factors));

            for ((flag, elem), folded) in kv_formats(&ctx).into_iter().flat_map(|f| [(f, true), (f, false)]) {
                let what =
                    format!("{heads}/{kv_heads} heads of {hd}, {}/{}/{}, {flag:?}", tq.name(), tk.name(), tv.name());
                let what = format!("{what}, norm folded: {folded}");
                let norm = folded.then_some(Norm { slots: 5, eps });
                let xb = upload(&ctx, if folded { &x_weighted } else { &x_normalized });
                let qb = ctx.storage("q", (q_dim * 4) as u64).unwrap();
                // Caches full of other values: only position `pos` may change.
                let cache_len = cfg.context_length * kv_dim;
                let k_before = encode_cache(&random(&mut rng, cache_len, -1.0, 1.0), elem);
                let v_before = encode_cache(&random(&mut rng, cache_len, -1.0, 1.0), elem);
                let (kc, vc) = (upload_bytes(&ctx, &k_before), upload_bytes(&ctx, &v_before));
                let s = step(&ctx, n as u32, pos0 as u32);
                let d = QkvRopeStore {
                    weights: [&gq, &gk, &gv],
                    x: &xb,
                    norm,
                    table: RopeTable { buffer: &consts, offset: table_offset },
                    q: &qb,
                    cache: KvCache { keys: &kc, values: &vc, storage: flag },
                    rows: group_rows,
                }
                .dispatch(&ctx, &s, &cfg);
                run_at(&ctx, &[d], n as u32, pos0 as u32);
                let err = rel_err(&download(&ctx, &qb, q_dim).await, &want_q);
                assert!(err <= 1e-5, "{what}: q {err}");
                let tol = if elem == 4 { 1e-5 } else { 1e-3 };
                for (cache, before, want, name) in [(&kc, &k_before, &want_k, "k"), (&vc, &v_before, &want_v, "v")] {
                    let after: Vec<u8> = bytemuck::cast_slice(&download(&ctx, cache, before.len() / 4).await).to_vec();
                    let row = pos * kv_dim * elem..(pos + 1) * kv_dim * elem;
                    let err = rel_err(&decode_cache(&after[row.clone()], elem), want);
                    assert!(err <= tol, "{what}: {name} {err}");
                    assert!(
                        after[..row.start] == before[..row.start] && after[row.end..] == before[row.end..],
                        "{what}: {name} cache changed elsewhere"
                    );
                }
            }
        }
    }
}

fn small_config(heads: usize, kv_heads: usize, head_dim: usize, context: usize) -> LlamaConfig {
    LlamaConfig {
        n_layers: 1,
        dim: heads * head_dim,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim,
        ffn_dim: 4 * heads * head_dim,
        vocab_size: 100,
        rms_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_dim: head_dim,
        context_length: context,
        tied_output: false,
        has_rope_freqs: true,
    }
}

/// The KV formats this adapter can run, with the bytes of one stored value.
fn kv_formats(ctx: &carebot_gpu::GpuContext) -> Vec<(KvStorage, usize)> {
    let mut f = vec![KvStorage::F32, KvStorage::Packed];
    if ctx.f16 {
        f.push(KvStorage::F16);
    }
    f.into_iter().map(|kv| (kv, kv.value_bytes())).collect()
}

fn decode_cache(bytes: &[u8], elem: usize) -> Vec<f32> {
    if elem == 4 {
        bytemuck::cast_slice(bytes).to_vec()
    } else {
        bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    }
}

fn encode_cache(values: &[f32], elem: usize) -> Vec<u8> {
    if elem == 4 {
        bytemuck::cast_slice(values).to_vec()
    } else {
        values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()
    }
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn rope_and_cache_append_match_the_cpu() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("rope"));
    let cfg = small_config(4, 2, 64, 64);
    let (n, pos0) = (5usize, 37usize);
    let factors = random(&mut rng, cfg.head_dim / 2, 1.0, 8.0);
    // The table after 6 other values, as the engine keeps it after the norm weights.
    let mut table = random(&mut rng, 6, -1.0, 1.0);
    table.extend(rope_table(&cfg, cfg.context_length, Some(&factors)));
    let table = upload(&ctx, &table);
    let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
    let q = random(&mut rng, n * q_dim, -2.0, 2.0);
    let k = random(&mut rng, n * kv_dim, -2.0, 2.0);
    let v = random(&mut rng, n * kv_dim, -2.0, 2.0);
    let mut want_q = q.clone();
    let mut want_k = k.clone();
    for t in 0..n {
        let (hd, th) = (cfg.head_dim, cfg.rope_theta);
        reference::rope(&mut want_q[t * q_dim..(t + 1) * q_dim], hd, hd, pos0 + t, th, Some(&factors));
        reference::rope(&mut want_k[t * kv_dim..(t + 1) * kv_dim], hd, hd, pos0 + t, th, Some(&factors));
    }
    for (flag, elem) in kv_formats(&ctx) {
        let (qb, kb, vb) = (upload(&ctx, &q), upload(&ctx, &k), upload(&ctx, &v));
        let cache_bytes = (cfg.context_length * kv_dim * elem) as u64;
        let (kc, vc) = (ctx.storage("k", cache_bytes).unwrap(), ctx.storage("v", cache_bytes).unwrap());
        let s = step(&ctx, n as u32, pos0 as u32);
        let cache = KvCache { keys: &kc, values: &vc, storage: flag };
        let rope = RopeAndStore { q: &qb, k: &kb, v: &vb, table: RopeTable { buffer: &table, offset: 6 }, cache };
        run_at(&ctx, &[rope.dispatch(&ctx, &s, &cfg)], n as u32, pos0 as u32);
        let err = rel_err(&download(&ctx, &qb, n * q_dim).await, &want_q);
        assert!(err <= 1e-6, "{flag:?} q: {err}");
        let range = pos0 * kv_dim * elem / 4..(pos0 + n) * kv_dim * elem / 4;
        let kc_all = download(&ctx, &kc, cache_bytes as usize / 4).await;
        let vc_all = download(&ctx, &vc, cache_bytes as usize / 4).await;
        let got_k = decode_cache(bytemuck::cast_slice(&kc_all[range.clone()]), elem);
        let got_v = decode_cache(bytemuck::cast_slice(&vc_all[range]), elem);
        let tol = if elem == 4 { 1e-6 } else { 1e-3 };
        let err_k = rel_err(&got_k, &want_k);
        let err_v = rel_err(&got_v, &v);
        assert!(err_k <= tol && err_v <= tol, "{flag:?}: k {err_k}, v {err_v}");
    }
}

/// The CPU reference's attention over cached keys/values (already in f32).
fn cpu_attention(cfg: &LlamaConfig, q: &[f32], keys: &[f32], values: &[f32], pos0: usize, n: usize) -> Vec<f32> {
    let (hd, q_dim, kv_dim) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; n * q_dim];
    for t in 0..n {
        for h in 0..cfg.n_heads {
            let qh = &q[t * q_dim + h * hd..][..hd];
            let kvh = h / group;
            let mut scores: Vec<f32> = (0..=pos0 + t)
                .map(|p| qh.iter().zip(&keys[p * kv_dim + kvh * hd..][..hd]).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            reference::softmax(&mut scores);
            let o = &mut out[t * q_dim + h * hd..][..hd];
            for (p, s) in scores.iter().enumerate() {
                for (oi, vi) in o.iter_mut().zip(&values[p * kv_dim + kvh * hd..][..hd]) {
                    *oi += s * vi;
                }
            }
        }
    }
    out
}

#[cfg_attr(not(target_arch = "wasm32"), pollster::test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
async fn attention_matches_the_cpu_on_short_and_long_contexts() {
    let Some(ctx) = context(GpuOptions::default()).await else { return };
    let mut rng = SplitMix64::new(seed("attention"));
    // (heads, kv heads, head size, first position, tokens, query magnitude). Batches, then single
    // decoded tokens whose keys are split into ranges: 65 keys (two ranges), many ranges with a
    // short last one, and past 64 × 64 keys (ranges of more than one 64-key chunk). Head groups
    // of 1, 2, 3, 4, 6 and 16 query heads per KV head (16: two workgroups of 8 share a KV head);
    // head sizes from 32 (four key slices in the value sums) to 256 (two pairs per invocation).
    let long = if WEB { 333 } else { 1990 };
    let very_long = if WEB { 700 } else { 4500 };
    let cases = [
        (8, 2, 96, 150, 3, 1.0),
        (4, 4, 128, 0, 1, 1.0),
        (4, 1, 64, 61, 19, 1.0),
        (2, 1, 128, long, 2, 30.0),
        (9, 3, 64, 64, 1, 1.0),
        (12, 2, 32, 333, 1, 4.0),
        (16, 1, 128, 200, 1, 1.0),
        (6, 1, 256, very_long, 1, 30.0),
        (4, 2, 48, very_long, 1, 1.0),
    ];
    for (heads, kv_heads, hd, pos0, n, mag) in cases {
        let cfg = small_config(heads, kv_heads, hd, 8192);
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let q = random(&mut rng, n * q_dim, -mag, mag);
        let keys = random(&mut rng, (pos0 + n) * kv_dim, -1.0, 1.0);
        let values = random(&mut rng, (pos0 + n) * kv_dim, -1.0, 1.0);
        for (flag, elem) in kv_formats(&ctx) {
            // The cache holds what its format can store; the CPU reads the same values back.
            let (kbytes, vbytes) = (encode_cache(&keys, elem), encode_cache(&values, elem));
            let (k_seen, v_seen) = (decode_cache(&kbytes, elem), decode_cache(&vbytes, elem));
            let want = cpu_attention(&cfg, &q, &k_seen, &v_seen, pos0, n);
            let (qb, kc, vc) = (upload(&ctx, &q), upload_bytes(&ctx, &kbytes), upload_bytes(&ctx, &vbytes));
            let out = ctx.storage("out", (n * q_dim * 4) as u64).unwrap();
            // Left over from an earlier call: the merge must not read ranges this one did not write.
            let stale = random(&mut rng, partials_bytes(&cfg, pos0 + n) as usize / 4, -50.0, 50.0);
            let partials = upload(&ctx, &stale);
            let s = step(&ctx, n as u32, pos0 as u32);
            let cache = KvCache { keys: &kc, values: &vc, storage: flag };
            let d = Attention { q: &qb, cache, out: &out, partials: &partials }.dispatches(&ctx, &s, &cfg);
            run_at(&ctx, &d, n as u32, pos0 as u32);
            let err = rel_err(&download(&ctx, &out, n * q_dim).await, &want);
            // WGSL lets exp(x) be off by 3 + 2|x| ULP; with large queries the score gaps reach
            // tens, and the merge rescales each range once more (SwiftShader measured 1.6e-5).
            let tol = if mag > 1.0 { 5e-5 } else { 1e-5 };
            assert!(err <= tol, "{flag:?} heads {heads}/{kv_heads} hd {hd} pos0 {pos0} n {n}: {err}");
        }
    }
}

#[test]
fn decode_attention_splits_grow_with_the_context_and_stay_bounded() {
    assert_eq!(decode_splits(1), 1);
    assert_eq!(decode_splits(64), 1);
    assert_eq!(decode_splits(65), 2);
    assert_eq!(decode_splits(4096), 64);
    assert_eq!(decode_splits(1 << 20), 64);
    let cfg = |heads, kv| small_config(heads, kv, 64, 64);
    let groups: Vec<u32> = [(32, 8), (9, 3), (16, 1), (12, 2), (7, 7), (28, 4)]
        .iter()
        .map(|&(h, kv)| heads_per_group(&cfg(h, kv)))
        .collect();
    assert_eq!(groups, [4, 3, 8, 6, 1, 7]);
}

/// The bench's f16 FMA probe compiles and runs where the device has shader-f16 (lavapipe has), and
/// is refused with a typed error where it does not.
#[cfg(not(target_arch = "wasm32"))]
#[pollster::test]
async fn the_f16_fma_probe_runs_with_shader_f16_and_is_refused_without() {
    use carebot_gpu::ops::fma_peak::{FmaPeak, FmaType};
    for disable_f16 in [false, true] {
        let Some(ctx) = context(GpuOptions { disable_f16, ..Default::default() }).await else { return };
        for ty in [FmaType::F32, FmaType::F16] {
            match FmaPeak::new(&ctx, ty, 4) {
                Ok(probe) => {
                    assert!(ty == FmaType::F32 || ctx.f16);
                    let mut encoder = ctx.device.create_command_encoder(&Default::default());
                    probe.encode(&mut encoder.begin_compute_pass(&Default::default()));
                    ctx.queue.submit([encoder.finish()]);
                    ctx.wait_idle().unwrap();
                    ctx.check().unwrap();
                }
                Err(e) => {
                    assert!(ty == FmaType::F16 && !ctx.f16, "{ty:?}: {e}");
                    assert!(matches!(e, carebot_gpu::GpuError::MissingFeature(_)), "{e}");
                }
            }
        }
    }
}
