//! Adapter and device setup, the compiled-pipeline cache, buffer helpers and async readback.

use crate::shader::Variant;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Debug, thiserror::Error)]
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
    /// A readback did not finish within its deadline ([`ReadPace`]): the GPU hangs without being
    /// lost, or never calls back.
    #[error("the GPU did not finish {what} within {waited_s:.0} s: it stopped responding")]
    Timeout { what: String, waited_s: f64 },
    #[error("the GPU refused an operation (validation error): {0}")]
    Validation(String),
    #[error("the GPU failed internally: {0}")]
    Internal(String),
    /// Out of memory after loading, in an operation the device reported on its own (the load's
    /// allocations are [`GpuError::OutOfMemory`]).
    #[error("the GPU ran out of memory while running: {0}")]
    RanOutOfMemory(String),
    /// The GPU computed something a CPU check found wrong.
    #[error("the GPU computed a wrong result: {0}")]
    WrongResult(String),
    #[error("GPU error: {0}")]
    Wgpu(String),
    /// The file's hyperparameters are not a model this engine runs.
    #[error(transparent)]
    Config(#[from] carebot_model::config::ConfigError),
    /// The file is not a GGUF that can be read.
    #[error(transparent)]
    Gguf(#[from] carebot_model::gguf::GgufError),
    /// Reading the model file failed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// A tensor is missing, of a shape or format the engine cannot read, or arrived incomplete.
    #[error("tensor {name:?}: {problem}")]
    Tensor { name: String, problem: String },
    /// A model shape, weight format or size the engine does not run.
    #[error("{0}")]
    Unsupported(String),
    /// Arguments that cannot run (no tokens, a token outside the vocabulary, sizes out of range).
    #[error("{0}")]
    BadInput(String),
    /// The tokens do not fit the KV cache.
    #[error("the context is full: {needed} positions needed, the KV cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    /// Calls in an order the engine does not take (the caller's mistake).
    #[error("{0}")]
    Usage(&'static str),
}

impl GpuError {
    /// After this error the device's results cannot be trusted and it is not used again: every
    /// later call on the same context fails with the same error ([`GpuContext::check`]), and the
    /// model must be loaded again on a new device.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GpuError::DeviceLost(_)
                | GpuError::Timeout { .. }
                | GpuError::Validation(_)
                | GpuError::Internal(_)
                | GpuError::RanOutOfMemory(_)
                | GpuError::WrongResult(_)
        )
    }
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
    health: Arc<Mutex<Health>>,
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

        // Every error no narrower scope caught (the load pushes its own for out-of-memory) lands
        // here, classified: this is the scope around every submission of every token, without a
        // round trip per token to pop one. A lost device wakes every readback waiting on it.
        let health = Arc::new(Mutex::new(Health::default()));
        let on_lost = health.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut h = lock(&on_lost);
            h.lost = Some(format!("{reason:?}: {message}"));
            h.waiting.drain(..).for_each(Waker::wake);
        });
        let on_error = health.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let fault = match e {
                wgpu::Error::OutOfMemory { source } => GpuError::RanOutOfMemory(source.to_string()),
                wgpu::Error::Validation { description, .. } => GpuError::Validation(description),
                wgpu::Error::Internal { description, .. } => GpuError::Internal(description),
            };
            // Only the first faults are worth reporting; a broken device may raise one per call.
            let mut h = lock(&on_error);
            if h.errors.len() < 8 {
                h.errors.push(fault);
            }
        }));

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
            health,
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

    /// Fails if the device was lost, an operation raised an error, or a readback timed out, now
    /// or ever before: the first such fault sticks, so a model is never run again on a device
    /// whose results can no longer be trusted.
    pub fn check(&self) -> Result<(), GpuError> {
        let mut h = lock(&self.health);
        if h.fault.is_none() {
            h.fault = match h.lost.clone() {
                Some(reason) => Some(GpuError::DeviceLost(reason)),
                None if h.errors.is_empty() => None,
                // The first error, classified; the rest (often its consequences) by their words.
                None => {
                    let mut errors = std::mem::take(&mut h.errors).into_iter();
                    let first = errors.next().expect("not empty");
                    let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
                    Some(match rest.is_empty() {
                        true => first,
                        false => with_detail(first, &format!(" (then: {})", rest.join("; "))),
                    })
                }
            };
        }
        h.fault.clone().map_or(Ok(()), Err)
    }

    /// Marks the device as failed with `fault` (unless it already failed) and returns the fault
    /// that sticks.
    pub(crate) fn fail(&self, fault: GpuError) -> GpuError {
        let _ = self.check();
        lock(&self.health).fault.get_or_insert(fault).clone()
    }

    /// For fault tests only (never called by the app): the map callbacks of later readbacks are
    /// dropped, as a GPU that never finishes would, so a readback ends by its deadline or by a
    /// lost device.
    #[doc(hidden)]
    pub fn withhold_readbacks_for_tests(&self) {
        lock(&self.health).withhold_readbacks = true;
    }

    /// The compiled pipeline for a kernel variant (compiled on first use, then cached).
    pub fn pipeline(&self, variant: &Variant) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(variant) {
            return p.clone();
        }
        let label = format!("{:?}{:?}", variant.kernel, variant.weights);
        let source = variant.source();
        crate::shader::dump(variant, &source);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
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
    /// `len` bytes. Always ends: with the bytes, with [`GpuError::DeviceLost`] as soon as the
    /// device is lost, or with [`GpuError::Timeout`] after `within` (which then sticks, as every
    /// fault does: [`GpuContext::check`]).
    pub async fn read(&self, buffer: &wgpu::Buffer, len: u64, within: Duration) -> Result<Vec<u8>, GpuError> {
        self.check()?;
        let state = Arc::new(Mutex::new(MapState::default()));
        let callback_state = state.clone();
        let withhold = lock(&self.health).withhold_readbacks;
        let len = len.max(4).next_multiple_of(4);
        buffer.map_async(wgpu::MapMode::Read, 0..len, move |result| {
            if withhold {
                return;
            }
            let mut s = lock(&callback_state);
            s.result = Some(result.map_err(|e| e.to_string()));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        let timeout = || GpuError::Timeout { what: "reading results back".into(), waited_s: within.as_secs_f64() };
        // Natively the wait blocks here, bounded; once it returns the callback has run, or never
        // will (so the future below sees a result, a lost device or an expired deadline).
        #[cfg(not(target_arch = "wasm32"))]
        let expired = match self.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(within) }) {
            Ok(_) => DeadlineFuture::Expired,
            Err(wgpu::PollError::Timeout) => return Err(self.fail(timeout())),
            Err(e) => return Err(self.fail(GpuError::Internal(format!("waiting for the GPU: {e}")))),
        };
        // In the browser the page's event loop delivers the callback; a timer bounds the wait.
        #[cfg(target_arch = "wasm32")]
        let expired = DeadlineFuture::Timer(gloo_timers::future::TimeoutFuture::new(
            within.as_millis().min(u32::MAX as u128) as u32,
        ));
        let mapped = MapFuture { state, health: self.health.clone(), expired, registered: None }.await;
        match mapped {
            MapOutcome::Mapped => {}
            MapOutcome::Failed(e) => {
                // A map fails when the device goes (destroyed or lost) or by our own mistake.
                self.check()?;
                return Err(self.fail(GpuError::Internal(format!("reading results back from the GPU failed: {e}"))));
            }
            MapOutcome::Lost => return Err(self.check().expect_err("lost")),
            MapOutcome::Expired => return Err(self.fail(timeout())),
        }
        let bytes = buffer.get_mapped_range(0..len).map_err(|e| GpuError::Wgpu(e.to_string()))?.to_vec();
        buffer.unmap();
        self.check()?;
        Ok(bytes)
    }
}

/// What the device has reported, and the readbacks waiting on it.
#[derive(Default)]
struct Health {
    lost: Option<String>,
    errors: Vec<GpuError>,
    /// The first fault, returned by every later [`GpuContext::check`].
    fault: Option<GpuError>,
    /// Wakers of readbacks in flight, woken when the device is lost.
    waiting: Vec<Waker>,
    withhold_readbacks: bool,
}

/// A poisoned lock here only means a panic elsewhere while it was held; the flags stay valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `fault` with `more` appended to its words (the kind stays).
fn with_detail(fault: GpuError, more: &str) -> GpuError {
    match fault {
        GpuError::Validation(d) => GpuError::Validation(d + more),
        GpuError::Internal(d) => GpuError::Internal(d + more),
        GpuError::RanOutOfMemory(d) => GpuError::RanOutOfMemory(d + more),
        other => other,
    }
}

/// How long a readback may take before the GPU counts as hung: never less than a floor (a real
/// GPU resets a hung queue itself within seconds, and the browser then reports the device
/// lost), and otherwise many times the slowest rate seen so far for the work submitted, so that
/// a software adapter at tens of seconds per token of an 8B model is never cut off. Before any
/// measurement the rate is a generous guess.
#[derive(Clone, Debug)]
pub struct ReadPace {
    /// Slowest seconds per unit of work (a token, a block) seen so far.
    slowest: Option<f64>,
}

impl ReadPace {
    const FLOOR_S: f64 = 120.0;
    const MARGIN: f64 = 10.0;
    /// A minute per unit before anything was measured: three times the slowest rate measured
    /// anywhere (an 8B decode step on lavapipe, 21 s, BENCHMARKS.md).
    const FIRST_GUESS_S: f64 = 60.0;

    pub fn new() -> Self {
        ReadPace { slowest: None }
    }

    /// The deadline for a readback of `units` of work.
    pub fn deadline(&self, units: usize) -> Duration {
        let rate = self.slowest.map_or(Self::FIRST_GUESS_S, |r| Self::MARGIN * r);
        Duration::from_secs_f64(Self::FLOOR_S + rate * units.max(1) as f64)
    }

    /// Records that `units` took `seconds` (submission to readback).
    pub fn record(&mut self, units: usize, seconds: f64) {
        let rate = seconds / units.max(1) as f64;
        self.slowest = Some(self.slowest.map_or(rate, |r| r.max(rate)));
    }
}

impl Default for ReadPace {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds on a monotonic clock (the page's clock in the browser, where `Instant` is missing).
pub fn now_s() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
}

#[derive(Default)]
struct MapState {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

enum MapOutcome {
    Mapped,
    Failed(String),
    Lost,
    Expired,
}

/// When a readback stops waiting.
enum DeadlineFuture {
    /// Natively: the bounded poll already returned, so whatever has not happened never will.
    #[cfg(not(target_arch = "wasm32"))]
    Expired,
    #[cfg(target_arch = "wasm32")]
    Timer(gloo_timers::future::TimeoutFuture),
}

impl DeadlineFuture {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            DeadlineFuture::Expired => {
                let _ = cx;
                true
            }
            #[cfg(target_arch = "wasm32")]
            DeadlineFuture::Timer(t) => Pin::new(t).poll(cx).is_ready(),
        }
    }
}

/// A map callback, a lost device or the deadline, whichever comes first.
struct MapFuture {
    state: Arc<Mutex<MapState>>,
    health: Arc<Mutex<Health>>,
    expired: DeadlineFuture,
    /// Its waker in [`Health::waiting`], taken out again when it ends.
    registered: Option<Waker>,
}

impl Drop for MapFuture {
    fn drop(&mut self) {
        if let Some(w) = self.registered.take() {
            lock(&self.health).waiting.retain(|other| !other.will_wake(&w));
        }
    }
}

impl Future for MapFuture {
    type Output = MapOutcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut s = lock(&self.state);
            match s.result.take() {
                Some(Ok(())) => return Poll::Ready(MapOutcome::Mapped),
                Some(Err(e)) => return Poll::Ready(MapOutcome::Failed(e)),
                None => s.waker = Some(cx.waker().clone()),
            }
        }
        let this = &mut *self;
        {
            let mut h = lock(&this.health);
            if h.lost.is_some() {
                return Poll::Ready(MapOutcome::Lost);
            }
            if !this.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                if let Some(old) = this.registered.take() {
                    h.waiting.retain(|other| !other.will_wake(&old));
                }
                h.waiting.push(cx.waker().clone());
                this.registered = Some(cx.waker().clone());
            }
        }
        if this.expired.expired(cx) {
            return Poll::Ready(MapOutcome::Expired);
        }
        Poll::Pending
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

#[cfg(test)]
mod tests {
    use super::ReadPace;

    #[test]
    fn read_deadlines_follow_the_slowest_pace_seen_with_a_floor() {
        let mut pace = ReadPace::new();
        // Before any measurement: the floor and a minute per token.
        assert_eq!(pace.deadline(3).as_secs(), 120 + 3 * 60);
        // A fast GPU: the floor dominates.
        pace.record(100, 0.05);
        assert_eq!(pace.deadline(1).as_secs(), 120);
        // An 8B decode step on lavapipe (21 s): ten times that per token, and it stays the slowest.
        pace.record(1, 21.0);
        pace.record(50, 1.0);
        assert_eq!(pace.deadline(2).as_secs(), 120 + 2 * 210);
        // No tokens counts as one.
        assert_eq!(pace.deadline(0), pace.deadline(1));
    }
}
