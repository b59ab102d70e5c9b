//! Adapter and device setup, the compiled-pipeline cache, buffer helpers and async readback.

use crate::shader::Variant;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[cfg_attr(
        not(target_arch = "wasm32"),
        error(
            "no GPU adapter found: {0}. Without a GPU, install Mesa's software Vulkan driver \
             (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
        )
    )]
    #[cfg_attr(
        target_arch = "wasm32",
        error("the browser offers no WebGPU adapter: {0} (is hardware acceleration on, or WebGPU enabled?)")
    )]
    NoAdapter(String),
    #[error("the GPU refused the device request: {0}")]
    RequestDevice(String),
    #[error(
        "the GPU is too small: {what} needs {:.1} MiB but the adapter offers {:.1} MiB",
        *needs as f64 / MIB, *offers as f64 / MIB
    )]
    TooSmall { what: String, needs: u64, offers: u64 },
    #[error(
        "out of GPU memory allocating {what} ({:.1} MiB, after {:.1} MiB already allocated)",
        *bytes as f64 / MIB, *allocated as f64 / MIB
    )]
    OutOfMemory { what: String, bytes: u64, allocated: u64 },
    #[error("the GPU lacks a feature this needs: {0}")]
    MissingFeature(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Wgpu(String),
    #[error("{0}")]
    Model(String),
}

/// How to pick and set up the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Caps the storage-binding size the engine plans for below what the device allows (tests use
    /// 1 MiB to exercise the splitting of big matrices).
    pub max_binding: Option<u64>,
    /// Never use `shader-f16`, even when the adapter has it.
    pub disable_f16: bool,
    /// Never use subgroup operations, even when the adapter has them.
    pub disable_subgroups: bool,
    /// Int8 activations in the matrix products (decode and prefill) whose matrices all have
    /// integer quants, where WGSL's `packed_4x8_integer_dot_product` exists: x rounded to int8 per
    /// 16 values and multiplied with the weights' integer bytes by packed dot products
    /// (`shaders/int8.wgsl`), which changes results by ≈ 0.5 % of a dot product. Off by default
    /// until a GPU measurement shows it pays (BENCHMARKS.md).
    pub int8_dot: bool,
    /// Prefill products on cooperative matrices (tensor cores), where the adapter multiplies
    /// 16×16 f16 matrices into f32 ones and has `shader-f16` and subgroups (wgpu's experimental
    /// cooperative-matrix feature, native only): weights and x are rounded to f16 for the
    /// products, the sums stay f32 (`shaders/matmul_coop.wgsl`). Off by default until a GPU
    /// measurement shows it pays (BENCHMARKS.md).
    pub coop_matrix: bool,
    /// Prefer the adapter whose name contains this (also read from `WGPU_ADAPTER_NAME`).
    pub adapter_name: Option<String>,
}

/// A device and what the engine may use on it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Largest storage binding the engine will create (device limit, or the forced cap).
    pub binding_limit: u64,
    /// Largest buffer the device allows.
    pub max_buffer: u64,
    /// `shader-f16` is enabled on the device.
    pub f16: bool,
    /// Subgroup operations are enabled on the device (the adapter has them, in sizes of 4 to 256,
    /// and [`GpuOptions::disable_subgroups`] is off); the decode products then reduce with them.
    /// wgpu 30 offers them natively (Vulkan, Metal, DX12) but not yet on WebGPU, where this is
    /// always false.
    pub subgroups: bool,
    /// The matrix products use int8 activations ([`GpuOptions::int8_dot`], and the WGSL
    /// extension exists).
    pub int8_dot: bool,
    /// The prefill products run on cooperative matrices of this side, 16 (GPUs) or 8 (lavapipe)
    /// ([`GpuOptions::coop_matrix`], and the adapter has them).
    pub coop_matrix: Option<u32>,
    lost: Arc<Mutex<Option<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Behind a mutex so that a context can be shared with the thread that uploads weights while
    /// this one compiles ([`crate::GpuModel::load_file`]).
    pipelines: Mutex<HashMap<Variant, wgpu::ComputePipeline>>,
}

/// Destroys the device, and with it every buffer, as soon as its context (or the model owning it)
/// goes. In the browser wgpu leaves a dropped buffer to the garbage collector, so without this the
/// weights of a model the app let go of could still hold the GPU's memory when the next one loads.
impl Drop for GpuContext {
    fn drop(&mut self) {
        self.device.destroy();
    }
}

impl GpuContext {
    pub async fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let wanted = options.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let adapter = match wanted {
            #[cfg(not(target_arch = "wasm32"))]
            Some(name) => {
                let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&name.to_lowercase()))
                    .ok_or_else(|| GpuError::NoAdapter(format!("none is named like {name:?} (found {names:?})")))?
            }
            _ => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| GpuError::NoAdapter(e.to_string()))?,
        };
        let int8_dot = options.int8_dot
            && instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let info = adapter.get_info();
        let offered = adapter.limits();
        let features = adapter.features();
        let f16 = features.contains(wgpu::Features::SHADER_F16) && !options.disable_f16;
        // The decode products size their workgroup memory for at most 64 subgroups of a
        // power-of-two size that divides their 256 invocations (shaders/matvec.wgsl).
        let sizes = (info.subgroup_min_size, info.subgroup_max_size);
        let usable_sizes = sizes.0 >= 4 && sizes.1 <= 256 && sizes.0.is_power_of_two() && sizes.1.is_power_of_two();
        let subgroups = features.contains(wgpu::Features::SUBGROUP) && usable_sizes && !options.disable_subgroups;
        let coop_matrix = if options.coop_matrix && f16 && subgroups { f16_coop_matrix(&adapter) } else { None };

        // Ask for the adapter's own maxima where they matter; everything else stays at WebGPU's
        // defaults, which every adapter meets.
        let mut limits = wgpu::Limits::defaults();
        if offered.max_storage_buffers_per_shader_stage < 8 {
            return Err(GpuError::TooSmall {
                what: "8 storage buffers per shader stage".into(),
                needs: 8,
                offers: offered.max_storage_buffers_per_shader_stage as u64,
            });
        }
        limits.max_storage_buffer_binding_size = offered.max_storage_buffer_binding_size;
        limits.max_buffer_size = offered.max_buffer_size;
        limits.max_compute_workgroups_per_dimension = offered.max_compute_workgroups_per_dimension;
        let mut required_features = wgpu::Features::empty();
        required_features.set(wgpu::Features::SHADER_F16, f16);
        required_features.set(wgpu::Features::SUBGROUP, subgroups);
        required_features.set(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, coop_matrix.is_some());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("carebot"),
                required_features,
                required_limits: limits.clone(),
                // SAFETY: wgpu's experimental features may hold bugs; the one asked for here is
                // cooperative matrices, only with GpuOptions::coop_matrix (off by default), and
                // the kernel using them is checked against the CPU reference like every other.
                experimental_features: match coop_matrix {
                    Some(_) => unsafe { wgpu::ExperimentalFeatures::enabled() },
                    None => wgpu::ExperimentalFeatures::disabled(),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;

        let lost = Arc::new(Mutex::new(None));
        let lost_flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_flag.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().unwrap().push(e.to_string())));

        let device_binding = limits.max_storage_buffer_binding_size;
        let binding_limit = options.max_binding.map_or(device_binding, |cap| cap.min(device_binding));
        Ok(GpuContext {
            device,
            queue,
            info,
            binding_limit,
            max_buffer: limits.max_buffer_size,
            f16,
            subgroups,
            int8_dot,
            coop_matrix,
            lost,
            errors,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// One line naming the adapter and what the engine uses of it.
    pub fn describe(&self) -> String {
        // WebGPU does not tell a page the adapter's name.
        let name = if self.info.name.is_empty() { "WebGPU adapter" } else { &self.info.name };
        format!(
            "{name} ({:?}, {:?}), bindings ≤ {:.0} MiB, shader-f16 {}, subgroups {}, int8 activations {}, \
             cooperative matrices {}",
            self.info.device_type,
            self.info.backend,
            self.binding_limit as f64 / MIB,
            if self.f16 { "on" } else { "off" },
            match self.subgroups {
                true => format!("on ({}–{} invocations)", self.info.subgroup_min_size, self.info.subgroup_max_size),
                false => "off".into(),
            },
            if self.int8_dot { "on" } else { "off" },
            match self.coop_matrix {
                Some(side) => format!("on ({side}×{side})"),
                None => "off".into(),
            },
        )
    }

    /// The adapter is a CPU implementation (Mesa's lavapipe, SwiftShader): correct but slow.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Fails if the device was lost or an operation raised an error since the last check.
    pub fn check(&self) -> Result<(), GpuError> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(GpuError::DeviceLost(reason));
        }
        let mut errors = self.errors.lock().unwrap();
        if !errors.is_empty() {
            let all = errors.join("; ");
            errors.clear();
            return Err(GpuError::Wgpu(all));
        }
        Ok(())
    }

    /// The compiled pipeline for a kernel variant (compiled on first use, then cached).
    pub fn pipeline(&self, variant: &Variant) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(variant) {
            return p.clone();
        }
        let label = format!("{:?}{:?}", variant.kernel, variant.weights);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(variant.source().into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).insert(variant.clone(), pipeline.clone());
        pipeline
    }

    /// Blocks until the GPU has finished everything submitted (native benchmarks and tools only:
    /// in the browser, wait on a readback instead).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<(), GpuError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Wgpu(e.to_string()))?;
        self.check()
    }

    /// A storage buffer of `size` bytes (rounded up to 4), checked against the binding limit.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer, GpuError> {
        let size = size.max(4).next_multiple_of(4);
        if size > self.binding_limit {
            return Err(GpuError::TooSmall { what: label.into(), needs: size, offers: self.binding_limit });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `data`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, data: &T) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytemuck::bytes_of(data));
        buffer
    }

    /// A buffer the CPU can map to read results back.
    pub fn readback(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Waits (asynchronously on wasm, where blocking would deadlock the page) until `buffer`, a
    /// MAP_READ buffer whose copy was already submitted, can be read, and returns its first
    /// `len` bytes.
    pub async fn read(&self, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<u8>, GpuError> {
        let state = Arc::new(Mutex::new(MapState::default()));
        let callback_state = state.clone();
        let len = len.max(4).next_multiple_of(4);
        buffer.map_async(wgpu::MapMode::Read, 0..len, move |result| {
            let mut s = callback_state.lock().unwrap();
            s.result = Some(result.map_err(|e| e.to_string()));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Wgpu(e.to_string()))?;
        MapFuture { state }.await.map_err(|e| {
            self.check().err().unwrap_or(GpuError::Wgpu(format!("reading results back from the GPU failed: {e}")))
        })?;
        let bytes = buffer.get_mapped_range(0..len).map_err(|e| GpuError::Wgpu(e.to_string()))?.to_vec();
        buffer.unmap();
        self.check()?;
        Ok(bytes)
    }
}

#[derive(Default)]
struct MapState {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

struct MapFuture {
    state: Arc<Mutex<MapState>>,
}

impl Future for MapFuture {
    type Output = Result<(), String>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.state.lock().unwrap();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Workgroup counts for `n` groups along one axis, spread over y when x would pass the 65535 cap
/// (kernels recover the flat index with `flat_group`).
pub fn spread(n: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if n <= MAX { [n.max(1), 1, 1] } else { [MAX, n.div_ceil(MAX), 1] }
}

/// The side of the f16 × f16 → f32 cooperative matrices the prefill kernel can use on this
/// adapter (`shaders/matmul_coop.wgsl`): 16 where it has them (GPUs), else 8 (Mesa's lavapipe).
/// Never in the browser: wgpu offers them natively only.
fn f16_coop_matrix(adapter: &wgpu::Adapter) -> Option<u32> {
    if !adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return None;
    }
    let sides = adapter.cooperative_matrix_properties().into_iter().filter_map(|m| {
        let f16_to_f32 = m.ab_type == wgpu::CooperativeScalarType::F16 && m.cr_type == wgpu::CooperativeScalarType::F32;
        (f16_to_f32 && m.m_size == m.n_size && m.n_size == m.k_size).then_some(m.m_size)
    });
    // A workgroup has 128 invocations and 1024 / side² tiles, at most 2 per subgroup: at least
    // 512 / side² subgroups, so of at most side² / 4 invocations.
    let max_subgroup = adapter.get_info().subgroup_max_size;
    sides.filter(|&side| (side == 8 || side == 16) && max_subgroup <= side * side / 4).max()
}
