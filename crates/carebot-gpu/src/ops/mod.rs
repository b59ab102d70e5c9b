//! One module per kernel: each builds the [`Dispatch`]es that run its WGSL (in `shaders/`) over
//! given buffers. Bind groups and parameter buffers are made here once, when the engine plans its
//! forward pass, and reused for every token.

pub mod attention;
pub mod bandwidth;
pub mod embed;
pub mod fma_peak;
pub mod matmul;
pub mod qkv;
pub mod quantize;
pub mod rms_norm;
pub mod rope;
pub mod round_int8;
pub mod select;

use crate::context::GpuContext;
use crate::shader::KvStorage;

/// How many workgroups a dispatch runs for a batch of `n` tokens.
#[derive(Clone, Copy, Debug)]
pub enum Grid {
    Fixed([u32; 3]),
    /// `x` groups by ⌈n / tile⌉ groups.
    PerTokens {
        x: u32,
        tile: u32,
    },
    /// `x` groups by n tokens by the key ranges of a decoded token (1 for a batch).
    AttentionSplits {
        x: u32,
    },
    /// `x` groups when a decoded token's attention was split over more than one key range;
    /// nothing otherwise.
    AttentionMerge {
        x: u32,
    },
}

/// A compute pipeline with its bound resources, ready to encode.
pub struct Dispatch {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub grid: Grid,
}

impl Dispatch {
    /// Binds `buffers` at `(binding, buffer)` in group 0 of `pipeline`.
    pub fn new(
        ctx: &GpuContext,
        pipeline: wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        grid: Grid,
    ) -> Self {
        let entries: Vec<_> = buffers
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch { pipeline, bind_group, grid }
    }

    /// Records the dispatch for a batch of `n_tokens` whose first token is at cache position
    /// `pos0` (the grids of some kernels depend on them).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32, pos0: u32) {
        let decode_splits = || if n_tokens == 1 { attention::decode_splits(pos0 + 1) } else { 1 };
        let [x, y, z] = match self.grid {
            Grid::Fixed(g) => g,
            Grid::PerTokens { x, tile } => [x, n_tokens.div_ceil(tile), 1],
            Grid::AttentionSplits { x } => [x, n_tokens, decode_splits()],
            Grid::AttentionMerge { x } => [if decode_splits() > 1 { x } else { 0 }, 1, 1],
        };
        if x * y * z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Seconds per repetition of what `encode` records, `reps` times in one compute pass: the best
/// of 3 submissions after a warm-up one (for the benchmark probes).
#[cfg(not(target_arch = "wasm32"))]
pub fn best_seconds_per_rep(
    ctx: &GpuContext,
    reps: u32,
    encode: impl Fn(&mut wgpu::ComputePass<'_>),
) -> Result<f64, crate::context::GpuError> {
    let mut best = f64::INFINITY;
    for round in 0..4 {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                encode(&mut pass);
            }
        }
        let t = std::time::Instant::now();
        ctx.queue.submit([encoder.finish()]);
        ctx.wait_idle()?;
        let s = t.elapsed().as_secs_f64() / reps as f64;
        if round > 0 {
            best = best.min(s);
        }
    }
    Ok(best)
}

/// One layer's KV cache: keys and values, [positions, n_kv_heads · head_dim] each, stored as
/// `storage` says.
#[derive(Clone, Copy, Debug)]
pub struct KvCache<'a> {
    pub keys: &'a wgpu::Buffer,
    pub values: &'a wgpu::Buffer,
    pub storage: KvStorage,
}

/// The uniform every kernel reads: batch size and first position (matches `Step` in common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    pub n_tokens: u32,
    pub pos0: u32,
    pub _pad: [u32; 2],
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use crate::shader::{Flag, Kernel, KvStorage, Variant};
    use carebot_model::quant::GgmlType;
    use std::mem::size_of;

    /// Each uniform is a Rust struct that mirrors its WGSL struct: the same size as naga lays the
    /// WGSL one out (a field added on one side only fails here, not on a GPU).
    #[test]
    fn uniforms_mirror_their_wgsl_structs() {
        let cases = [
            (Variant::new(Kernel::Embed).weight(GgmlType::F32), "Step", size_of::<super::Step>()),
            (Variant::new(Kernel::Embed).weight(GgmlType::F32), "Params", size_of::<super::embed::EmbedParams>()),
            (Variant::new(Kernel::RoundInt8), "Params", size_of::<super::round_int8::RoundParams>()),
            (Variant::new(Kernel::Select), "SelectParams", size_of::<super::select::SelectParams>()),
            (Variant::new(Kernel::SelectMerge).flag(Flag::SelectMerge), "Level", size_of::<super::select::Level>()),
            (Variant::new(Kernel::FmaPeak), "Params", size_of::<super::fma_peak::FmaParams>()),
            (
                Variant::new(Kernel::Attention).kv(KvStorage::F32),
                "Params",
                size_of::<super::attention::AttentionParams>(),
            ),
            (Variant::new(Kernel::RmsNorm), "Params", size_of::<super::rms_norm::RmsNormParams>()),
            (Variant::new(Kernel::Bandwidth), "Params", size_of::<super::bandwidth::BandwidthParams>()),
            (Variant::new(Kernel::Rope).kv(KvStorage::F32), "Params", size_of::<super::rope::RopeParams>()),
            (Variant::new(Kernel::QuantizeK), "Params", size_of::<super::quantize::QuantizeParams>()),
            (Variant::new(Kernel::MatVec).weight(GgmlType::Q4_K), "Params", size_of::<super::matmul::ProductParams>()),
        ];
        for (variant, name, rust) in cases {
            let src = variant.source();
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
            let wgsl = module
                .types
                .iter()
                .find_map(|(_, t)| match &t.inner {
                    naga::TypeInner::Struct { span, .. } if t.name.as_deref() == Some(name) => Some(*span as usize),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{:?}: no struct {name}", variant.kernel));
            assert_eq!(rust, wgsl, "{:?}: {name} is {wgsl} bytes in WGSL, {rust} in Rust", variant.kernel);
        }
    }
}
