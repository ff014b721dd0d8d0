//! Instance, adapters and logical devices. A [`Gpu`] is one logical device with its queue, the
//! adapter's limits (requested in full: the defaults are far too small for AlexNet) and the
//! pipeline cache shared by every launcher.
use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::conv::ConvKernels;
use super::coop::Precision;
use super::gemm::TilePolicy;
use super::tiles::TileConfig;
use super::{GpuError, Result};

/// What `alexnet devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Position in [`list_adapters`]' order: the index `--devices` and [`Gpu::new`] take.
    pub index: usize,
    /// Adapter name ("llvmpipe" for lavapipe).
    pub name: String,
    /// Graphics backend (Vulkan, Metal, Dx12, Gl).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage binding in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Workgroup (shared) memory in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Smallest and largest subgroup size; (0, 0) when unknown.
    pub subgroup_sizes: (u32, u32),
    /// Alignment of storage binding offsets in bytes.
    pub min_storage_buffer_offset_alignment: u32,
    /// Features the adapter offers.
    pub features: wgpu::Features,
}

fn instance() -> wgpu::Instance {
    // Vulkan, Metal, DX12: the GL backend gives compute-capable adapters too, but with lower
    // limits and noisy windowing-system probing, and every machine that has GL has one of these.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc)
}

fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .into_iter()
        // Only adapters that can run compute shaders are of use here.
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect()
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterSummary {
        index,
        name: info.name,
        backend: info.backend,
        device_type: info.device_type,
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
        min_storage_buffer_offset_alignment: limits.min_storage_buffer_offset_alignment,
        features: adapter.features(),
    }
}

/// Every adapter wgpu sees that supports compute, in a stable order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    adapters(&instance())
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The table `alexnet devices` prints.
pub fn devices_table(adapters: &[AdapterSummary]) -> String {
    let mut out = String::new();
    for a in adapters {
        let interesting = [
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
            (wgpu::Features::SHADER_F16, "shader-f16"),
            (wgpu::Features::SUBGROUP, "subgroup"),
            (wgpu::Features::IMMEDIATES, "immediates"),
            (
                wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
                "cooperative-matrix",
            ),
        ];
        let feats: Vec<&str> = interesting
            .iter()
            .filter(|(f, _)| a.features.contains(*f))
            .map(|(_, n)| *n)
            .collect();
        out.push_str(&format!(
            "[{}] {} ({:?}, {:?}) driver: {}\n    storage binding {}  buffer {}  workgroup memory {} KiB  invocations {}  subgroup {}..{}  offset alignment {}\n    features: {}\n",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            if a.driver.is_empty() { "?" } else { &a.driver },
            mib(a.max_storage_buffer_binding_size),
            mib(a.max_buffer_size),
            a.max_compute_workgroup_storage_size / 1024,
            a.max_compute_invocations_per_workgroup,
            a.subgroup_sizes.0,
            a.subgroup_sizes.1,
            a.min_storage_buffer_offset_alignment,
            if feats.is_empty() { "-".to_string() } else { feats.join(", ") },
        ));
    }
    out
}

/// `alexnet devices`: print the adapter table, or fail with [`GpuError::NoAdapter`].
pub fn print_devices() -> Result<()> {
    let list = list_adapters();
    if list.is_empty() {
        return Err(GpuError::NoAdapter);
    }
    print!("{}", devices_table(&list));
    Ok(())
}

/// Key of a cached compute pipeline: shader, entry point and override constants (as bits, so
/// the key is `Eq + Hash`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// Program key ([`super::kernel::Program::key`]): the shader's file stem, with the tile
    /// configuration for generated GEMM entries.
    pub shader: String,
    /// Entry point.
    pub entry: &'static str,
    /// Override constants, name and `f64::to_bits` of the value.
    pub constants: Vec<(&'static str, u64)>,
}

/// The bind-group layout of one entry point and the pipeline layout around it.
pub(crate) type LayoutPair = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// One logical device: device, queue, the adapter's description and the pipeline cache.
pub struct Gpu {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter it was made on.
    pub adapter: AdapterSummary,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    /// Largest storage binding the launchers use, in bytes: the device limit by default.
    /// Tests lower it to exercise the split paths for tensors larger than one binding.
    pub binding_limit: u64,
    /// Which convolution kernels this device runs: [`ConvKernels::for_device`] by default;
    /// tests set it to check both on one adapter.
    pub conv_kernels: ConvKernels,
    /// How the tiled kernels pick their tiles: [`TilePolicy::for_device`] by default; tests
    /// set [`TilePolicy::Gpu`] on lavapipe to check the GPU configurations.
    pub tiles: TilePolicy,
    /// A tile configuration every matrix product uses in place of the policy's (benches try
    /// configurations on a new card this way, without a rebuild).
    pub tile_override: Option<TileConfig>,
    /// How the tuner behaves here ([`super::tuner::Settings::from_env`] by default).
    pub tuning: super::tuner::Settings,
    /// The precision asked for when the device was made.
    pub precision: Precision,
    /// Whether the device was made with the cooperative-matrix and f16 features, so the
    /// mixed-precision candidates may join the tuner's ([`Gpu::with_precision`]); tests
    /// clear it to check that they then stay out.
    pub coop: bool,
    /// Why `--precision mixed` fell back to the f32 kernels here, when it did.
    pub fallback: Option<String>,
    /// The tuned table and self-test outcomes this device has loaded or measured.
    pub(crate) tuner: Mutex<super::tuner::State>,
    pub(crate) modules: Mutex<HashMap<String, wgpu::ShaderModule>>,
    pub(crate) pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    pub(crate) scratch: Mutex<HashMap<&'static str, wgpu::Buffer>>,
    pub(crate) tables: Mutex<HashMap<TableKey, wgpu::Buffer>>,
    pub(crate) layouts: Mutex<HashMap<(&'static str, &'static str), LayoutPair>>,
}

/// What identifies a launcher's lookup table ([`Gpu::table_buffer`]): the table's name and
/// the numbers it was made from.
pub(crate) type TableKey = (&'static str, [usize; 9]);

impl Gpu {
    /// A logical device on adapter `index` of [`list_adapters`], with the adapter's full limits.
    /// Calling it twice with one index gives two independent devices on one adapter.
    pub fn new(index: usize) -> Result<Gpu> {
        Self::with_precision(index, Precision::Fp32)
    }

    /// [`Gpu::new`] with `precision`: under [`Precision::Mixed`], on an adapter that offers
    /// cooperative matrices, f16 and 32-wide subgroups ([`super::coop::availability`]), the
    /// device is made with those features and [`Gpu::coop`] set; elsewhere it runs the f32
    /// kernels, says why on stderr and keeps the reason in [`Gpu::fallback`].
    pub fn with_precision(index: usize, precision: Precision) -> Result<Gpu> {
        let instance = instance();
        let list = adapters(&instance);
        if list.is_empty() {
            return Err(GpuError::NoAdapter);
        }
        let count = list.len();
        let adapter = list
            .into_iter()
            .nth(index)
            .ok_or(GpuError::AdapterIndex { index, count })?;
        Self::from_adapter(index, &adapter, precision)
    }

    /// The first adapter that is a real GPU if there is one, else the first (lavapipe on a
    /// machine without a GPU). Tests and benches use this.
    pub fn best() -> Result<Gpu> {
        Self::best_with(Precision::Fp32)
    }

    /// [`Gpu::best`] at `precision` ([`Gpu::with_precision`]).
    pub fn best_with(precision: Precision) -> Result<Gpu> {
        let list = list_adapters();
        if list.is_empty() {
            return Err(GpuError::NoAdapter);
        }
        let index = list
            .iter()
            .find(|a| {
                matches!(
                    a.device_type,
                    wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
                )
            })
            .map_or(0, |a| a.index);
        Self::with_precision(index, precision)
    }

    /// A device on an already enumerated adapter, at `precision` (see [`Gpu::with_precision`]).
    pub fn from_adapter(
        index: usize,
        adapter: &wgpu::Adapter,
        precision: Precision,
    ) -> Result<Gpu> {
        let summary = summarize(index, adapter);
        let conv_kernels = ConvKernels::for_device(summary.device_type);
        let tiles = TilePolicy::for_device(summary.device_type);
        let limits = adapter.limits();
        let bad_env = |reason: String| GpuError::Invalid {
            op: "tuner",
            reason,
        };
        let tuning = super::tuner::Settings::from_env(summary.device_type).map_err(bad_env)?;
        // A forced tile (`ALEXNET_TILE=BMxBNxBK/TMxTN`) for every product, as the benches'
        // --tile does.
        let tile_override = match std::env::var("ALEXNET_TILE") {
            Ok(v) if !v.trim().is_empty() => Some(
                TileConfig::parse(v.trim()).map_err(|e| bad_env(format!("ALEXNET_TILE: {e}")))?,
            ),
            _ => None,
        };
        // Timestamps are the accurate way to time kernels; take them when offered.
        let mut features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        // The cooperative-matrix feature switches every module to the Vulkan memory model
        // (wgpu-hal), so it is asked for only under `mixed`, never for fp32 runs.
        let (coop, fallback) = match precision {
            Precision::Fp32 => (false, None),
            Precision::Mixed => {
                match super::coop::availability(adapter.features(), summary.subgroup_sizes) {
                    Ok(()) => (true, None),
                    Err(why) => (false, Some(why)),
                }
            }
        };
        if coop {
            features |= super::coop::required_features();
        }
        if let Some(why) = &fallback {
            eprintln!(
                "warning: --precision mixed on {}: {why}; running the fp32 kernels",
                summary.name
            );
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("alexnet.device"),
            required_features: features,
            required_limits: limits.clone(),
            // wgpu refuses EXPERIMENTAL_* features without this opt-in.
            experimental_features: if coop {
                // SAFETY: the experimental feature requested is cooperative matrices; the
                // kernels using them are validated by naga and self-tested against the
                // reference before the tuner may pick them.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|source| {
                GpuError::RequestDevice {
                    index,
                    name: summary.name.clone(),
                    source,
                }
            })?;
        Ok(Gpu {
            device,
            queue,
            adapter: summary,
            binding_limit: limits.max_storage_buffer_binding_size,
            conv_kernels,
            tiles,
            tile_override,
            tuning,
            precision,
            coop,
            fallback,
            tuner: Mutex::new(super::tuner::State::default()),
            limits,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            scratch: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// Largest storage binding the launchers may use, in bytes ([`Gpu::binding_limit`]).
    pub fn max_binding(&self) -> u64 {
        self.binding_limit
    }

    /// Alignment of storage-binding offsets in bytes.
    pub fn offset_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment)
    }

    /// A scratch storage buffer of at least `bytes` for an op's intermediates, kept and grown
    /// per name. Dispatches recorded in order see each other's writes, so one buffer serves
    /// every call of the op within an encoder.
    pub(crate) fn scratch_buffer(&self, name: &'static str, bytes: u64) -> wgpu::Buffer {
        let mut map = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(name) {
            if b.size() >= bytes {
                return b.clone();
            }
        }
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        map.insert(name, b.clone());
        b
    }

    /// The read-only lookup table of `key` (an op's entry and the shape it was made for),
    /// made by `make` on first use and kept: a launcher binds it on every step without
    /// building or uploading it again.
    pub(crate) fn table_buffer(
        &self,
        key: TableKey,
        make: impl FnOnce() -> Vec<u32>,
    ) -> wgpu::Buffer {
        let mut map = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(&key) {
            return b.clone();
        }
        let data = make();
        let b = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(key.0),
                contents: bytemuck::cast_slice(if data.is_empty() { &[0u32] } else { &data }),
                usage: wgpu::BufferUsages::STORAGE,
            });
        map.insert(key, b.clone());
        b
    }

    /// A fresh command encoder labelled `label`.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Submit a recorded encoder; returns at once (the GPU runs asynchronously).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit(Some(encoder.finish()))
    }

    /// Block until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Readback {
                label: "device.poll".into(),
                reason: e.to_string(),
            })
    }
}
