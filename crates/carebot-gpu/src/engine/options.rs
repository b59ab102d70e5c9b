//! What the caller chooses about a model's placement and running ([`EngineOptions`]).

use crate::ops::matmul::{MatvecRows, PrefillTile};

/// How the KV cache stores keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvFormat {
    F32,
    /// Half the memory. Stored as native f16 when the device has `shader-f16`, otherwise as pairs
    /// packed into u32 with `pack2x16float` (same values either way).
    F16,
}

/// Where decoding runs each RMSNorm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormPlacement {
    /// A dispatch of its own before the product that reads it (8 dispatches per block).
    Separate,
    /// Split between the products on either side (6 per block, 2 × ≈2 µs saved per block on a
    /// fast GPU): the one that adds to the residual stream also writes x ⊙ w and its
    /// workgroups' sums of x², and the one after reads that and scales by 1 / rms
    /// ([`NextNorm`](crate::ops::matmul::NextNorm)), so neither inner loop reads more than without a norm. The first block's
    /// attention norm, which follows the embedding, stays a dispatch; so do prefill's. As fast
    /// as `Separate` on lavapipe (BENCHMARKS.md, issue 6, change 10), 2 dispatches fewer per
    /// block everywhere.
    #[default]
    Folded,
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Positions the KV cache holds (capped at the model's training context).
    pub context: usize,
    pub kv: KvFormat,
    /// Most tokens one prefill submission runs (also capped by the binding limit).
    pub max_batch: usize,
    pub norms: NormPlacement,
    /// Bytes of a weight tensor written to the GPU at once: fewer, bigger writes against less
    /// memory held per tensor while loading. Streamed pieces smaller than this collect until it
    /// is reached; `load_file`'s workers read pieces of about this size.
    pub flush_bytes: usize,
    /// The prefill matmul's register tile.
    pub prefill_tile: PrefillTile,
    /// Rows per decode matrix–vector workgroup; `None`: [`MatvecRows::for_adapter`].
    pub matvec_rows: Option<MatvecRows>,
    /// Record each decode step's commands while the GPU runs the step before (on by default;
    /// off, for benchmarks, it records them when the token is known).
    pub record_ahead: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            context: 4096,
            kv: KvFormat::F16,
            max_batch: 64,
            norms: NormPlacement::Folded,
            flush_bytes: 4 << 20,
            prefill_tile: PrefillTile::default(),
            matvec_rows: None,
            record_ahead: true,
        }
    }
}
