//! Putting a model on the GPU: every buffer allocated for the file's shapes (weights still
//! empty), then the file's bytes streamed into them (`crate::upload`), from the page's pieces or
//! by the native loader's worker threads while the kernels compile.

use super::{Activations, Block, EngineOptions, GpuModel, KvFormat, NormPlacement, Plans, Running};
use crate::context::{GpuContext, GpuError};
use crate::ops::Step;
use crate::ops::attention;
use crate::ops::matmul::{MatvecRows, norm_slots};
use crate::ops::rope::rope_table;
use crate::ops::round_int8;
use crate::ops::select::TopK;
use crate::shader::KvStorage;
use crate::upload::{Allocator, Dest, Target, Upload};
use crate::weights::{row_bytes, rows_per_part};
use carebot_model::config::{LlamaConfig, block_tensor};
use carebot_model::gguf::GgufFile;

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
        // The widest activation row, in values: a batch of them (f32) must fit one binding.
        let widest_row = cfg.dim.max(cfg.q_dim()).max(cfg.ffn_dim) as u64;
        let max_batch = options.max_batch.clamp(1, (ctx.binding_limit / (widest_row * 4)).clamp(1, 1024) as usize);
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
            max_batch,
            upload: Some(Upload::new(targets, options.flush_bytes.max(1))),
            running: Running::new(options.record_ahead),
        })
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
}
