//! The GPU model, read top to bottom: its structure (blocks of weights and KV cache, the
//! activations), then the forward pass, planned once at load time as lists of dispatches (one for
//! single-token decode, one for batched prefill, and the output head). Decode is fused to eight
//! dispatches per block, six with folded norms (`GpuModel::plan_decode`).
//!
//! Putting the weights on the device is in `engine/load.rs`, running the plans in
//! `engine/run.rs`, the caller's choices in `engine/options.rs`.

mod load;
mod options;
mod run;

pub use options::{EngineOptions, KvFormat, NormPlacement};
pub use run::RunStats;

use crate::context::GpuContext;
use crate::ops::attention::Attention;
use crate::ops::embed::embed;
use crate::ops::matmul::{
    Epilogue, MatMul, MatvecRows, NextNorm, Norm, PrefillTile, Product, ProductInput, coop_matrix_product,
    int8_activations, norm_slots,
};
use crate::ops::qkv::QkvRopeStore;
use crate::ops::rms_norm::rms_norm;
use crate::ops::rope::{RopeAndStore, RopeTable};
use crate::ops::round_int8::round_int8;
use crate::ops::select::TopK;
use crate::ops::{Dispatch, KvCache};
use crate::shader::KvStorage;
use crate::upload::Upload;
use crate::weights::GpuMatrix;
use carebot_model::config::LlamaConfig;
use run::Running;

/// One transformer block on the GPU. Norm weights are offsets (in f32s) into the model's `consts`.
struct Block {
    attn_norm: u32,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    ffn_norm: u32,
    w_gate: GpuMatrix,
    w_up: GpuMatrix,
    w_down: GpuMatrix,
    /// [capacity, kv_dim] each.
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
}

impl Block {
    fn cache(&self, storage: KvStorage) -> KvCache<'_> {
        KvCache { keys: &self.k_cache, values: &self.v_cache, storage }
    }
}

/// Activations for a batch of n ≤ `max_batch` tokens (row per token; shapes as [rows, values],
/// f32 unless said).
struct Activations {
    /// [`Step`]: n and the first position.
    step: wgpu::Buffer,
    /// [n] token ids.
    tokens: wgpu::Buffer,
    /// [n, dim] residual stream.
    x: wgpu::Buffer,
    /// [n, dim] normalized x, input of the projections (with folded norms in decode: x ⊙ w and
    /// the sums of squares that give 1 / rms, see [`NextNorm`]).
    xb: wgpu::Buffer,
    /// [n, n_heads · head_dim] queries.
    q: wgpu::Buffer,
    /// [n, n_kv_heads · head_dim] keys and values before they are stored (prefill; decode writes
    /// them into the cache directly).
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    /// [n, n_heads · head_dim] attention output.
    att: wgpu::Buffer,
    /// What the key ranges of a decoded token's split attention leave for the merge.
    att_partials: wgpu::Buffer,
    /// [n, ffn_dim] SwiGLU hidden layer: silu(gate) · up.
    h: wgpu::Buffer,
    /// A product's input rounded to int8 for the prefill products with int8 activations
    /// ([`GpuOptions::int8_dot`](crate::GpuOptions::int8_dot)): the blocks' bytes and their
    /// (d, Σq); 16 bytes each where the context has no int8 activations.
    xq: wgpu::Buffer,
    x_meta: wgpu::Buffer,
    logits: wgpu::Buffer,
    logits_readback: wgpu::Buffer,
}

pub struct GpuModel {
    pub ctx: GpuContext,
    pub cfg: LlamaConfig,
    token_embd: GpuMatrix,
    output: Option<GpuMatrix>,
    /// Every norm weight vector, then the RoPE cos/sin table: one buffer, so that the fused
    /// decode kernels stay within 8 storage bindings.
    consts: wgpu::Buffer,
    output_norm: u32,
    /// Where the RoPE table starts in `consts`, in f32s.
    table_offset: u32,
    blocks: Vec<Block>,
    act: Activations,
    kv: KvStorage,
    /// Decode folds each RMSNorm into the product after it.
    fold_norms: bool,
    prefill_tile: PrefillTile,
    matvec_rows: MatvecRows,
    plans: Plans,
    /// Top-k candidates and the softmax normalizer of the logits, for the sampler.
    select: TopK,
    /// Positions the KV cache holds.
    capacity: usize,
    /// Most tokens one prefill submission runs.
    max_batch: usize,
    /// Where the weights are while they stream in; `None` once they are all in.
    upload: Option<Upload>,
    /// Positions filled, the step recorded ahead, and readback pacing.
    running: Running,
}

/// The forward pass as recorded dispatch lists (bind groups made, pipelines compiled), once the
/// weights are in.
#[derive(Default)]
struct Plans {
    /// One token through every block ([`GpuModel::plan_decode`]).
    decode: Vec<Dispatch>,
    /// A batch of tokens through every block ([`GpuModel::plan_prefill`]).
    prefill: Vec<Dispatch>,
    /// The output head after a decoded token and after a prefill batch (the same unless norms
    /// are folded: a prefill batch leaves no weighted x for the head to read).
    decode_head: Vec<Dispatch>,
    prefill_head: Vec<Dispatch>,
}

impl GpuModel {
    /// The decode, prefill and output-head plans: their bind groups, and their pipelines compiled.
    fn make_plans(&self) -> Plans {
        Plans {
            decode: self.plan_decode(),
            prefill: self.plan_prefill(),
            decode_head: self.plan_head(self.fold_norms),
            prefill_head: self.plan_head(false),
        }
    }

    fn set_plans(&mut self, plans: Plans) {
        self.plans = plans;
        // A step recorded ahead holds the old plans' dispatches.
        self.running.forget_recorded_step();
    }

    /// Decoding one token, dispatch by dispatch, read top to bottom: six per block with folded
    /// norms, eight without (one fewer while the context fits one attention range of 64 keys).
    /// q/k/v share one pass that also applies RoPE and appends to the cache,
    /// gate and up share one pass, and residual additions are the products' epilogues.
    fn plan_decode(&self) -> Vec<Dispatch> {
        let (c, a, cfg, s) = (&self.ctx, &self.act, &self.cfg, &self.act.step);
        let (consts, kv, rows) = (&self.consts, self.kv, self.matvec_rows);
        let table = RopeTable { buffer: consts, offset: self.table_offset };
        let last = Product::LastToken(rows);
        // Adding a product to the residual stream x; folded, it also starts the next RMSNorm
        // (weights at `offset`) by writing x ⊙ w and sums of x² into xb.
        let add = |offset| match self.fold_norms {
            true => Epilogue::AddThenNorm(NextNorm { consts, offset, out: &a.xb }),
            false => Epilogue::Add,
        };
        // The RMSNorm of x, into xb for the next product: finished by that product when
        // `added_by`, the product that last added to x, started it; else a dispatch of its own.
        let norm = |d: &mut Vec<Dispatch>, offset, added_by: Option<&GpuMatrix>| match added_by {
            Some(w) if self.fold_norms => Some(Norm { slots: norm_slots(w, rows), eps: cfg.rms_eps }),
            _ => {
                d.push(self.normalize_x(offset));
                None
            }
        };
        let mut d = embed(c, &self.token_embd, &a.tokens, &a.x);
        let mut added_by = None;
        for (i, b) in self.blocks.iter().enumerate() {
            // Attention: q, k, v of the normalized stream (RoPE, cache append), attention over
            // the cache, output projection added to the residual stream.
            let n = norm(&mut d, b.attn_norm, added_by); // xb [1, dim]
            let (cache, weights) = (b.cache(kv), [&b.wq, &b.wk, &b.wv]);
            let qkv = QkvRopeStore { weights, x: &a.xb, norm: n, table, q: &a.q, cache, rows };
            d.push(qkv.dispatch(c, s, cfg)); // q [1, q_dim]; k, v [1, kv_dim] into the cache at pos0
            let attention = Attention { q: &a.q, cache, out: &a.att, partials: &a.att_partials };
            d.extend(attention.dispatches(c, s, cfg)); // att [1, q_dim]
            d.extend(MatMul::new(&b.wo, &a.att, &a.x, last).epilogue(add(b.ffn_norm)).dispatches(c, s)); // x += wo · att
            // Feed-forward: silu(gate) · up of the normalized stream, down projection added.
            let n = norm(&mut d, b.ffn_norm, Some(&b.wo));
            d.extend(MatMul::new(&b.w_gate, &a.xb, &a.h, last).swiglu(&b.w_up).norm(n).dispatches(c, s)); // h [1, ffn_dim]
            let next_norm = self.blocks.get(i + 1).map_or(self.output_norm, |next| next.attn_norm);
            d.extend(MatMul::new(&b.w_down, &a.h, &a.x, last).epilogue(add(next_norm)).dispatches(c, s)); // x += w_down · h
            added_by = Some(&b.w_down);
        }
        d
    }

    /// A batch of tokens (prefill) through the blocks with the tiled matrix–matrix kernels: the
    /// same steps as [`GpuModel::plan_decode`], unfused (compute, not dispatch count, bounds a
    /// batch).
    fn plan_prefill(&self) -> Vec<Dispatch> {
        let (c, a, cfg, s) = (&self.ctx, &self.act, &self.cfg, &self.act.step);
        let kv = self.kv;
        let table = RopeTable { buffer: &self.consts, offset: self.table_offset };
        let mut d = embed(c, &self.token_embd, &a.tokens, &a.x);
        for b in &self.blocks {
            d.push(self.normalize_x(b.attn_norm)); // xb [n, dim]
            let (x, by) = self.product_input(&mut d, &a.xb, cfg.dim, &[&b.wq, &b.wk, &b.wv]);
            d.extend(MatMul::new(&b.wq, x, &a.q, by).dispatches(c, s)); // q [n, q_dim]
            d.extend(MatMul::new(&b.wk, x, &a.k, by).dispatches(c, s)); // k [n, kv_dim]
            d.extend(MatMul::new(&b.wv, x, &a.v, by).dispatches(c, s)); // v [n, kv_dim]
            let cache = b.cache(kv);
            d.push(RopeAndStore { q: &a.q, k: &a.k, v: &a.v, table, cache }.dispatch(c, s, cfg)); // k, v into the cache
            let attention = Attention { q: &a.q, cache, out: &a.att, partials: &a.att_partials };
            d.extend(attention.dispatches(c, s, cfg)); // att [n, q_dim]
            let (x, by) = self.product_input(&mut d, &a.att, cfg.q_dim(), &[&b.wo]);
            d.extend(MatMul::new(&b.wo, x, &a.x, by).epilogue(Epilogue::Add).dispatches(c, s)); // x += wo · att
            d.push(self.normalize_x(b.ffn_norm)); // xb [n, dim]
            let (x, by) = self.product_input(&mut d, &a.xb, cfg.dim, &[&b.w_gate, &b.w_up]);
            d.extend(MatMul::new(&b.w_gate, x, &a.h, by).swiglu(&b.w_up).dispatches(c, s)); // h [n, ffn_dim]
            let (x, by) = self.product_input(&mut d, &a.h, cfg.ffn_dim, &[&b.w_down]);
            d.extend(MatMul::new(&b.w_down, x, &a.x, by).epilogue(Epilogue::Add).dispatches(c, s)); // x += w_down · h
        }
        d
    }

    /// The RMSNorm of every token of the residual stream x into xb, as a dispatch of its own, with
    /// the norm weights at `offset` f32s into `consts`.
    fn normalize_x(&self, offset: u32) -> Dispatch {
        let (a, cfg) = (&self.act, &self.cfg);
        rms_norm(&self.ctx, &a.x, &a.xb, &self.consts, offset, cfg.dim as u32, cfg.rms_eps)
    }

    /// The batch's `x` (`cols` values per token) as the prefill products of `matrices` (one
    /// kernel) take it, and the kernel: on cooperative matrices where the context has them;
    /// else the tiled kernel, on x rounded to int8 first (one more dispatch) where the products
    /// use int8 activations.
    fn product_input<'a>(
        &'a self,
        d: &mut Vec<Dispatch>,
        x: &'a wgpu::Buffer,
        cols: usize,
        matrices: &[&GpuMatrix],
    ) -> (ProductInput<'a>, Product) {
        let types: Vec<_> = matrices.iter().map(|m| m.ty).collect();
        if coop_matrix_product(&self.ctx, &types) {
            return (x.into(), Product::Coop);
        }
        let batch = Product::Batch(self.prefill_tile);
        if !int8_activations(&self.ctx, &types) {
            return (x.into(), batch);
        }
        let a = &self.act;
        d.push(round_int8(&self.ctx, &a.step, x, &a.xq, &a.x_meta, cols as u32));
        (ProductInput::Int8 { q: &a.xq, meta: &a.x_meta }, batch)
    }

    /// The batch's last token: final norm and the output projection to logits. `folded`: after
    /// a decoded token whose last down projection started the norm ([`GpuModel::plan_decode`]);
    /// otherwise the norm is a dispatch over the whole batch (a few µs, once per prompt).
    fn plan_head(&self, folded: bool) -> Vec<Dispatch> {
        let (c, a, cfg) = (&self.ctx, &self.act, &self.cfg);
        let output = self.output.as_ref().unwrap_or(&self.token_embd);
        let last = Product::LastToken(self.matvec_rows);
        let mut d = Vec::new();
        let norm = match self.blocks.last() {
            Some(b) if folded => Some(Norm { slots: norm_slots(&b.w_down, self.matvec_rows), eps: cfg.rms_eps }),
            _ => {
                d.push(self.normalize_x(self.output_norm));
                None
            }
        };
        d.extend(MatMul::new(output, &a.xb, &a.logits, last).norm(norm).dispatches(c, &a.step)); // logits [1, vocab]
        d
    }
}
