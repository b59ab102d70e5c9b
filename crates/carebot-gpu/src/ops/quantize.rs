//! f32 → GGUF k-quants on the GPU (`shaders/quantize_k.wgsl`): the CPU quantizer's arithmetic step
//! for step (exact division, sqrt and f16 rounding in integer WGSL), one invocation per 256-value
//! super-block, so the bytes are the model crate's `quant::quantize` bytes.

use crate::context::{GpuContext, GpuError, ReadPace, now_s, spread};
use crate::shader::{Flag, Kernel, Variant};
use carebot_model::quant::{GgmlType, QK_K};
use std::cell::{Cell, RefCell};

/// `Params` in `shaders/quantize_k.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantizeParams {
    pub n_blocks: u32,
    /// Always 0 (see `rounded` in the shader).
    pub zero: u32,
    pub _pad: [u32; 2],
}

/// Invocations per workgroup (`@workgroup_size` in the WGSL), one super-block each.
const WORKGROUP: u32 = 64;

/// The types the kernel makes, and the largest block among them (what the output buffer holds).
const TYPES: [GgmlType; 2] = [GgmlType::Q4_K, GgmlType::Q6_K];
const MAX_BLOCK_BYTES: u64 = 210;

/// Quantizes f32 rows on the GPU into GGUF K-quant blocks; buffers and pipelines made once.
pub struct GpuQuantizer {
    max_values: usize,
    params: wgpu::Buffer,
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// (pipeline, bind group) for Q4_K and Q6_K.
    q4_k: (wgpu::ComputePipeline, wgpu::BindGroup),
    q6_k: (wgpu::ComputePipeline, wgpu::BindGroup),
    /// A call is under way (its buffers are in use).
    busy: Cell<bool>,
    /// The readback buffer is being mapped by the call under way.
    mapping: Cell<bool>,
    /// Deadlines for readbacks, from the slowest call so far (a unit is one call).
    pace: RefCell<ReadPace>,
    /// Picks the blocks each call checks on the CPU.
    sampler: Cell<u64>,
    /// For fault tests: the next call's first block comes back wrong.
    corrupt_next: Cell<bool>,
}

/// Blocks of every call checked on the CPU (`quant::check_k_block`): the first, the last and
/// this many others at random. The CPU quantizes them again: ≈ 0.05 % of a full piece's work.
const CHECKED_AT_RANDOM: usize = 6;

impl GpuQuantizer {
    /// Types the GPU can produce (Q4_K, Q6_K).
    pub fn supports(ty: GgmlType) -> bool {
        TYPES.contains(&ty)
    }

    /// Room for up to `max_values` values per call (a multiple of 256). Errors (GpuError::TooSmall)
    /// if the input or output buffer would pass the binding limit.
    pub fn new(ctx: &GpuContext, max_values: usize) -> Result<Self, GpuError> {
        if max_values == 0 || !max_values.is_multiple_of(QK_K) {
            return Err(GpuError::BadInput(format!(
                "a GPU quantizer takes whole {QK_K}-value super-blocks, not {max_values} values"
            )));
        }
        let blocks = (max_values / QK_K) as u64;
        if blocks > u32::MAX as u64 / MAX_BLOCK_BYTES {
            return Err(GpuError::TooSmall {
                what: "the quantizer's output (32-bit offsets)".into(),
                needs: blocks * MAX_BLOCK_BYTES,
                offers: u32::MAX as u64,
            });
        }
        let input = ctx.storage("quantize input", max_values as u64 * 4)?;
        let output = ctx.storage("quantize output", blocks * MAX_BLOCK_BYTES)?;
        let readback = ctx.readback("quantize readback", blocks * MAX_BLOCK_BYTES);
        let params = ctx.uniform("quantize params", &QuantizeParams::default());
        let bind = |variant: Variant| {
            let pipeline = ctx.pipeline(&variant);
            let entries = [(1, &params), (2, &input), (3, &output)]
                .map(|(binding, buffer)| wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() });
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("quantize"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            (pipeline, bind_group)
        };
        let q4_k = bind(Variant::new(Kernel::QuantizeK));
        let q6_k = bind(Variant::new(Kernel::QuantizeK).flag(Flag::Q6K));
        ctx.check()?;
        Ok(GpuQuantizer {
            max_values,
            params,
            input,
            output,
            readback,
            q4_k,
            q6_k,
            busy: Cell::new(false),
            mapping: Cell::new(false),
            pace: RefCell::new(ReadPace::new()),
            sampler: Cell::new(0x5eed_b10c),
            corrupt_next: Cell::new(false),
        })
    }

    /// The largest call this quantizer takes.
    pub fn max_values(&self) -> usize {
        self.max_values
    }

    /// `values.len()` must be a multiple of 256 and ≤ max_values; returns exactly the bytes
    /// `carebot_model::quant::quantize(ty, values)` returns (modulo rare float-rounding blocks).
    /// One queue submit (upload, dispatch, copy to a readback buffer), then an awaited readback
    /// via `GpuContext::read` (async; never blocks on wasm).
    ///
    /// Calls on one quantizer must not overlap (await one before starting the next): an
    /// overlapping call fails with an error.
    pub async fn quantize(&self, ctx: &GpuContext, ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, GpuError> {
        let (pipeline, bind_group) = match ty {
            GgmlType::Q4_K => &self.q4_k,
            GgmlType::Q6_K => &self.q6_k,
            _ => {
                return Err(GpuError::Unsupported(format!("the GPU quantizer makes Q4_K and Q6_K, not {}", ty.name())));
            }
        };
        let n = values.len();
        if !n.is_multiple_of(QK_K) || n > self.max_values {
            return Err(GpuError::BadInput(format!(
                "{}: the GPU quantizer takes whole {QK_K}-value super-blocks, at most {} values, not {n}",
                ty.name(),
                self.max_values
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let _busy = Busy::claim(self)?;
        let blocks = (n / QK_K) as u32;
        let len = blocks as u64 * ty.block_bytes() as u64;
        let padded = len.next_multiple_of(4);
        ctx.queue.write_buffer(
            &self.params,
            0,
            bytemuck::bytes_of(&QuantizeParams { n_blocks: blocks, ..QuantizeParams::default() }),
        );
        ctx.queue.write_buffer(&self.input, 0, bytemuck::cast_slice(values));
        let mut encoder =
            ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("quantize") });
        // The kernel ORs its bytes into zeroed words (Q6_K blocks share a word per pair).
        encoder.clear_buffer(&self.output, 0, Some(padded));
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            let [x, y, z] = spread(blocks.div_ceil(WORKGROUP));
            pass.dispatch_workgroups(x, y, z);
        }
        encoder.copy_buffer_to_buffer(&self.output, 0, &self.readback, 0, padded);
        ctx.queue.submit([encoder.finish()]);
        ctx.check()?;
        self.mapping.set(true);
        let (within, t0) = (self.pace.borrow().deadline(1), now_s());
        let read = ctx.read(&self.readback, padded, within).await;
        self.mapping.set(false);
        self.pace.borrow_mut().record(1, now_s() - t0);
        let mut bytes = read?;
        bytes.truncate(len as usize);
        if self.corrupt_next.take() {
            // Byte 20 holds quants in both layouts (Q4_K `qs`, Q6_K `ql`); flipping bit 3 of each
            // nibble moves two values by 8 steps. (0xff could turn 7 into 8: one step, which the
            // check rightly tolerates as rounding.)
            bytes[20] ^= 0x88;
        }
        self.check_sample(ctx, ty, values, &bytes)?;
        Ok(bytes)
    }

    /// Checks a sample of the blocks against the CPU's quantizer: a driver that miscomputes
    /// fails the call (and the device is not trusted again) before its bytes are stored anywhere.
    fn check_sample(&self, ctx: &GpuContext, ty: GgmlType, values: &[f32], bytes: &[u8]) -> Result<(), GpuError> {
        let blocks = values.len() / QK_K;
        let bb = ty.block_bytes();
        let mut rng = carebot_model::rng::SplitMix64::new(self.sampler.get());
        self.sampler.set(rng.next_u64());
        let random = (0..CHECKED_AT_RANDOM).map(|_| (rng.next_u64() % blocks as u64) as usize);
        for b in [0, blocks - 1].into_iter().chain(random) {
            let x = &values[b * QK_K..(b + 1) * QK_K];
            if let Err(e) = carebot_model::quant::check_k_block(ty, x, &bytes[b * bb..(b + 1) * bb]) {
                return Err(ctx.fail(GpuError::WrongResult(format!(
                    "the GPU quantized block {b} of {blocks} to {} wrongly: {e}",
                    ty.name()
                ))));
            }
        }
        Ok(())
    }

    /// For fault tests only (never called by the app): the next call's first block comes back
    /// with two quants 8 steps off, as a miscomputing driver would write them.
    #[doc(hidden)]
    pub fn corrupt_next_block_for_tests(&self) {
        self.corrupt_next.set(true);
    }
}

/// Holds a quantizer's buffers for one call. If the call's future is dropped while the readback
/// is being mapped, unmapping it here lets the next call copy into it again.
struct Busy<'a>(&'a GpuQuantizer);

impl<'a> Busy<'a> {
    fn claim(q: &'a GpuQuantizer) -> Result<Self, GpuError> {
        if q.busy.replace(true) {
            return Err(GpuError::Usage("the GPU quantizer is still busy with the previous call"));
        }
        Ok(Busy(q))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.mapping.replace(false) {
            self.0.readback.unmap();
        }
        self.0.busy.set(false);
    }
}
