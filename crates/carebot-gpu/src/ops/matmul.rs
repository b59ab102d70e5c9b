//! Matrix products with on-the-fly dequantization: `shaders/matvec.wgsl` for one token (decode) and
//! the tiled `shaders/matmul.wgsl` for a batch (prefill), each with the epilogues of
//! `shaders/epilogue.wgsl`. Decode can fold the RMSNorm before a product into it ([`Norm`]).

use super::{Dispatch, Grid};
use crate::context::{GpuContext, spread};
use crate::shader::{Kernel, Variant};
use crate::weights::GpuMatrix;

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
}

/// What happens to each result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// y = W x
    Store,
    /// y += W x (residual connections)
    Add,
    /// y = silu(W_gate x) · (W_up x)
    SwiGlu,
}

/// An RMSNorm folded into a decode product: x is the residual stream, and the product reads its
/// last token as x / rms(x) · weights, the weights being `dim` f32s at `offset` in `consts` (a
/// multiple of 4).
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    pub consts: &'a wgpu::Buffer,
    pub offset: u32,
    pub eps: f32,
}

/// The products' parameters (`Params` in `shaders/product_io.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProductParams {
    pub rows: u32,
    pub cols: u32,
    pub row_offset: u32,
    pub out_stride: u32,
    /// [`Norm::offset`] in vec4s.
    pub norm_offset: u32,
    pub eps: f32,
    pub q_rows: u32,
    pub kv_rows: u32,
    /// The RoPE table's first vec4 in `consts`.
    pub table_offset: u32,
    pub head_dim: u32,
    pub _pad: [u32; 2],
}

/// y[t][r] (+)= Σ_c W[r][c] x[t][c], one dispatch per part of W, by the kernel `product` names.
/// For [`Epilogue::SwiGlu`], `up` is the second matrix, split into the same parts as `w`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    w: &GpuMatrix,
    up: Option<&GpuMatrix>,
    norm: Option<Norm>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    epilogue: Epilogue,
    product: Product,
) -> Vec<Dispatch> {
    let mut variant = match product {
        Product::LastToken(rows) => Variant::new(Kernel::MatVec).matvec_rows(rows),
        Product::Batch(tile) => {
            assert!(norm.is_none(), "only the matrix–vector product folds a norm in");
            Variant::new(Kernel::MatMul).tile(tile)
        }
    }
    .weight(w.ty);
    if let Some(up) = up {
        variant = variant.weight(up.ty);
    }
    variant = variant
        .flag_if(epilogue == Epilogue::Add, "ADD")
        .flag_if(epilogue == Epilogue::SwiGlu, "SWIGLU")
        .flag_if(norm.is_some(), "NORM");
    assert_eq!(epilogue == Epilogue::SwiGlu, up.is_some(), "SwiGLU needs the up matrix");
    let pipeline = ctx.pipeline(&variant);
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
                params.norm_offset = n.offset / 4;
                params.eps = n.eps;
            }
            let params = ctx.uniform("matmul params", &params);
            let mut buffers = vec![(1, &params), (2, x), (3, y), (4, &part.buffer)];
            if let Some(up) = up {
                assert_eq!(up.parts[i].rows, part.rows, "gate and up must be split alike");
                buffers.push((5, &up.parts[i].buffer));
            }
            if let Some(n) = &norm {
                buffers.push((7, n.consts));
            }
            buffers.push((0, step));
            let grid = match product {
                Product::LastToken(rows) => Grid::Fixed(spread(part.rows.div_ceil(rows.0))),
                Product::Batch(tile) => {
                    Grid::PerTokens { x: part.rows.div_ceil(tile.workgroup_rows(up.is_some())), tile: tile.tokens }
                }
            };
            Dispatch::new(ctx, pipeline.clone(), &buffers, grid)
        })
        .collect()
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
