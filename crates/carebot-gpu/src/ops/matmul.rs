//! Matrix products with on-the-fly dequantization: `shaders/matvec.wgsl` for one token (decode) and
//! the tiled `shaders/matmul.wgsl` (or, on cooperative matrices, `shaders/matmul_coop.wgsl`) for a
//! batch (prefill), each with the epilogues of
//! `shaders/epilogue.wgsl`. Decode can fold an RMSNorm into the products on either side of it
//! ([`NextNorm`], [`Norm`]).

use super::{Dispatch, Grid};
use crate::context::{GpuContext, spread};
use crate::shader::{Flag, Kernel, Variant, chunk_order};
use crate::weights::GpuMatrix;
use carebot_model::quant::GgmlType;

/// The prefill kernel's register tile (`shaders/matmul.wgsl`): each invocation sums `rows` rows
/// × `tokens` tokens (with SwiGLU, `rows / 2` rows of each of gate and up). A workgroup is 64
/// invocations on one tile of tokens. The default, 4 × 8, was the best measured on lavapipe
/// (BENCHMARKS.md; before the kernel took its helper form, which lavapipe runs faster, so that
/// ranking may have moved); the others are there so that one bench run on a GPU can compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefillTile {
    pub rows: u32,
    pub tokens: u32,
}

impl Default for PrefillTile {
    fn default() -> Self {
        PrefillTile { rows: 4, tokens: 8 }
    }
}

impl PrefillTile {
    /// Every tile the kernel is built and tested for.
    pub const ALL: [PrefillTile; 5] = [
        PrefillTile { rows: 4, tokens: 8 },
        PrefillTile { rows: 2, tokens: 8 },
        PrefillTile { rows: 4, tokens: 4 },
        PrefillTile { rows: 8, tokens: 8 },
        PrefillTile { rows: 4, tokens: 16 },
    ];

    /// Rows of each matrix one invocation sums.
    pub fn invocation_rows(self, swiglu: bool) -> u32 {
        if swiglu { self.rows / 2 } else { self.rows }
    }

    /// Rows of W one workgroup covers.
    pub fn workgroup_rows(self, swiglu: bool) -> u32 {
        64 * self.invocation_rows(swiglu)
    }
}

impl std::fmt::Display for PrefillTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.rows, self.tokens)
    }
}

impl std::str::FromStr for PrefillTile {
    type Err = String;
    /// `ROWSxTOKENS`, one of [`PrefillTile::ALL`].
    fn from_str(s: &str) -> Result<Self, String> {
        let all = || PrefillTile::ALL.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
        let (rows, tokens) =
            s.split_once('x').ok_or_else(|| format!("{s:?}: expected ROWSxTOKENS, one of {}", all()))?;
        let tile = PrefillTile {
            rows: rows.parse().map_err(|_| format!("{s:?}: rows must be a number"))?,
            tokens: tokens.parse().map_err(|_| format!("{s:?}: tokens must be a number"))?,
        };
        if PrefillTile::ALL.contains(&tile) { Ok(tile) } else { Err(format!("no {s} tile: one of {}", all())) }
    }
}

/// Rows of W one matrix–vector workgroup (256 invocations, `shaders/matvec.wgsl`) sums: rows / 2
/// pairs of adjacent rows with 512 / rows lanes per pair. Fewer rows per workgroup give a matrix
/// more workgroups (more loads in flight on a GPU with many cores: Llama-3-8B's 4096-row
/// matrices are 128 workgroups at 32 rows, against 132 SMs on an H200) but longer sums across
/// each pair's lanes. On a GPU 32 is the default, unmeasured there (`scripts/bench-nvidia.sh`
/// compares the others); on a software adapter 64, the fastest on lavapipe (BENCHMARKS.md,
/// issue 6, change 7), where each step of those sums is a barrier that costs CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatvecRows(pub u32);

impl Default for MatvecRows {
    fn default() -> Self {
        MatvecRows(32)
    }
}

impl MatvecRows {
    /// Every row count the kernel is built and tested for.
    pub const ALL: [MatvecRows; 4] = [MatvecRows(32), MatvecRows(16), MatvecRows(64), MatvecRows(8)];

    /// The default on a software (CPU) adapter.
    pub const SOFTWARE: MatvecRows = MatvecRows(64);

    /// The default for `ctx`'s adapter.
    pub fn for_adapter(ctx: &GpuContext) -> Self {
        if ctx.is_software() { MatvecRows::SOFTWARE } else { MatvecRows::default() }
    }

    /// Lanes that share a pair of rows.
    pub fn lanes(self) -> u32 {
        512 / self.0
    }
}

impl std::fmt::Display for MatvecRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for MatvecRows {
    type Err = String;
    /// One of [`MatvecRows::ALL`].
    fn from_str(s: &str) -> Result<Self, String> {
        let all = || MatvecRows::ALL.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        match s.parse().map(MatvecRows) {
            Ok(rows) if MatvecRows::ALL.contains(&rows) => Ok(rows),
            _ => Err(format!("{s:?}: rows per matrix–vector workgroup are one of {}", all())),
        }
    }
}

/// Which kernel computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// The matrix–vector kernel on the batch's last token only: one decoded token, or the output
    /// head after a prefill.
    LastToken(MatvecRows),
    /// The tiled matrix–matrix kernel on every token of the batch (prefill).
    Batch(PrefillTile),
    /// The matrix–matrix kernel on cooperative matrices, every token of the batch (prefill, where
    /// [`coop_matrix_product`] holds).
    Coop,
}

/// Whether the prefill product of matrices in `types` (one kernel) may run on cooperative
/// matrices: the context has them and, for gate and up together, both formats take x in the
/// same order (the kernel stages x once for both).
pub fn coop_matrix_product(ctx: &GpuContext, types: &[GgmlType]) -> bool {
    ctx.coop_matrix.is_some() && types.iter().all(|&t| chunk_order(t) == chunk_order(types[0]))
}

/// Rows of each matrix per workgroup of the cooperative-matrix kernel (its TILE_ROWS).
pub(crate) fn coop_rows(swiglu: bool) -> u32 {
    if swiglu { 16 } else { 32 }
}

/// What happens to each result.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// y = W x
    Store,
    /// y += W x (residual connections)
    Add,
    /// y += W x, and the next RMSNorm's first half (matrix–vector product only): see [`NextNorm`].
    AddThenNorm(NextNorm<'a>),
    /// y = silu(W_gate x) · (W_up x)
    SwiGlu,
}

impl Epilogue<'_> {
    fn adds(&self) -> bool {
        matches!(self, Epilogue::Add | Epilogue::AddThenNorm(_))
    }
    fn swiglu(&self) -> bool {
        matches!(self, Epilogue::SwiGlu)
    }
}

/// The half of a folded RMSNorm done by the decode product that adds to the residual stream y
/// (the attention output or the down projection): it also writes y ⊙ w to `out`, w being the
/// norm's `dim` f32 weights at `offset` (a multiple of 4) in `consts`, and after those values
/// each of its workgroups writes the sum of y² over its rows, [`norm_slots`] values in all. The
/// product that reads `out` does the other half ([`Norm`]): one scalar 1 / rms, so neither
/// product's inner loop reads more than without the norm, and no dispatch is spent on it.
#[derive(Clone, Copy, Debug)]
pub struct NextNorm<'a> {
    pub consts: &'a wgpu::Buffer,
    pub offset: u32,
    pub out: &'a wgpu::Buffer,
}

/// The other half: x is what a [`NextNorm`] product wrote (one token), with `slots` sums of
/// squares after its `cols` values, and the product scales its dot products by
/// 1 / sqrt(Σ / cols + eps).
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub slots: u32,
    pub eps: f32,
}

/// How many sums of squares a [`NextNorm`] product with matrix `w` and `rows` rows per workgroup
/// writes (one per workgroup of each part).
pub fn norm_slots(w: &GpuMatrix, rows: MatvecRows) -> u32 {
    w.parts.iter().map(|part| part.rows.div_ceil(rows.0)).sum()
}

/// Whether a product of matrices in `types` (one kernel: q, k and v together, gate and up
/// together) multiplies x rounded to int8: where the context uses int8 activations and every one
/// of the matrices has integer quants. The matrix–vector kernel then rounds x itself (`X_INT8`);
/// the matrix–matrix kernel takes it rounded ([`ProductInput::Int8`]).
pub fn int8_activations(ctx: &GpuContext, types: &[GgmlType]) -> bool {
    ctx.int8_dot && types.iter().all(|t| t.has_integer_quants())
}

/// What a product multiplies.
#[derive(Clone, Copy, Debug)]
pub enum ProductInput<'a> {
    /// x, f32.
    F32(&'a wgpu::Buffer),
    /// x rounded to int8 by [`super::round_int8::round_int8`]: its blocks' bytes and their
    /// (d, Σq). The matrix–matrix kernel only, and only where [`int8_activations`] holds.
    Int8 { q: &'a wgpu::Buffer, meta: &'a wgpu::Buffer },
}

impl<'a> From<&'a wgpu::Buffer> for ProductInput<'a> {
    fn from(x: &'a wgpu::Buffer) -> Self {
        ProductInput::F32(x)
    }
}

/// The products' parameters (`Params` in `shaders/product_io.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProductParams {
    pub rows: u32,
    pub cols: u32,
    pub row_offset: u32,
    pub out_stride: u32,
    /// [`NextNorm::offset`] (the next RMSNorm's weights in `consts`, in f32s) in vec4s.
    pub norm_offset: u32,
    pub eps: f32,
    pub q_rows: u32,
    pub kv_rows: u32,
    /// The RoPE table's first vec4 in `consts`.
    pub table_offset: u32,
    pub head_dim: u32,
    /// [`NextNorm`]: this part's first sum-of-squares slot.
    pub slot0: u32,
    /// [`Norm::slots`].
    pub slots: u32,
}

/// One matrix product, described by name (the engine's plans read as `MatMul::new(&b.wo, &a.att,
/// &a.x, kernel).epilogue(Epilogue::Add)`): y (+)= W x by the `kernel` given, storing its result
/// unless an epilogue says otherwise.
pub struct MatMul<'a> {
    w: &'a GpuMatrix,
    up: Option<&'a GpuMatrix>,
    norm: Option<Norm>,
    x: ProductInput<'a>,
    y: &'a wgpu::Buffer,
    epilogue: Epilogue<'a>,
    kernel: Product,
}

impl<'a> MatMul<'a> {
    pub fn new(w: &'a GpuMatrix, x: impl Into<ProductInput<'a>>, y: &'a wgpu::Buffer, kernel: Product) -> Self {
        MatMul { w, up: None, norm: None, x: x.into(), y, epilogue: Epilogue::Store, kernel }
    }

    pub fn epilogue(self, epilogue: Epilogue<'a>) -> Self {
        MatMul { epilogue, ..self }
    }

    /// y = silu(W x) · (up x): the gate and up projections in one pass.
    pub fn swiglu(self, up: &'a GpuMatrix) -> Self {
        MatMul { up: Some(up), epilogue: Epilogue::SwiGlu, ..self }
    }

    /// x scaled by the RMSNorm a [`NextNorm`] product started (matrix–vector products only);
    /// `None` leaves x as it is.
    pub fn norm(self, norm: Option<Norm>) -> Self {
        MatMul { norm, ..self }
    }

    /// `y[t][r] (+)= Σ_c W[r][c] x[t][c]`, one dispatch per part of W, by the kernel named. For
    /// [`Epilogue::SwiGlu`] the up matrix is split into the same parts as W. A norm and
    /// [`Epilogue::AddThenNorm`] are for the matrix–vector kernel only.
    pub fn dispatches(self, ctx: &GpuContext, step: &wgpu::Buffer) -> Vec<Dispatch> {
        let MatMul { w, up, norm, x, y, epilogue, kernel: product } = self;
        let next = match epilogue {
            Epilogue::AddThenNorm(next) => Some(next),
            _ => None,
        };
        let types: Vec<GgmlType> = std::iter::once(w.ty).chain(up.map(|u| u.ty)).collect();
        let mut variant = match product {
            Product::LastToken(rows) => Variant::new(Kernel::MatVec)
                .matvec_rows(rows)
                .flag_if(ctx.subgroups, Flag::Subgroups)
                .flag_if(int8_activations(ctx, &types), Flag::XInt8),
            Product::Batch(tile) => {
                assert!(norm.is_none() && next.is_none(), "only the matrix–vector product folds a norm in");
                Variant::new(Kernel::MatMul).tile(tile)
            }
            Product::Coop => {
                assert!(norm.is_none() && next.is_none(), "only the matrix–vector product folds a norm in");
                assert!(coop_matrix_product(ctx, &types), "no cooperative matrices for {types:?} here");
                assert!(matches!(x, ProductInput::F32(_)), "the cooperative-matrix product takes x in f32");
                Variant::new(Kernel::MatMulCoop).coop_side(ctx.coop_matrix.unwrap_or(16))
            }
        }
        .weight(w.ty);
        if let Some(up) = up {
            variant = variant.weight(up.ty);
        }
        let rounded = matches!(x, ProductInput::Int8 { .. });
        if rounded {
            assert!(matches!(product, Product::Batch(_)), "only the tiled matrix–matrix product takes x rounded");
            assert!(int8_activations(ctx, &types), "rounded x needs int8 activations and integer formats");
        }
        variant = variant
            .flag_if(rounded, Flag::XRounded)
            .flag_if(epilogue.adds(), Flag::Add)
            .flag_if(epilogue.swiglu(), Flag::Swiglu)
            .flag_if(norm.is_some(), Flag::Norm)
            .flag_if(next.is_some(), Flag::NormNext);
        assert_eq!(epilogue.swiglu(), up.is_some(), "SwiGLU needs the up matrix");
        let pipeline = ctx.pipeline(&variant);
        let mut slot0 = 0;
        w.parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let mut params = ProductParams {
                    rows: part.rows,
                    cols: w.cols,
                    row_offset: part.first_row,
                    out_stride: w.rows,
                    ..Default::default()
                };
                if let Some(n) = &norm {
                    params.slots = n.slots;
                    params.eps = n.eps;
                }
                if let (Some(n), Product::LastToken(rows)) = (&next, product) {
                    assert!(n.offset.is_multiple_of(4));
                    params.norm_offset = n.offset / 4;
                    params.slot0 = slot0;
                    slot0 += part.rows.div_ceil(rows.0);
                }
                let params = ctx.uniform("matmul params", &params);
                let mut buffers = vec![(1, &params), (3, y), (4, &part.buffer)];
                match x {
                    ProductInput::F32(x) => buffers.push((2, x)),
                    ProductInput::Int8 { q, meta } => buffers.extend([(2, q), (11, meta)]),
                }
                if let Some(up) = up {
                    assert_eq!(up.parts[i].rows, part.rows, "gate and up must be split alike");
                    buffers.push((5, &up.parts[i].buffer));
                }
                if let Some(n) = &next {
                    buffers.push((7, n.consts));
                    buffers.push((10, n.out));
                }
                buffers.push((0, step));
                let grid = match product {
                    Product::LastToken(rows) => Grid::Fixed(spread(part.rows.div_ceil(rows.0))),
                    Product::Batch(tile) => {
                        Grid::PerTokens { x: part.rows.div_ceil(tile.workgroup_rows(up.is_some())), tile: tile.tokens }
                    }
                    Product::Coop => Grid::PerTokens { x: part.rows.div_ceil(coop_rows(up.is_some())), tile: 32 },
                };
                Dispatch::new(ctx, pipeline.clone(), &buffers, grid)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{MatvecRows, PrefillTile};

    #[test]
    fn prefill_tiles_parse_from_their_names_and_nothing_else() {
        for tile in PrefillTile::ALL {
            assert_eq!(tile.to_string().parse::<PrefillTile>(), Ok(tile));
            // SwiGLU splits the rows between gate and up.
            assert_eq!(tile.workgroup_rows(true) * 2, tile.workgroup_rows(false));
        }
        for bad in ["3x8", "4x12", "4", "x8", "4x", "ax8", "16x16"] {
            assert!(bad.parse::<PrefillTile>().is_err(), "{bad}");
        }
    }

    #[test]
    fn matvec_row_counts_parse_and_fill_256_invocations() {
        for rows in MatvecRows::ALL {
            assert_eq!(rows.to_string().parse::<MatvecRows>(), Ok(rows));
            assert_eq!(rows.0 / 2 * rows.lanes(), 256);
        }
        for bad in ["0", "4", "12", "128", "", "x", "-32"] {
            assert!(bad.parse::<MatvecRows>().is_err(), "{bad}");
        }
    }
}
