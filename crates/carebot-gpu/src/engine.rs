//! The GPU model: weights, KV cache and activations on the device, and the forward pass recorded
//! once at load time as a list of dispatches (one list for single-token decode, one for batched
//! prefill). Running a batch writes two small uniforms, encodes the list into one compute pass and
//! submits once. Decode is fused to eight dispatches per block, six with folded norms (see
//! [`GpuModel::plan_decode`]).

use crate::context::{GpuContext, GpuError, ReadPace, now_s};
use crate::ops::attention::{self, AttentionProbe, attention};
use crate::ops::embed::embed;
use crate::ops::matmul::{
    Epilogue, MatMul, MatvecRows, NextNorm, Norm, PrefillTile, Product, ProductInput, coop_matrix_product,
    int8_activations, norm_slots,
};
use crate::ops::qkv::qkv_rope_store;
use crate::ops::rms_norm::rms_norm;
use crate::ops::rope::{rope_and_store, rope_table};
use crate::ops::round_int8::{self, round_int8};
use crate::ops::select::TopK;
use crate::ops::{Dispatch, Step};
use crate::shader::KvStorage;
use crate::upload::{Allocator, Dest, Target, Upload};
use crate::weights::{GpuMatrix, row_bytes, rows_per_part};
use carebot_model::config::{LlamaConfig, block_tensor};
use carebot_model::generate::StepLogits;
use carebot_model::gguf::GgufFile;
use carebot_model::sampler::SelectRequest;

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
    /// ([`NextNorm`]), so neither inner loop reads more than without a norm. The first block's
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
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
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
    capacity: usize,
    len: usize,
    max_batch: usize,
    upload: Option<Upload>,
    /// [`EngineOptions::record_ahead`].
    record_ahead: bool,
    /// The next decode step's commands, recorded while the GPU runs the step before.
    ahead: Option<RecordedStep>,
    stats: RunStats,
    /// Deadlines for readbacks, from the slowest seconds per token so far.
    pace: ReadPace,
    /// Tokens submitted since the last readback, and when the first of them was.
    unread: (usize, f64),
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

/// One decode step's commands, recorded ahead of its token ([`GpuModel::run`]): they depend on
/// the position and on what the step reads back, not on the token, which the submission writes.
struct RecordedStep {
    pos0: usize,
    output: Output,
    commands: wgpu::CommandBuffer,
}

/// How a model's steps were submitted, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Single-token (decode) submissions.
    pub decode_steps: u64,
    /// Those of them whose commands were recorded ahead, while the GPU ran the step before.
    pub recorded_ahead: u64,
}

impl GpuModel {
    /// Allocates everything for the model described by `file` (weights still empty: stream the
    /// file's bytes in with [`GpuModel::upload`], then call [`GpuModel::finish_upload`]). The
    /// kernels are compiled here, before the weights arrive (in the browser the GPU process
    /// compiles them while the page streams the file).
    pub async fn new(ctx: GpuContext, file: &GgufFile, options: &EngineOptions) -> Result<Self, GpuError> {
        let mut model = Self::allocate(ctx, file, options).await?;
        model.set_plans(model.make_plans());
        model.ctx.check()?;
        Ok(model)
    }

    /// [`GpuModel::new`] without the forward plans (and so without compiling their kernels).
    async fn allocate(ctx: GpuContext, file: &GgufFile, options: &EngineOptions) -> Result<Self, GpuError> {
        let cfg = LlamaConfig::from_gguf(file)?;
        // Attention reads a head's keys in 16-byte pieces (shaders/kv.wgsl).
        if cfg.head_dim > 256 || cfg.head_dim % 8 != 0 || cfg.n_heads % cfg.n_kv_heads != 0 {
            return Err(GpuError::Unsupported(format!(
                "head size {} with {} heads over {} KV heads is not supported (head size must be a multiple of 8, at most 256)",
                cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
            )));
        }
        let capacity = options.context.clamp(1, cfg.context_length.max(1));
        // The widest activation row, in bytes (f32): a batch of them must fit one binding.
        let widest_row_bytes = cfg.dim.max(cfg.q_dim()).max(cfg.ffn_dim) as u64 * 4;
        let max_batch = options.max_batch.clamp(1, (ctx.binding_limit / widest_row_bytes).clamp(1, 1024) as usize);
        let kv = match options.kv {
            KvFormat::F32 => KvStorage::F32,
            KvFormat::F16 if ctx.f16 => KvStorage::F16,
            KvFormat::F16 => KvStorage::Packed,
        };
        let kv_bytes = kv.value_bytes();

        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut alloc = Allocator { ctx: &ctx, file, total: 0, targets: Vec::new() };
        let token_embd = alloc.matrix("token_embd.weight", None)?;
        let output = if cfg.tied_output { None } else { Some(alloc.matrix("output.weight", None)?) };
        // consts: 2 norms per block and the output norm (dim f32s each), then the RoPE table.
        let n_norms = 2 * cfg.n_layers + 1;
        let table_offset = u32::try_from(n_norms * cfg.dim)
            .map_err(|_| GpuError::Unsupported(format!("{n_norms} norm vectors of {} values are too many", cfg.dim)))?;
        let consts_bytes = ((n_norms * cfg.dim + capacity * cfg.head_dim) * 4) as u64;
        if consts_bytes > ctx.binding_limit {
            return Err(GpuError::TooSmall {
                what: format!(
                    "the norm weights and the RoPE table for {capacity} positions (fewer positions need less)"
                ),
                needs: consts_bytes,
                offers: ctx.binding_limit,
            });
        }
        let consts = alloc.buffer("norm weights and RoPE table", consts_bytes)?;
        let mut norm_at = 0u32;
        let mut norm = |alloc: &mut Allocator, name: &str| {
            let offset = norm_at;
            norm_at += cfg.dim as u32;
            alloc.vector(name, &consts, offset, cfg.dim).map(|()| offset)
        };
        let output_norm = norm(&mut alloc, "output_norm.weight")?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let name = |n: &str| block_tensor(i, n);
            // Gate and up share one pass, so they are split at the same rows.
            let gate_info = alloc.info(&name("ffn_gate"))?;
            let up_info = alloc.info(&name("ffn_up"))?;
            let shared = rows_per_part(&ctx, row_bytes(gate_info.ty, gate_info.row_len()))?
                .min(rows_per_part(&ctx, row_bytes(up_info.ty, up_info.row_len()))?);
            let kv_size = (capacity * cfg.kv_dim() * kv_bytes) as u64;
            blocks.push(Block {
                attn_norm: norm(&mut alloc, &name("attn_norm"))?,
                wq: alloc.whole_matrix(&name("attn_q"))?,
                wk: alloc.whole_matrix(&name("attn_k"))?,
                wv: alloc.whole_matrix(&name("attn_v"))?,
                wo: alloc.matrix(&name("attn_output"), None)?,
                ffn_norm: norm(&mut alloc, &name("ffn_norm"))?,
                w_gate: alloc.matrix(&name("ffn_gate"), Some(shared))?,
                w_up: alloc.matrix(&name("ffn_up"), Some(shared))?,
                w_down: alloc.matrix(&name("ffn_down"), None)?,
                k_cache: alloc.buffer(&format!("layer {i} keys ({capacity} positions)"), kv_size)?,
                v_cache: alloc.buffer(&format!("layer {i} values ({capacity} positions)"), kv_size)?,
            });
        }
        if cfg.has_rope_freqs {
            alloc.targets.push(Target::new(alloc.info("rope_freqs.weight")?.clone(), Dest::RopeFreqs));
        }
        let fold_norms = options.norms == NormPlacement::Folded;
        let matvec_rows = options.matvec_rows.unwrap_or_else(|| MatvecRows::for_adapter(&ctx));
        let f = |n: usize| (max_batch * n * 4) as u64;
        // Folded norms leave one token's weighted x in xb, then sums of squares.
        let slots = blocks.iter().flat_map(|b| [&b.wo, &b.w_down]).map(|w| norm_slots(w, matvec_rows)).max();
        let xb_bytes = f(cfg.dim).max((cfg.dim as u64 + u64::from(slots.unwrap_or(0)).next_multiple_of(4)) * 4);
        let widest_row = cfg.dim.max(cfg.q_dim()).max(cfg.ffn_dim) as u64;
        let rounded = round_int8::rounded_bytes(max_batch as u64, widest_row);
        let act = Activations {
            step: ctx.uniform("step", &Step::default()),
            tokens: alloc.buffer("token ids", f(1))?,
            x: alloc.buffer("residual stream", f(cfg.dim))?,
            xb: alloc.buffer("normalized stream", xb_bytes)?,
            q: alloc.buffer("queries", f(cfg.q_dim()))?,
            k: alloc.buffer("keys", f(cfg.kv_dim()))?,
            v: alloc.buffer("values", f(cfg.kv_dim()))?,
            att: alloc.buffer("attention output", f(cfg.q_dim()))?,
            att_partials: alloc.buffer("attention partial sums", attention::partials_bytes(&cfg, capacity))?,
            h: alloc.buffer("feed-forward hidden layer", f(cfg.ffn_dim))?,
            xq: alloc.buffer("int8 activations", if ctx.int8_dot { rounded.0 } else { 16 })?,
            x_meta: alloc.buffer("int8 activation scales", if ctx.int8_dot { rounded.1 } else { 16 })?,
            logits: alloc.buffer("logits", cfg.vocab_size as u64 * 4)?,
            logits_readback: ctx.readback("logits readback", cfg.vocab_size as u64 * 4),
        };
        let select = TopK::new(&ctx, &act.logits, cfg.vocab_size as u32)?;
        let (total, targets) = (alloc.total, alloc.targets);
        if let Some(e) = scope.pop().await {
            return Err(GpuError::OutOfMemory { what: format!("the model ({e})"), bytes: total, allocated: 0 });
        }
        ctx.check()?;

        Ok(GpuModel {
            ctx,
            cfg,
            token_embd,
            output,
            consts,
            output_norm,
            table_offset,
            blocks,
            act,
            kv,
            fold_norms,
            prefill_tile: options.prefill_tile,
            matvec_rows,
            plans: Plans::default(),
            select,
            capacity,
            len: 0,
            max_batch,
            upload: Some(Upload::new(targets, options.flush_bytes.max(1))),
            record_ahead: options.record_ahead,
            ahead: None,
            stats: RunStats::default(),
            pace: ReadPace::new(),
            unread: (0, 0.0),
        })
    }

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
        self.ahead = None;
    }

    /// Decoding one token, dispatch by dispatch, read top to bottom: six per block with folded
    /// norms, eight without (one fewer while the context fits one attention range of 64 keys).
    /// q/k/v share one pass that also applies RoPE and appends to the cache,
    /// gate and up share one pass, and residual additions are the products' epilogues.
    fn plan_decode(&self) -> Vec<Dispatch> {
        let (c, a, cfg, s) = (&self.ctx, &self.act, &self.cfg, &self.act.step);
        let (consts, kv, rows) = (&self.consts, self.kv, self.matvec_rows);
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
                d.push(rms_norm(c, &a.x, &a.xb, consts, offset, cfg.dim as u32, cfg.rms_eps));
                None
            }
        };
        let mut d = embed(c, &self.token_embd, &a.tokens, &a.x);
        let mut added_by = None;
        for (i, b) in self.blocks.iter().enumerate() {
            // Attention: q, k, v of the normalized stream (RoPE, cache append), attention over
            // the cache, output projection added to the residual stream.
            let n = norm(&mut d, b.attn_norm, added_by); // xb [1, dim]
            let qkv = [&b.wq, &b.wk, &b.wv]; // q [1, q_dim]; k, v into the caches at pos0
            let table = self.table_offset;
            d.push(qkv_rope_store(c, s, cfg, qkv, consts, n, table, &a.xb, &a.q, &b.k_cache, &b.v_cache, kv, rows));
            d.extend(attention(c, s, cfg, &a.q, &b.k_cache, &b.v_cache, &a.att, &a.att_partials, kv)); // att [1, q_dim]
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
        let (dim, eps, kv, consts, table) = (cfg.dim as u32, cfg.rms_eps, self.kv, &self.consts, self.table_offset);
        let mut d = embed(c, &self.token_embd, &a.tokens, &a.x);
        for b in &self.blocks {
            d.push(rms_norm(c, &a.x, &a.xb, consts, b.attn_norm, dim, eps));
            let (x, by) = self.product_input(&mut d, &a.xb, cfg.dim, &[&b.wq, &b.wk, &b.wv]);
            d.extend(MatMul::new(&b.wq, x, &a.q, by).dispatches(c, s)); // q [n, q_dim]
            d.extend(MatMul::new(&b.wk, x, &a.k, by).dispatches(c, s)); // k [n, kv_dim]
            d.extend(MatMul::new(&b.wv, x, &a.v, by).dispatches(c, s)); // v [n, kv_dim]
            d.push(rope_and_store(c, s, cfg, &a.q, &a.k, &a.v, consts, table, &b.k_cache, &b.v_cache, kv));
            d.extend(attention(c, s, cfg, &a.q, &b.k_cache, &b.v_cache, &a.att, &a.att_partials, kv));
            let (x, by) = self.product_input(&mut d, &a.att, cfg.q_dim(), &[&b.wo]);
            d.extend(MatMul::new(&b.wo, x, &a.x, by).epilogue(Epilogue::Add).dispatches(c, s)); // x += wo · att
            d.push(rms_norm(c, &a.x, &a.xb, consts, b.ffn_norm, dim, eps));
            let (x, by) = self.product_input(&mut d, &a.xb, cfg.dim, &[&b.w_gate, &b.w_up]);
            d.extend(MatMul::new(&b.w_gate, x, &a.h, by).swiglu(&b.w_up).dispatches(c, s)); // h [n, ffn_dim]
            let (x, by) = self.product_input(&mut d, &a.h, cfg.ffn_dim, &[&b.w_down]);
            d.extend(MatMul::new(&b.w_down, x, &a.x, by).epilogue(Epilogue::Add).dispatches(c, s)); // x += w_down · h
        }
        d
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
                let (dim, eps) = (cfg.dim as u32, cfg.rms_eps);
                d.push(rms_norm(c, &a.x, &a.xb, &self.consts, self.output_norm, dim, eps));
                None
            }
        };
        d.extend(MatMul::new(output, &a.xb, &a.logits, last).norm(norm).dispatches(c, &a.step)); // logits [1, vocab]
        d
    }

    /// Streams bytes of the model file, starting at `file_offset`, into the tensors they belong
    /// to. Each tensor's bytes must arrive in order (any piece sizes); bytes outside tensors are
    /// ignored. Host memory stays bounded by a few MiB whatever the piece size.
    pub fn upload(&mut self, file_offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        let upload = self.upload.as_mut().ok_or(GpuError::Usage("the weights are already loaded"))?;
        upload.push(&self.ctx, file_offset, bytes)?;
        self.ctx.check()
    }

    /// Checks that every tensor arrived in full and builds what depends on them (the RoPE table).
    pub fn finish_upload(&mut self) -> Result<(), GpuError> {
        let upload = self.upload.as_ref().ok_or(GpuError::Usage("the weights are already loaded"))?;
        // On failure the upload stays open, so the model refuses to run on missing weights.
        let freqs = upload.finish(&self.ctx)?;
        self.upload = None;
        let table = rope_table(&self.cfg, self.capacity, freqs.as_deref());
        self.ctx.queue.write_buffer(&self.consts, self.table_offset as u64 * 4, bytemuck::cast_slice(&table));
        self.ctx.queue.submit([]);
        self.ctx.check()
    }

    /// Reads a model file from disk into the GPU; `progress(done, total)` sees the matrix bytes
    /// uploaded so far. Two things overlap, so loading takes about the longer of them, not their
    /// sum: worker threads (one per core, up to 8), each with its own handle on the file, read the
    /// matrices in pieces of whole rows (about `options.flush_bytes`) and write them, repacked
    /// where the type needs it, with one copy from the read buffer to the staging memory;
    /// meanwhile this thread compiles the kernels (a driver compiles a native pipeline before
    /// `create_compute_pipeline` returns). The norm vectors, a few KiB, are read afterwards.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_file(
        ctx: GpuContext,
        path: &std::path::Path,
        options: &EngineOptions,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<Self, GpuError> {
        let io = |e: std::io::Error| GpuError::File { path: path.display().to_string(), reason: e.to_string() };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let file = carebot_model::gguf::read_header(&mut f, len)?;
        let mut model = pollster::block_on(Self::allocate(ctx, &file, options))?;
        let mut upload = model.upload.take().expect("a new model awaits its weights");
        let pieces = upload.take_matrix_pieces(options.flush_bytes.max(1) as u64);
        // The matrices arrive while this thread compiles the kernels.
        let (plans, loaded) = crate::upload::read_pieces(&model.ctx, path, &pieces, progress, || model.make_plans());
        loaded?;
        model.ctx.check()?;
        upload.push_remaining_from(&model.ctx, &mut f, path)?;
        model.upload = Some(upload);
        model.set_plans(plans);
        model.ctx.check()?;
        model.finish_upload()?;
        Ok(model)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets positions from `len` on; later tokens overwrite them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Largest number of tokens one prefill submission runs.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Dispatches one decoded token records past 64 positions, candidate selection included
    /// (before that, attention needs no merge: one fewer per block).
    pub fn dispatches_per_token(&self) -> usize {
        self.plans.decode.len() + self.plans.decode_head.len() + self.select.dispatches()
    }

    /// This model's decode attention, alone, over `keys` random positions in every layer (for
    /// benchmarks: how attention's share of a token grows with the context).
    pub fn attention_probe(&self, keys: u32) -> Result<AttentionProbe, GpuError> {
        AttentionProbe::new(&self.ctx, &self.cfg, keys, self.cfg.n_layers, self.kv)
    }

    /// Rows per decode matrix–vector workgroup (chosen for the adapter unless the options said).
    pub fn matvec_rows(&self) -> MatvecRows {
        self.matvec_rows
    }

    /// Whether decoding folds each RMSNorm into the next product ([`NormPlacement`]).
    pub fn folds_norms(&self) -> bool {
        self.fold_norms
    }

    /// How many buffers the embedding table and the output projection are split into.
    pub fn vocabulary_parts(&self) -> (usize, usize) {
        (self.token_embd.parts.len(), self.output.as_ref().unwrap_or(&self.token_embd).parts.len())
    }

    /// Runs `tokens` after the cached positions and returns the last token's logits.
    pub async fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        self.run(tokens, Output::Logits)?;
        let size = self.cfg.vocab_size as u64 * 4;
        let within = self.pace.deadline(self.unread.0);
        let bytes = self.ctx.read(&self.act.logits_readback, size, within).await?;
        self.record_pace();
        Ok(bytemuck::pod_collect_to_vec(&bytes[..size as usize]))
    }

    /// Counts the readback that just ended towards the deadlines of later ones.
    fn record_pace(&mut self) {
        let (tokens, since) = std::mem::replace(&mut self.unread, (0, 0.0));
        self.pace.record(tokens, now_s() - since);
    }

    /// Runs `tokens` and returns what the sampler asked for: the top candidates and softmax
    /// normalizer, selected on the GPU so only a few hundred bytes come back (or the full logits
    /// when the request cannot run there).
    pub async fn forward_select(&mut self, tokens: &[u32], request: &SelectRequest) -> Result<StepLogits, GpuError> {
        if !self.select.prepare(&self.ctx, request) {
            return Ok(StepLogits::Full(self.forward(tokens).await?));
        }
        self.run(tokens, Output::Candidates)?;
        let candidates = self.select.read(&self.ctx, self.pace.deadline(self.unread.0)).await?;
        self.record_pace();
        Ok(StepLogits::Candidates(candidates))
    }

    /// The raw logits of the last token run (still on the GPU after a `forward_select`).
    pub async fn read_logits(&mut self) -> Result<Vec<f32>, GpuError> {
        if self.len == 0 {
            return Err(GpuError::Usage("no token has been run yet"));
        }
        let size = self.cfg.vocab_size as u64 * 4;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.act.logits, 0, &self.act.logits_readback, 0, size);
        self.ctx.queue.submit([encoder.finish()]);
        let bytes = self.ctx.read(&self.act.logits_readback, size, self.pace.deadline(1)).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[..size as usize]))
    }

    /// Encodes and submits `tokens` in batches; the last batch's submission also computes the
    /// logits and copies out `output`.
    fn run(&mut self, tokens: &[u32], output: Output) -> Result<(), GpuError> {
        if self.upload.is_some() {
            return Err(GpuError::Usage("the weights have not been uploaded yet"));
        }
        if tokens.is_empty() {
            return Err(GpuError::BadInput("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(GpuError::BadInput(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        if self.len + tokens.len() > self.capacity {
            return Err(GpuError::ContextFull { needed: self.len + tokens.len(), capacity: self.capacity });
        }
        self.ctx.check()?;
        if self.unread.0 == 0 {
            self.unread.1 = now_s();
        }
        self.unread.0 += tokens.len();
        let mut ahead = self.ahead.take();
        let batches = tokens.len().div_ceil(self.max_batch);
        for (i, batch) in tokens.chunks(self.max_batch).enumerate() {
            let n = batch.len() as u32;
            let step = Step { n_tokens: n, pos0: self.len as u32, _pad: [0; 2] };
            self.ctx.queue.write_buffer(&self.act.step, 0, bytemuck::bytes_of(&step));
            self.ctx.queue.write_buffer(&self.act.tokens, 0, bytemuck::cast_slice(batch));
            let last = (i + 1 == batches).then_some(output);
            let commands = match ahead.take() {
                Some(r) if n == 1 && r.pos0 == self.len && Some(r.output) == last => {
                    self.stats.recorded_ahead += 1;
                    r.commands
                }
                _ => self.record(n, self.len, last),
            };
            self.stats.decode_steps += u64::from(n == 1);
            self.ctx.queue.submit([commands]);
            self.len += batch.len();
        }
        // Recording a token's dispatches costs CPU time (0.26 ms for Llama-3-8B's 202 on this
        // project's 2-core VM, BENCHMARKS.md; more through the browser's bindings): done here,
        // while the GPU runs what was just submitted, it is off the path from one token's
        // readback to the next token's submission. Unused (the turn ends, or a prompt comes
        // next), it is dropped.
        if self.record_ahead && self.len < self.capacity {
            let commands = self.record(1, self.len, Some(output));
            self.ahead = Some(RecordedStep { pos0: self.len, output, commands });
        }
        Ok(())
    }

    /// The commands of one batch of `n` tokens at `pos0`; `output`: the batch is the last of a
    /// call, whose logits are computed and copied out so.
    fn record(&self, n: u32, pos0: usize, output: Option<Output>) -> wgpu::CommandBuffer {
        let pos0 = pos0 as u32;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let plan = if n == 1 { &self.plans.decode } else { &self.plans.prefill };
            for d in plan {
                d.encode(&mut pass, n, pos0);
            }
            if output.is_some() {
                let head = if n == 1 { &self.plans.decode_head } else { &self.plans.prefill_head };
                for d in head {
                    d.encode(&mut pass, n, pos0);
                }
                if output == Some(Output::Candidates) {
                    self.select.encode(&mut pass);
                }
            }
        }
        match output {
            Some(Output::Logits) => {
                let (logits, rb) = (&self.act.logits, &self.act.logits_readback);
                encoder.copy_buffer_to_buffer(logits, 0, rb, 0, logits.size());
            }
            Some(Output::Candidates) => self.select.copy_result(&mut encoder),
            None => {}
        }
        encoder.finish()
    }

    /// How this model's steps were submitted so far.
    pub fn run_stats(&self) -> RunStats {
        self.stats
    }

    /// Seconds of CPU time one decode step's recording takes (best of 5, none submitted): what
    /// recording ahead takes off the path between two tokens.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode_record_seconds(&self) -> f64 {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                drop(self.record(1, self.len.min(self.capacity.saturating_sub(1)), Some(Output::Candidates)));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// What a forward call reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Logits,
    Candidates,
}

/// The GPU model under the generation loop, sampler and CLI, exactly as the CPU reference is.
#[cfg(not(target_arch = "wasm32"))]
impl carebot_model::generate::Backend for GpuModel {
    fn config(&self) -> &LlamaConfig {
        &self.cfg
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn truncate(&mut self, len: usize) {
        GpuModel::truncate(self, len)
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, carebot_model::generate::BackendError> {
        pollster::block_on(self.forward(tokens)).map_err(backend_error)
    }
    fn prefill_select(
        &mut self,
        tokens: &[u32],
        request: &SelectRequest,
    ) -> Result<StepLogits, carebot_model::generate::BackendError> {
        pollster::block_on(self.forward_select(tokens, request)).map_err(backend_error)
    }
    fn last_logits(&mut self) -> Result<Vec<f32>, carebot_model::generate::BackendError> {
        pollster::block_on(self.read_logits()).map_err(backend_error)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn backend_error(e: GpuError) -> carebot_model::generate::BackendError {
    carebot_model::generate::BackendError::Device(e.to_string())
}
