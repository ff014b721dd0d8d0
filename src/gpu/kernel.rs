//! Shader registry, pipeline cache and the dispatch plumbing every launcher shares: programs
//! (a static shader, or a tiled GEMM shader generated for one tile configuration), bind-group
//! layouts per entry point, binding windows for tensors larger than one binding, and the
//! [`Launch`] a launcher hands to a [`super::Recorder`].
use std::borrow::Cow;
use std::sync::MutexGuard;

use wgpu::util::DeviceExt;

use super::context::PipelineKey;
use super::tiles::{self, GemmEntry, TileConfig};
use super::{Gpu, GpuError, Result, Tensor};

/// One WGSL file of `shaders/`.
#[derive(Debug)]
pub struct Shader {
    /// File stem, used in labels and cache keys.
    pub name: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// Shared WGSL prepended to `source`, in order: [`RANDOM_WGSL`] for kernels that draw
    /// random numbers, [`super::conv::COMMON_WGSL`] for the convolution shaders,
    /// [`tiles::PART_WGSL`] for tiled ones.
    pub prelude: &'static [&'static str],
    /// The GEMM entry points [`tiles::generate`] writes for this shader (tiled shaders only).
    pub gemm_entries: &'static [GemmEntry],
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

/// What a dispatch runs: a shader as written, or a tiled shader with its GEMM entry points
/// generated for one tile configuration (each configuration is its own module).
#[derive(Clone, Copy, Debug)]
pub enum Program {
    /// A shader as written.
    Static(&'static Shader),
    /// A tiled shader and the tile configuration its GEMM entries are generated for.
    Tiled(&'static Shader, TileConfig),
}

impl Program {
    /// The shader.
    pub fn shader(&self) -> &'static Shader {
        match self {
            Program::Static(s) | Program::Tiled(s, _) => s,
        }
    }
    /// Cache key and label: the shader's name, with the tile configuration when tiled.
    pub fn key(&self) -> Cow<'static, str> {
        match self {
            Program::Static(s) => Cow::Borrowed(s.name),
            Program::Tiled(s, t) => Cow::Owned(format!("{}@{}", s.name, t.tag())),
        }
    }
    /// The module's full text.
    pub fn source(&self) -> String {
        match self {
            Program::Static(s) => s.full_source(),
            Program::Tiled(s, t) => {
                // `enable` directives must precede everything else in a module.
                let mut text = match t.core {
                    tiles::Core::Fma => String::new(),
                    tiles::Core::Coop => super::coop::ENABLES.to_string(),
                };
                text.push_str(&s.full_source());
                text.push('\n');
                text.push_str(&tiles::generate(t, s.gemm_entries));
                text
            }
        }
    }
}

/// Every shader, for the validation test and for warming caches: each launcher's `SHADERS`,
/// then `random.wgsl` alone.
pub fn all_shaders() -> Vec<&'static Shader> {
    let mut all = super::launcher_shaders();
    all.push(&RANDOM_SHADER);
    all
}

/// `random.wgsl` on its own (functions only), so the validation test names it when it breaks.
pub static RANDOM_SHADER: Shader = Shader {
    name: "random",
    source: RANDOM_WGSL,
    prelude: &[],
    gemm_entries: &[],
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

/// One dispatch as a launcher describes it: what runs, with which override constants, uniform
/// params (binding 0), buffers (the entry's other used bindings, in order) and grid.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// The module.
    pub program: Program,
    /// The entry point.
    pub entry: &'static Entry,
    /// Override constants (part of the pipeline's identity).
    pub constants: &'a [(&'static str, f64)],
    /// Bytes of the uniform at binding 0.
    pub params: &'a [u8],
    /// Buffers of bindings 1.. that the entry uses.
    pub views: &'a [View<'a>],
    /// Workgroups.
    pub groups: [u32; 3],
    /// Floating-point operations the dispatch does (for the per-kernel time table; 0 when it
    /// is not a matrix product).
    pub flops: f64,
}

impl<'a> Launch<'a> {
    /// A launch of `entry` of the static `shader` with `params` and `views` over `groups`.
    pub fn new(
        shader: &'static Shader,
        entry: &'static Entry,
        params: &'a [u8],
        views: &'a [View<'a>],
        groups: [u32; 3],
    ) -> Launch<'a> {
        Launch {
            program: Program::Static(shader),
            entry,
            constants: &[],
            params,
            views,
            groups,
            flops: 0.0,
        }
    }
    /// The label of the dispatch: `shader.entry`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.program.shader().name, self.entry.name)
    }
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
    program: &Program,
    entry: &Entry,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    // The layout depends on the entry's bindings only, so every tile configuration of a
    // shader shares its entries' layouts.
    let key = (program.shader().name, entry.name);
    let mut cache = lock(&gpu.layouts);
    if let Some(l) = cache.get(&key) {
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
    let label = format!("{}.{}", key.0, key.1);
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
    cache.insert(key, (bgl.clone(), pl.clone()));
    (bgl, pl)
}

fn module(gpu: &Gpu, program: &Program) -> wgpu::ShaderModule {
    let key = program.key().into_owned();
    let mut cache = lock(&gpu.modules);
    if let Some(m) = cache.get(&key) {
        return m.clone();
    }
    let source = program.source();
    // SAFETY: every kernel guards its own indices against the sizes in its params or override
    // constants (each shader's header says how), and no kernel loops on data-dependent
    // bounds, so removing naga's injected bounds checks (about 1.6× on lavapipe) cannot read
    // out of range.
    let m = unsafe {
        gpu.device.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            },
            wgpu::ShaderRuntimeChecks::unchecked(),
        )
    };
    cache.insert(key, m.clone());
    m
}

/// The compute pipeline for `program`/`entry` with `constants`, built once per device.
pub fn pipeline(
    gpu: &Gpu,
    program: &Program,
    entry: &'static Entry,
    constants: &[(&'static str, f64)],
) -> wgpu::ComputePipeline {
    let key = PipelineKey {
        shader: program.key().into_owned(),
        entry: entry.name,
        constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
    };
    if let Some(p) = lock(&gpu.pipelines).get(&key) {
        return p.clone();
    }
    let (_, pl) = layout(gpu, program, entry);
    let m = module(gpu, program);
    let label = format!("{}.{}", key.shader, entry.name);
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

/// Check that `l` binds as many buffers as its entry uses.
/// A cooperative-matrix program on a device made without that feature would fail in wgpu's
/// shader validation (an uncaptured error); refuse it with a message instead.
pub(crate) fn check_program(gpu: &Gpu, program: &Program) -> Result<()> {
    match program {
        Program::Tiled(s, t) if t.core == tiles::Core::Coop && !gpu.coop => {
            Err(GpuError::Invalid {
                op: s.name,
                reason: format!(
                    "tile {} runs on cooperative matrices, which this device was not made with (--precision mixed on an adapter that has them)",
                    t.tag()
                ),
            })
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_views(l: &Launch<'_>) -> Result<()> {
    let used = l.entry.slots[1..]
        .iter()
        .filter(|&&s| s != Slot::Unused)
        .count();
    if l.views.len() != used {
        return Err(GpuError::Invalid {
            op: l.program.shader().name,
            reason: format!(
                "entry {} takes {used} buffers, got {}",
                l.entry.name,
                l.views.len()
            ),
        });
    }
    Ok(())
}

/// A uniform buffer holding `l.params` and the bind group of `l` around it.
pub(crate) fn bind_group(gpu: &Gpu, l: &Launch<'_>) -> wgpu::BindGroup {
    let (bgl, _) = layout(gpu, &l.program, l.entry);
    let label = format!("{}.params", l.program.shader().name);
    let uniform = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&label),
            contents: if l.params.is_empty() {
                &[0; 16]
            } else {
                l.params
            },
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let bindings = (1..l.entry.slots.len())
        .filter(|&i| l.entry.slots[i] != Slot::Unused)
        .map(|i| i as u32);
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: uniform.as_entire_binding(),
    }];
    for (binding, v) in bindings.zip(l.views) {
        entries.push(wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: v.buffer,
                offset: v.offset,
                size: std::num::NonZeroU64::new(v.size),
            }),
        });
    }
    let label = l.label();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(&label),
        layout: &bgl,
        entries: &entries,
    })
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

    /// The program of `shader` as the launchers build it: tiled shaders with a tile.
    fn program(shader: &'static Shader, tile: TileConfig) -> Program {
        if shader.gemm_entries.is_empty() {
            Program::Static(shader)
        } else {
            Program::Tiled(shader, tile)
        }
    }

    fn parse_program(p: &Program) -> naga::Module {
        let src = p.source();
        match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => panic!(
                "shaders/{}.wgsl: {}",
                p.key(),
                e.emit_to_string_with_path(&src, &p.key())
            ),
        }
    }

    fn parse(shader: &'static Shader) -> naga::Module {
        parse_program(&program(shader, TileConfig::LARGE))
    }

    /// `(module file, shader name)` of every `static …: Shader` declared in `src/gpu/`,
    /// read from the source text so that a declaration no launcher lists is still seen.
    fn declared_shaders() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu");
        let mut found = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut at = 0;
            for line in text.split_inclusive('\n') {
                at += line.len();
                let l = line.trim();
                if !(l.starts_with("pub static ") || l.starts_with("static "))
                    || !l.ends_with(": Shader = Shader {")
                {
                    continue;
                }
                let rest = &text[at..];
                let name = rest
                    .split_once("name: \"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .unwrap_or_else(|| panic!("{file}: a Shader without a name"))
                    .0;
                found.push((file.clone(), name.to_string()));
            }
        }
        assert!(
            found.len() > 5,
            "the scan of {} found too little",
            dir.display()
        );
        found
    }

    #[test]
    fn every_shader_file_and_declaration_is_in_the_list() {
        let listed = all_shaders();
        let names: Vec<&str> = listed.iter().map(|s| s.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "two shaders share a name: {names:?}"
        );
        for (file, name) in declared_shaders() {
            assert!(
                names.contains(&name.as_str()),
                "src/gpu/{file} declares shader `{name}`, which is not in all_shaders(); add it to that module's SHADERS"
            );
        }
        // Every file is some listed shader's source or part of its prelude.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        let mut files = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "wgsl") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let used = listed
                .iter()
                .any(|s| s.source == text || s.prelude.contains(&text.as_str()));
            assert!(
                used,
                "{} is used by no launcher in all_shaders(); give it a launcher or remove it",
                path.display()
            );
        }
        assert!(
            files >= listed.len(),
            "{files} shader files for {} shaders",
            listed.len()
        );
    }

    #[test]
    fn every_shader_parses_and_validates() {
        // Tiled shaders in every shape the launchers generate: 8×8 and 4×4 per thread, the
        // narrow heights, slot counts that do not divide the threads.
        let tiles = [
            TileConfig::LARGE,
            TileConfig::SMALL,
            TileConfig {
                bm: 48,
                ..TileConfig::LARGE
            },
            TileConfig {
                bm: 8,
                tm: 8,
                ..TileConfig::SMALL
            },
        ];
        for shader in all_shaders() {
            for &t in &tiles {
                let p = program(shader, t);
                let module = parse_program(&p);
                let mut v = naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::all(),
                );
                if let Err(e) = v.validate(&module) {
                    panic!(
                        "shaders/{}.wgsl: {}",
                        p.key(),
                        e.emit_to_string_with_path(&p.source(), &p.key())
                    );
                }
                if shader.gemm_entries.is_empty() {
                    break;
                }
            }
        }
    }

    /// Byte size of the type of the `var<uniform>` at binding 0.
    fn uniform_size(shader: &'static Shader) -> u32 {
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
        let cases: [(&'static Shader, usize); 9] = [
            (
                &super::super::batchnorm::SHADER,
                size_of::<super::super::batchnorm::BnParams>(),
            ),
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
        let k = |shader: &str, entry, c: &[(&'static str, f64)]| PipelineKey {
            shader: shader.to_string(),
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
