//! Top-k candidate selection on the GPU (`shaders/select.wgsl`, `shaders/select_merge.wgsl`), so
//! that choosing a token reads back a few hundred bytes instead of the whole vocabulary's logits.
//!
//! Every workgroup reduces 4096 items to one record (its best 64, in order, and its softmax
//! state): phase one reads the logits, 4096 per workgroup; then merge levels reduce 64 records
//! per workgroup until one is left (one level up to 262144 logits, two up to 16.7 million).
//! Within a workgroup there is no sorting network: the k-th best of the invocations' own bests
//! bounds what can be in the top k, at most 1024 items reach it, and each one's rank among those
//! is its place. The repetition penalty is applied as values are read, through a bitmap of
//! penalized ids, so the logits buffer stays raw for the full-logits fallback.

use super::{Dispatch, Grid};
use crate::context::{GpuContext, GpuError, spread};
use crate::shader::{Flag, Kernel, Variant};
use carebot_model::sampler::{Candidates, MAX_CANDIDATES, SelectRequest};

/// `SelectParams` in `shaders/select.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SelectParams {
    pub vocab: u32,
    pub k: u32,
    /// Bits of the repetition penalty.
    pub penalty: u32,
    pub inv_temp: f32,
    pub has_penalty: u32,
    pub _pad: [u32; 3],
}

/// `Level` in `shaders/select_merge.wgsl`: records in the level merged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Level {
    pub n_in: u32,
    pub _pad: [u32; 3],
}

/// Candidates a record keeps (`KMAX` in the WGSL).
const KMAX: u32 = 64;
const _: () = assert!(MAX_CANDIDATES == KMAX as usize);
/// Items one workgroup reduces (`ITEMS`).
const ITEMS: u32 = 4096;
/// Records one merge workgroup reduces.
const FAN_IN: u32 = ITEMS / KMAX;
/// u32 words of a record (`REC`): keys, ids, max, Σ.
const REC: u64 = 2 * KMAX as u64 + 2;

/// Exact top-k of the (penalized) logits plus the softmax normalizer, on the GPU.
pub struct TopK {
    vocab: u32,
    params: wgpu::Buffer,
    penalized: wgpu::Buffer,
    /// Phase one, then the merge levels.
    dispatches: Vec<Dispatch>,
    /// Where the last dispatch leaves the result record (at offset 0).
    result: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// k and whether a normalizer was asked for, from the last `prepare`.
    asked: (u32, bool),
    /// What `penalized` holds: the bitmap, and the ids whose bits are set.
    bitmap: (Vec<u32>, Vec<u32>),
}

impl TopK {
    /// Selection over the first `vocab` floats of `logits`.
    pub fn new(ctx: &GpuContext, logits: &wgpu::Buffer, vocab: u32) -> Result<Self, GpuError> {
        if vocab == 0 || logits.size() < vocab as u64 * 4 {
            return Err(GpuError::BadInput(format!(
                "top-k selection over {vocab} logits in a buffer of {} bytes",
                logits.size()
            )));
        }
        // Records per level, down to one.
        let mut levels = vec![vocab.div_ceil(ITEMS)];
        while levels[levels.len() - 1] > 1 {
            levels.push(levels[levels.len() - 1].div_ceil(FAN_IN));
        }
        let params = ctx.uniform("select params", &[vocab, 1, 1f32.to_bits(), 0, 0, 0, 0, 0u32]);
        let penalized = ctx.storage("select penalized ids", vocab.div_ceil(32) as u64 * 4)?;
        // Levels alternate between two buffers; the first is the largest.
        let records = [
            ctx.storage("select records", levels[0] as u64 * REC * 4)?,
            ctx.storage("select records", levels.get(1).copied().unwrap_or(1) as u64 * REC * 4)?,
        ];
        let mut dispatches = vec![Dispatch::new(
            ctx,
            ctx.pipeline(&Variant::new(Kernel::Select)),
            &[(1, &params), (2, logits), (3, &penalized), (4, &records[0])],
            Grid::Fixed(spread(levels[0])),
        )];
        let merge = ctx.pipeline(&Variant::new(Kernel::SelectMerge).flag(Flag::SelectMerge));
        for (l, pair) in levels.windows(2).enumerate() {
            let level = ctx.uniform("select level", &Level { n_in: pair[0], _pad: [0; 3] });
            let (input, output) = (&records[l % 2], &records[(l + 1) % 2]);
            let bindings = [(1, &params), (2, &level), (3, input), (4, output)];
            dispatches.push(Dispatch::new(ctx, merge.clone(), &bindings, Grid::Fixed(spread(pair[1]))));
        }
        let result = records[(levels.len() - 1) % 2].clone();
        Ok(TopK {
            vocab,
            params,
            penalized,
            dispatches,
            result,
            readback: ctx.readback("select readback", REC * 4),
            asked: (1, false),
            bitmap: (vec![0; vocab.div_ceil(32) as usize], Vec::new()),
        })
    }

    /// Writes the request's parameters (temperature, penalty, k, penalized ids) with
    /// `queue.write_buffer`; false if this request cannot run on the GPU (k outside 1..=64, or a
    /// penalty that is not a normal positive number while some id is penalized) and the caller
    /// must read the full logits.
    pub fn prepare(&mut self, ctx: &GpuContext, request: &SelectRequest) -> bool {
        let k = request.k;
        let penalty = request.repeat_penalty;
        let ids: Vec<u32> = request.penalized.iter().copied().filter(|&id| id < self.vocab).collect();
        let penalty_ok = penalty.is_normal() && penalty > 0.0;
        if k == 0 || k > KMAX as usize || (!penalty_ok && !ids.is_empty()) {
            return false;
        }
        // Rewrite only the words between the first and last bit that changed.
        let (words, old) = &mut self.bitmap;
        let mut dirty = (usize::MAX, 0);
        for &id in old.iter() {
            words[id as usize / 32] &= !(1 << (id % 32));
            dirty = (dirty.0.min(id as usize / 32), dirty.1.max(id as usize / 32));
        }
        for &id in &ids {
            words[id as usize / 32] |= 1 << (id % 32);
            dirty = (dirty.0.min(id as usize / 32), dirty.1.max(id as usize / 32));
        }
        if dirty.0 <= dirty.1 {
            let changed = &words[dirty.0..=dirty.1];
            ctx.queue.write_buffer(&self.penalized, dirty.0 as u64 * 4, bytemuck::cast_slice(changed));
        }
        let has_penalty = !ids.is_empty();
        *old = ids;

        let t = request.temperature;
        let inv_temp = if t > 0.0 {
            let inv = 1.0 / t;
            if inv.is_finite() { inv } else { f32::MAX }
        } else {
            0.0
        };
        let params = SelectParams {
            vocab: self.vocab,
            k: k as u32,
            penalty: if has_penalty { penalty } else { 1.0 }.to_bits(),
            inv_temp,
            has_penalty: has_penalty as u32,
            _pad: [0; 3],
        };
        ctx.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        self.asked = (k as u32, inv_temp > 0.0);
        true
    }

    /// The dispatches (phase one, then each merge level), after the logits are written.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.encode(pass, 1, 0);
        }
    }

    /// Copies the result into this selection's own MAP_READ buffer (after the compute pass).
    pub fn copy_result(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.copy_buffer_to_buffer(&self.result, 0, &self.readback, 0, REC * 4);
    }

    /// The candidates, once the commands of `encode` and `copy_result` are submitted.
    pub async fn read(&self, ctx: &GpuContext, within: std::time::Duration) -> Result<Candidates, GpuError> {
        let bytes = ctx.read(&self.readback, REC * 4, within).await?;
        let w: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let (k, normalizer) = self.asked;
        let (k, kmax) = (k as usize, KMAX as usize);
        let n = w[..k].iter().take_while(|&&key| key != 0).count();
        let logits: Vec<f32> = w[..n].iter().map(|&key| f32::from_bits(key_bits(key))).collect();
        let max = logits.first().copied().unwrap_or(f32::NEG_INFINITY);
        let sum_exp = if normalizer && n > 0 { f32::from_bits(w[2 * kmax + 1]) } else { 0.0 };
        Ok(Candidates { ids: w[kmax..kmax + n].to_vec(), logits, max, sum_exp })
    }

    /// Dispatches per selection: phase one and the merge levels.
    pub fn dispatches(&self) -> usize {
        self.dispatches.len()
    }
}

/// The f32 bits of a (non-zero) sort key: keys order values like `f32::total_cmp`.
fn key_bits(key: u32) -> u32 {
    if key & 0x8000_0000 != 0 { key & 0x7fff_ffff } else { !key }
}
