//! Running a loaded model: each call writes the batch's two small uniforms, encodes the recorded
//! plans into one compute pass and submits once; the next decode step is recorded while the GPU
//! runs this one. Readbacks wait with deadlines paced by the tokens so far.

use super::GpuModel;
use crate::context::{GpuError, ReadPace, now_s};
use crate::ops::Step;
use crate::ops::attention::AttentionProbe;
use crate::ops::matmul::MatvecRows;
use carebot_model::generate::StepLogits;
use carebot_model::sampler::SelectRequest;

/// What changes as a model runs: the positions filled, the next step recorded ahead, readback
/// pacing.
pub(super) struct Running {
    /// Positions of the KV cache filled.
    len: usize,
    /// [`EngineOptions::record_ahead`](super::EngineOptions::record_ahead).
    record_ahead: bool,
    /// The next decode step's commands, recorded while the GPU runs the step before.
    ahead: Option<RecordedStep>,
    stats: RunStats,
    /// Deadlines for readbacks, from the slowest seconds per token so far.
    pace: ReadPace,
    /// Tokens submitted since the last readback, and when the first of them was.
    unread: (usize, f64),
}

impl Running {
    pub(super) fn new(record_ahead: bool) -> Self {
        Running {
            len: 0,
            record_ahead,
            ahead: None,
            stats: RunStats::default(),
            pace: ReadPace::new(),
            unread: (0, 0.0),
        }
    }

    /// Drops the step recorded ahead (it holds dispatches of plans being replaced).
    pub(super) fn forget_recorded_step(&mut self) {
        self.ahead = None;
    }
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
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.running.len
    }

    pub fn is_empty(&self) -> bool {
        self.running.len == 0
    }

    /// Forgets positions from `len` on; later tokens overwrite them.
    pub fn truncate(&mut self, len: usize) {
        self.running.len = self.running.len.min(len);
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

    /// Whether decoding folds each RMSNorm into the next product ([`NormPlacement`](super::NormPlacement)).
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
        let within = self.running.pace.deadline(self.running.unread.0);
        let bytes = self.ctx.read(&self.act.logits_readback, size, within).await?;
        self.record_pace();
        Ok(bytemuck::pod_collect_to_vec(&bytes[..size as usize]))
    }

    /// Counts the readback that just ended towards the deadlines of later ones.
    fn record_pace(&mut self) {
        let (tokens, since) = std::mem::replace(&mut self.running.unread, (0, 0.0));
        self.running.pace.record(tokens, now_s() - since);
    }

    /// Runs `tokens` and returns what the sampler asked for: the top candidates and softmax
    /// normalizer, selected on the GPU so only a few hundred bytes come back (or the full logits
    /// when the request cannot run there).
    pub async fn forward_select(&mut self, tokens: &[u32], request: &SelectRequest) -> Result<StepLogits, GpuError> {
        if !self.select.prepare(&self.ctx, request) {
            return Ok(StepLogits::Full(self.forward(tokens).await?));
        }
        self.run(tokens, Output::Candidates)?;
        let candidates = self.select.read(&self.ctx, self.running.pace.deadline(self.running.unread.0)).await?;
        self.record_pace();
        Ok(StepLogits::Candidates(candidates))
    }

    /// The raw logits of the last token run (still on the GPU after a `forward_select`).
    pub async fn read_logits(&mut self) -> Result<Vec<f32>, GpuError> {
        if self.running.len == 0 {
            return Err(GpuError::Usage("no token has been run yet"));
        }
        let size = self.cfg.vocab_size as u64 * 4;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.act.logits, 0, &self.act.logits_readback, 0, size);
        self.ctx.queue.submit([encoder.finish()]);
        let bytes = self.ctx.read(&self.act.logits_readback, size, self.running.pace.deadline(1)).await?;
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
        if self.running.len + tokens.len() > self.capacity {
            return Err(GpuError::ContextFull { needed: self.running.len + tokens.len(), capacity: self.capacity });
        }
        self.ctx.check()?;
        if self.running.unread.0 == 0 {
            self.running.unread.1 = now_s();
        }
        self.running.unread.0 += tokens.len();
        let mut ahead = self.running.ahead.take();
        let batches = tokens.len().div_ceil(self.max_batch);
        for (i, batch) in tokens.chunks(self.max_batch).enumerate() {
            let n = batch.len() as u32;
            let step = Step { n_tokens: n, pos0: self.running.len as u32, _pad: [0; 2] };
            self.ctx.queue.write_buffer(&self.act.step, 0, bytemuck::bytes_of(&step));
            self.ctx.queue.write_buffer(&self.act.tokens, 0, bytemuck::cast_slice(batch));
            let last = (i + 1 == batches).then_some(output);
            let commands = match ahead.take() {
                Some(r) if n == 1 && r.pos0 == self.running.len && Some(r.output) == last => {
                    self.running.stats.recorded_ahead += 1;
                    r.commands
                }
                _ => self.record(n, self.running.len, last),
            };
            self.running.stats.decode_steps += u64::from(n == 1);
            self.ctx.queue.submit([commands]);
            self.running.len += batch.len();
        }
        // Recording a token's dispatches costs CPU time (0.26 ms for Llama-3-8B's 202 on this
        // project's 2-core VM, BENCHMARKS.md; more through the browser's bindings): done here,
        // while the GPU runs what was just submitted, it is off the path from one token's
        // readback to the next token's submission. Unused (the turn ends, or a prompt comes
        // next), it is dropped.
        if self.running.record_ahead && self.running.len < self.capacity {
            let commands = self.record(1, self.running.len, Some(output));
            self.running.ahead = Some(RecordedStep { pos0: self.running.len, output, commands });
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
        self.running.stats
    }

    /// Seconds of CPU time one decode step's recording takes (best of 5, none submitted): what
    /// recording ahead takes off the path between two tokens.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode_record_seconds(&self) -> f64 {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                drop(self.record(1, self.running.len.min(self.capacity.saturating_sub(1)), Some(Output::Candidates)));
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
    fn config(&self) -> &carebot_model::config::LlamaConfig {
        &self.cfg
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.running.len
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
    use carebot_model::generate::BackendError;
    match e {
        GpuError::ContextFull { needed, capacity } => BackendError::ContextFull { needed, capacity },
        e => BackendError::Device(Box::new(e)),
    }
}
