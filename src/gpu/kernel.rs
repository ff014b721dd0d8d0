//! Shader registry, pipeline cache and the dispatch plumbing every launcher shares: bind-group
//! layouts per entry point, a uniform buffer per dispatch (so many dispatches can sit in one
//! encoder, each with its own parameters), binding windows for tensors larger than one binding.
use std::sync::MutexGuard;

use wgpu::util::DeviceExt;

use super::context::PipelineKey;
use super::{Gpu, GpuError, Result, Tensor};

/// One WGSL file of `shaders/`.
#[derive(Debug)]
pub struct Shader {
    /// File stem, used in labels and cache keys.
    pub name: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// Shared WGSL prepended to `source`, in order: [`RANDOM_WGSL`] for kernels that draw
    /// random numbers, [`super::conv::COMMON_WGSL`] for the two convolution shaders.
    pub prelude: &'static [&'static str],
}

/// `shaders/random.wgsl`: the hash and uniform draw of [`crate::shape::hash_u32`] and
/// [`crate::shape::uniform01`], prepended to the shaders that need them.
pub const RANDOM_WGSL: &str = include_str!("../../shaders/random.wgsl");

impl Shader {
    /// The text handed to the compiler: the prelude, then the shader.
    pub fn full_source(&self) -> String {
        let mut text = String::new();
        for part in self.prelude {
            text.push_str(part);
            text.push('\n');
        }
        text.push_str(self.source);
        text
    }
}

/// Every shader, for the validation test and for warming caches.
pub fn all_shaders() -> [&'static Shader; 12] {
    [
        &super::augment::SHADER,
        &super::channels::SHADER,
        &super::gemm::SHADER,
        &super::conv::SHADER,
        &super::conv::DIRECT_SHADER,
        &super::activation::SHADER,
        &super::lrn::SHADER,
        &super::maxpool::SHADER,
        &super::dropout::SHADER,
        &super::softmax_xent::SHADER,
        &super::sgd::SHADER,
        &RANDOM_SHADER,
    ]
}

/// `random.wgsl` on its own (functions only), so the validation test names it when it breaks.
pub static RANDOM_SHADER: Shader = Shader {
    name: "random",
    source: RANDOM_WGSL,
    prelude: &[],
};

/// How one binding of an entry point is used; binding `i` of the group is `slots[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `var<uniform>` params struct.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
    /// A binding number this entry point does not use (left out of its layout).
    Unused,
}

/// An entry point and the bindings it uses, which must match the WGSL declarations.
#[derive(Debug)]
pub struct Entry {
    /// Entry point name.
    pub name: &'static str,
    /// Bindings 0.. of group 0.
    pub slots: &'static [Slot],
}

/// A byte range of a buffer bound to one slot.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset (a multiple of the device's storage offset alignment).
    pub offset: u64,
    /// Byte size.
    pub size: u64,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the cache leaves it consistent (inserts are single calls), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole tensor as one binding, or [`GpuError::BindingTooLarge`].
pub fn whole<'a>(
    gpu: &Gpu,
    op: &'static str,
    role: &'static str,
    t: &'a Tensor,
) -> Result<View<'a>> {
    let size = t.bytes().max(4);
    if size > gpu.max_binding() {
        return Err(GpuError::BindingTooLarge {
            op,
            tensor: role,
            bytes: size,
            limit: gpu.max_binding(),
        });
    }
    Ok(View {
        buffer: &t.buffer,
        offset: 0,
        size,
    })
}

/// Elements `[start, start + len)` of `t` as a binding window starting at an aligned offset at
/// or below `start`. Returns the view and the element index of `start` inside the window.
pub fn window<'a>(
    gpu: &Gpu,
    op: &'static str,
    role: &'static str,
    t: &'a Tensor,
    start: usize,
    len: usize,
    limit: u64,
) -> Result<(View<'a>, u32)> {
    let align = gpu.offset_alignment().max(4);
    let begin = start as u64 * 4;
    let offset = begin / align * align;
    let end = ((start + len) as u64 * 4).min(t.bytes()).max(offset + 4);
    let size = end - offset;
    if size > limit {
        return Err(GpuError::BindingTooLarge {
            op,
            tensor: role,
            bytes: size,
            limit,
        });
    }
    Ok((
        View {
            buffer: &t.buffer,
            offset,
            size,
        },
        ((begin - offset) / 4) as u32,
    ))
}

/// Workgroup counts for `groups` workgroups over a 1-D range: x up to the per-dimension limit,
/// the rest in y. Shaders rebuild the linear index from `workgroup_id` and `num_workgroups`.
pub fn grid_1d(gpu: &Gpu, op: &'static str, groups: u64) -> Result<[u32; 3]> {
    let max = u64::from(gpu.limits.max_compute_workgroups_per_dimension.max(1));
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(GpuError::TooLarge { op, size: groups });
    }
    Ok([x as u32, y as u32, 1])
}

/// Check that `n` fits the shaders' u32 indices.
pub fn u32_of(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| GpuError::TooLarge { op, size: n as u64 })
}

/// Ranges `(start, len)` covering `0..len` whose byte size fits `limit` and whose starts are
/// aligned, for element-wise ops over tensors larger than one binding.
pub fn elementwise_chunks(gpu: &Gpu, len: usize, limit: u64) -> Vec<(usize, usize)> {
    let align_elems = (gpu.offset_alignment().max(4) / 4) as usize;
    let max_elems = ((limit / 4) as usize / align_elems * align_elems).max(align_elems);
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let n = max_elems.min(len - start);
        out.push((start, n));
        start += n;
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

fn layout(
    gpu: &Gpu,
    shader: &Shader,
    entry: &Entry,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let mut cache = lock(&gpu.layouts);
    if let Some(l) = cache.get(&(shader.name, entry.name)) {
        return l.clone();
    }
    let entries: Vec<wgpu::BindGroupLayoutEntry> = entry
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let ty = match slot {
                Slot::Uniform => wgpu::BufferBindingType::Uniform,
                Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                Slot::Unused => return None,
            };
            Some(wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
        })
        .collect();
    let label = format!("{}.{}", shader.name, entry.name);
    let bgl = gpu
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
    let pl = gpu
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
    cache.insert((shader.name, entry.name), (bgl.clone(), pl.clone()));
    (bgl, pl)
}

fn module(gpu: &Gpu, shader: &Shader) -> wgpu::ShaderModule {
    let mut cache = lock(&gpu.modules);
    if let Some(m) = cache.get(shader.name) {
        return m.clone();
    }
    let source = shader.full_source();
    // SAFETY: every kernel guards its own indices against the sizes in its params (each
    // shader's header says how), and no kernel loops on data-dependent bounds, so removing
    // naga's injected bounds checks (about 1.6× on lavapipe) cannot read out of range.
    let m = unsafe {
        gpu.device.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            },
            wgpu::ShaderRuntimeChecks::unchecked(),
        )
    };
    cache.insert(shader.name, m.clone());
    m
}

/// The compute pipeline for `shader`/`entry` with `constants`, built once per device.
pub fn pipeline(
    gpu: &Gpu,
    shader: &'static Shader,
    entry: &'static Entry,
    constants: &[(&'static str, f64)],
) -> wgpu::ComputePipeline {
    let key = PipelineKey {
        shader: shader.name,
        entry: entry.name,
        constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
    };
    if let Some(p) = lock(&gpu.pipelines).get(&key) {
        return p.clone();
    }
    let (_, pl) = layout(gpu, shader, entry);
    let m = module(gpu, shader);
    let label = format!("{}.{}", shader.name, entry.name);
    let p = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &m,
            entry_point: Some(entry.name),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // Kernels write every workgroup element they read; zeroing would only cost time.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    lock(&gpu.pipelines).insert(key, p.clone());
    p
}

/// Record one dispatch of `entry` into `encoder`: a uniform buffer with `params` in binding 0,
/// `views` in the entry's used bindings 1.. in order, `groups` workgroups.
#[allow(clippy::too_many_arguments)]
pub fn record(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    shader: &'static Shader,
    entry: &'static Entry,
    constants: &[(&'static str, f64)],
    params: &[u8],
    views: &[View<'_>],
    groups: [u32; 3],
) -> Result<()> {
    let bindings: Vec<u32> = (1..entry.slots.len())
        .filter(|&i| entry.slots[i] != Slot::Unused)
        .map(|i| i as u32)
        .collect();
    if views.len() != bindings.len() {
        return Err(GpuError::Invalid {
            op: shader.name,
            reason: format!(
                "entry {} takes {} buffers, got {}",
                entry.name,
                bindings.len(),
                views.len()
            ),
        });
    }
    if groups.contains(&0) {
        // Nothing to do (an empty tensor); an empty dispatch is legal but pointless.
        return Ok(());
    }
    let p = pipeline(gpu, shader, entry, constants);
    let (bgl, _) = layout(gpu, shader, entry);
    let label = format!("{}.params", shader.name);
    let uniform = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&label),
            contents: params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: uniform.as_entire_binding(),
    }];
    for (&binding, v) in bindings.iter().zip(views) {
        entries.push(wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: v.buffer,
                offset: v.offset,
                size: std::num::NonZeroU64::new(v.size),
            }),
        });
    }
    let label = format!("{}.{}", shader.name, entry.name);
    let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(&label),
        layout: &bgl,
        entries: &entries,
    });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(&label),
        timestamp_writes: None,
    });
    pass.set_pipeline(&p);
    pass.set_bind_group(0, &bg, &[]);
    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    Ok(())
}

/// Fail with [`GpuError::Shape`] unless `t` holds `expected` elements.
pub fn expect_len(
    op: &'static str,
    tensor: &'static str,
    t: &Tensor,
    expected: usize,
) -> Result<()> {
    if t.len != expected {
        return Err(GpuError::Shape {
            op,
            tensor,
            expected,
            got: t.len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(shader: &Shader) -> naga::Module {
        let src = shader.full_source();
        match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => panic!(
                "shaders/{}.wgsl: {}",
                shader.name,
                e.emit_to_string_with_path(&src, shader.name)
            ),
        }
    }

    #[test]
    fn every_shader_parses_and_validates() {
        for shader in all_shaders() {
            let module = parse(shader);
            let mut v = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            );
            if let Err(e) = v.validate(&module) {
                panic!(
                    "shaders/{}.wgsl: {}",
                    shader.name,
                    e.emit_to_string_with_path(&shader.full_source(), shader.name)
                );
            }
        }
    }

    /// Byte size of the type of the `var<uniform>` at binding 0.
    fn uniform_size(shader: &Shader) -> u32 {
        let module = parse(shader);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        let (_, var) = module
            .global_variables
            .iter()
            .find(|(_, v)| v.space == naga::AddressSpace::Uniform)
            .unwrap_or_else(|| panic!("{} has no uniform", shader.name));
        layouter[var.ty].size
    }

    #[test]
    fn params_structs_match_the_wgsl_uniforms() {
        use std::mem::size_of;
        let cases: [(&Shader, usize); 8] = [
            (
                &super::super::gemm::SHADER,
                size_of::<super::super::gemm::GemmParams>(),
            ),
            (
                &super::super::conv::SHADER,
                size_of::<super::super::conv::ConvParams>(),
            ),
            (
                &super::super::activation::SHADER,
                size_of::<super::super::activation::ActivationParams>(),
            ),
            (
                &super::super::lrn::SHADER,
                size_of::<super::super::lrn::LrnShaderParams>(),
            ),
            (
                &super::super::maxpool::SHADER,
                size_of::<super::super::maxpool::PoolParams>(),
            ),
            (
                &super::super::dropout::SHADER,
                size_of::<super::super::dropout::DropoutParams>(),
            ),
            (
                &super::super::softmax_xent::SHADER,
                size_of::<super::super::softmax_xent::XentParams>(),
            ),
            (
                &super::super::sgd::SHADER,
                size_of::<super::super::sgd::SgdParams>(),
            ),
        ];
        for (shader, rust) in cases {
            assert_eq!(
                uniform_size(shader) as usize,
                rust,
                "{}: WGSL Params vs Rust struct size",
                shader.name
            );
        }
    }

    #[test]
    fn pipeline_keys_tell_shaders_entries_and_constants_apart() {
        let k = |shader, entry, c: &[(&'static str, f64)]| PipelineKey {
            shader,
            entry,
            constants: c.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
        };
        let base = k("gemm", "forward", &[("TILE_K", 16.0)]);
        assert_eq!(base, k("gemm", "forward", &[("TILE_K", 16.0)]));
        assert_ne!(base, k("conv", "forward", &[("TILE_K", 16.0)]));
        assert_ne!(base, k("gemm", "backward_input", &[("TILE_K", 16.0)]));
        assert_ne!(base, k("gemm", "forward", &[("TILE_K", 8.0)]));
    }
}
