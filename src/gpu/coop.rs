//! The mixed-precision GEMM core: 16×16×16 cooperative-matrix products (tensor cores through
//! wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX`, VK_KHR_cooperative_matrix on Vulkan) on f16
//! copies of the operands with f32 accumulation, generated for the same op contract as
//! [`super::tiles`] (`P_part`, `P_a_row`, `P_a_at`, `P_b_col`, `P_b_at`, `P_store4`), so
//! every tiled entry (the fully connected layers' three products, the convolutions' three
//! implicit GEMMs, split-K) runs on it unchanged. Master data stay f32 in storage; only the
//! shared-memory copies of the A and B tiles are f16.
//!
//! The core: a workgroup computes a BM×BN tile of C as a grid of 32-wide subgroups ("warps"),
//! each owning FM×FN fragments of 16×16 (`tm`×`tn` of [`TileConfig`]). Each K step of BK
//! (a multiple of 16) every thread loads its share of the A and B tiles through the op's
//! functions (zero outside M×K and K×N, which pads every edge with zeros in shared memory),
//! stores it as f16, and the warps run `coopMultiplyAdd` over the shared tiles; the next
//! step's loads are issued before the products so they are in flight during them. An operand
//! whose K index is contiguous in memory is kept K-contiguous in shared memory too (loaded
//! with the matching layout), so the stores of consecutive threads are consecutive. The
//! epilogue stores each accumulator fragment into a per-warp f32 scratch and every lane
//! hands two `vec4`s of it to `P_store4` (bias, activation, accumulation, split-K partials).
//!
//! Why 32-wide warps by `local_invocation_index / 32`: a cooperative operation needs the
//! same pointer across its subgroup, and naga requires it in workgroup-uniform control flow,
//! so the fragments a warp owns are fixed when the WGSL is generated. That holds where the
//! subgroup size is 32 and subgroups are consecutive invocations (NVIDIA); the candidates
//! are offered only on adapters reporting a subgroup size of exactly 32, and the self-test
//! drops them anywhere that assumption fails.
//!
//! The self-test checks these tiles at the tolerance [`super::f16_tolerance`] derives.
use std::fmt::Write;

use super::tiles::{GemmEntry, TileConfig, Twist};

/// The directives a cooperative-matrix module starts with.
pub const ENABLES: &str = "enable f16;\nenable wgpu_cooperative_matrix;\n";

/// Subgroup width the generated core assumes.
pub const WARP: u32 = 32;

/// Fragment side (M, N and K of one cooperative product).
pub const FRAG: u32 = 16;

/// f16 elements of padding per shared row: keeps every fragment's start 16-byte aligned
/// (the cooperative loads' requirement) and spreads rows over the banks.
const PAD: u32 = 8;

/// f32 row stride of a warp's 16×16 epilogue scratch (padded by four, 16-byte aligned).
const SC: u32 = FRAG + 4;

/// Which kernels the matrix products run on.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere (the default).
    #[default]
    Fp32,
    /// The cooperative-matrix (f16 × f16 → f32) candidates join the tuner's where the adapter
    /// has the features; elsewhere it falls back to fp32 with a warning.
    Mixed,
}

impl Precision {
    /// Whether this is the default (config files leave it out then).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "mixed" => Ok(Precision::Mixed),
            other => Err(format!(
                "precision `{other}`: expected fp32 (f32 kernels only) or mixed (also f16 tensor-core kernels where the adapter has them)"
            )),
        }
    }
}

/// The device features the cooperative core needs.
pub fn required_features() -> wgpu::Features {
    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16
}

/// Whether an adapter with `features` and subgroup sizes `subgroups` (min, max) can run the
/// cooperative core; `Err` says why not, for the fallback line.
pub fn availability(features: wgpu::Features, subgroups: (u32, u32)) -> Result<(), String> {
    let missing: Vec<&str> = [
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "cooperative-matrix",
        ),
        (wgpu::Features::SHADER_F16, "shader-f16"),
    ]
    .iter()
    .filter(|(f, _)| !features.contains(*f))
    .map(|(_, n)| *n)
    .collect();
    if !missing.is_empty() {
        return Err(format!("it lacks {}", missing.join(" and ")));
    }
    if subgroups != (WARP, WARP) {
        return Err(format!(
            "its subgroup size is {}..{}, and the cooperative kernels assume exactly {WARP}",
            subgroups.0, subgroups.1
        ));
    }
    Ok(())
}

/// The cooperative-matrix candidates: 64×64, 128×64, 64×128 (2×2 fragments a warp) and
/// 128×128 (4×2), all with a K step of 32; 4 or 8 warps a workgroup.
pub fn candidate_tiles() -> Vec<TileConfig> {
    let t = |bm, bn, tm, tn| TileConfig {
        bm,
        bn,
        bk: 32,
        tm,
        tn,
        twist: Twist::Plain,
        core: super::tiles::Core::Coop,
    };
    vec![
        t(64, 64, 2, 2),
        t(128, 64, 2, 2),
        t(64, 128, 2, 2),
        t(128, 128, 4, 2),
    ]
}

/// Warps along M and N.
fn warps(t: &TileConfig) -> (u32, u32) {
    (t.bm / (FRAG * t.tm), t.bn / (FRAG * t.tn))
}

/// Threads of a cooperative tile.
pub fn threads(t: &TileConfig) -> u32 {
    let (wm, wn) = warps(t);
    wm * wn * WARP
}

/// The shared strides (in f16 elements) of the A and B tiles, by their contiguity.
fn strides(t: &TileConfig, a_k: bool, b_k: bool) -> (u32, u32) {
    let sa = if a_k { t.bk + PAD } else { t.bm + PAD };
    let sb = if b_k { t.bk + PAD } else { t.bn + PAD };
    (sa, sb)
}

/// Bytes of workgroup memory: the f16 A and B tiles (the larger padding of either layout)
/// and each warp's f32 epilogue scratch.
pub fn shared_bytes(t: &TileConfig) -> u32 {
    let a = (t.bm * (t.bk + PAD)).max(t.bk * (t.bm + PAD));
    let b = (t.bn * (t.bk + PAD)).max(t.bk * (t.bn + PAD));
    2 * (a + b) + threads(t) / WARP * FRAG * SC * 4
}

/// Why a cooperative tile cannot be generated, if it cannot.
pub fn check(t: &TileConfig) -> Result<(), String> {
    if t.tm == 0 || t.tn == 0 || t.bk == 0 || t.bk % FRAG != 0 {
        return Err(format!(
            "cooperative tile {}: fragments per warp must be at least 1 and the K step a multiple of {FRAG}",
            t.tag()
        ));
    }
    if t.bm == 0 || t.bn == 0 || t.bm % (FRAG * t.tm) != 0 || t.bn % (FRAG * t.tn) != 0 {
        return Err(format!(
            "cooperative tile {}: {}×{} is not a whole number of warps of {}×{} fragments of {FRAG}",
            t.tag(),
            t.bm,
            t.bn,
            t.tm,
            t.tn
        ));
    }
    if t.twist == Twist::Twice {
        return Err("the slowed test variant exists for the f32 core only".into());
    }
    Ok(())
}

/// The workgroup arrays and one entry point per `entries`, for the cooperative tile `cfg`
/// (the module must start with [`ENABLES`]; [`super::kernel::Program::source`] puts it there).
pub fn generate(cfg: &TileConfig, entries: &[GemmEntry]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "// generated by src/gpu/coop.rs for tile {}", cfg.tag());
    let a = (cfg.bm * (cfg.bk + PAD)).max(cfg.bk * (cfg.bm + PAD));
    let b = (cfg.bn * (cfg.bk + PAD)).max(cfg.bk * (cfg.bn + PAD));
    let _ = writeln!(
        s,
        "var<workgroup> coop_sa: array<f16, {a}>;\nvar<workgroup> coop_sb: array<f16, {b}>;\nvar<workgroup> coop_sc: array<f32, {}>;",
        threads(cfg) / WARP * FRAG * SC
    );
    for e in entries {
        entry(&mut s, cfg, e);
    }
    s
}

fn entry(s: &mut String, cfg: &TileConfig, e: &GemmEntry) {
    let p = e.prefix;
    let threads = threads(cfg);
    let (bm, bn, bk) = (cfg.bm, cfg.bn, cfg.bk);
    let (_, warps_n) = warps(cfg);
    let (sa, sb) = strides(cfg, e.a_k_contiguous, e.b_k_contiguous);
    let (a_total, b_total) = (bm * bk, bn * bk);
    let (a_count, b_count) = (a_total.div_ceil(threads), b_total.div_ceil(threads));
    let w = |s: &mut String, line: String| {
        s.push_str("    ");
        s.push_str(&line);
        s.push('\n');
    };
    let _ = writeln!(
        s,
        "\n@compute @workgroup_size({threads})\nfn {}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {{",
        e.name
    );
    w(s, format!("let part = {p}_part(wid.z);"));
    w(s, format!("let m0 = wid.y * {bm}u;"));
    w(s, format!("let n0 = wid.x * {bn}u;"));
    w(s, format!("let warp = lidx / {WARP}u;"));
    w(s, format!("let lane = lidx % {WARP}u;"));
    w(s, format!("let wm = warp / {warps_n}u;"));
    w(s, format!("let wn = warp % {warps_n}u;"));
    // Each slot's element of the tile and where it goes in shared memory, once.
    for t in 0..a_count {
        w(s, format!("let ea{t} = lidx + {}u;", t * threads));
        if e.a_k_contiguous {
            w(s, format!("let am{t} = ea{t} / {bk}u;"));
            w(s, format!("let ak{t} = ea{t} % {bk}u;"));
            w(s, format!("let as{t} = am{t} * {sa}u + ak{t};"));
        } else {
            w(s, format!("let am{t} = ea{t} % {bm}u;"));
            w(s, format!("let ak{t} = ea{t} / {bm}u;"));
            w(s, format!("let as{t} = ak{t} * {sa}u + am{t};"));
        }
        w(s, format!("let ar{t} = {p}_a_row(part, m0 + am{t});"));
    }
    for t in 0..b_count {
        w(s, format!("let eb{t} = lidx + {}u;", t * threads));
        if e.b_k_contiguous {
            w(s, format!("let bn{t} = eb{t} / {bk}u;"));
            w(s, format!("let bk{t} = eb{t} % {bk}u;"));
            w(s, format!("let bs{t} = bn{t} * {sb}u + bk{t};"));
        } else {
            w(s, format!("let bn{t} = eb{t} % {bn}u;"));
            w(s, format!("let bk{t} = eb{t} / {bn}u;"));
            w(s, format!("let bs{t} = bk{t} * {sb}u + bn{t};"));
        }
        w(s, format!("let bc{t} = {p}_b_col(part, n0 + bn{t});"));
    }
    // A slot past the tile (when threads do not divide it) loads and stores nothing.
    let guard = |total: u32, count: u32, t: u32, var: &str| -> Option<String> {
        (t + 1 == count && count * threads > total).then(|| format!("{var}{t} < {total}u"))
    };
    let load = |s: &mut String, k: &str, indent: &str| {
        for t in 0..a_count {
            let expr = format!("{p}_a_at(part, ar{t}, {k} + ak{t})");
            match guard(a_total, a_count, t, "ea") {
                Some(g) => w(s, format!("{indent}if {g} {{ pa{t} = {expr}; }}")),
                None => w(s, format!("{indent}pa{t} = {expr};")),
            }
        }
        for t in 0..b_count {
            let expr = format!("{p}_b_at(part, bc{t}, {k} + bk{t})");
            match guard(b_total, b_count, t, "eb") {
                Some(g) => w(s, format!("{indent}if {g} {{ pb{t} = {expr}; }}")),
                None => w(s, format!("{indent}pb{t} = {expr};")),
            }
        }
    };
    for t in 0..a_count {
        w(s, format!("var pa{t} = 0.0;"));
    }
    for t in 0..b_count {
        w(s, format!("var pb{t} = 0.0;"));
    }
    for i in 0..cfg.tm {
        for j in 0..cfg.tn {
            w(s, format!("var acc{i}_{j} = coop_mat16x16<f32, C>();"));
        }
    }
    // The deliberately broken variant reads its first K tile one element late.
    let first = if cfg.twist == Twist::OffByOne {
        "part.k_begin + 1u"
    } else {
        "part.k_begin"
    };
    load(s, first, "");
    w(
        s,
        format!("for (var k0 = part.k_begin; k0 < part.k_end; k0 += {bk}u) {{"),
    );
    for t in 0..a_count {
        let st = format!("coop_sa[as{t}] = f16(pa{t});");
        match guard(a_total, a_count, t, "ea") {
            Some(g) => w(s, format!("    if {g} {{ {st} }}")),
            None => w(s, format!("    {st}")),
        }
    }
    for t in 0..b_count {
        let st = format!("coop_sb[bs{t}] = f16(pb{t});");
        match guard(b_total, b_count, t, "eb") {
            Some(g) => w(s, format!("    if {g} {{ {st} }}")),
            None => w(s, format!("    {st}")),
        }
    }
    w(s, "    workgroupBarrier();".into());
    w(s, format!("    let next = k0 + {bk}u;"));
    w(s, "    if next < part.k_end {".into());
    load(s, "next", "        ");
    w(s, "    }".into());
    // Fragment starts: A is M×K (row-major when K-contiguous), B is K×N (column-major when
    // K-contiguous); `coopLoadT` reads row-major, `coopLoad` column-major.
    for kk in 0..bk / FRAG {
        for i in 0..cfg.tm {
            let (call, off) = if e.a_k_contiguous {
                (
                    "coopLoadT",
                    format!(
                        "(wm * {}u + {}u) * {sa}u + {}u",
                        cfg.tm * FRAG,
                        i * FRAG,
                        kk * FRAG
                    ),
                )
            } else {
                (
                    "coopLoad",
                    format!(
                        "{}u + wm * {}u + {}u",
                        kk * FRAG * sa,
                        cfg.tm * FRAG,
                        i * FRAG
                    ),
                )
            };
            w(
                s,
                format!(
                    "    let fa{kk}_{i} = {call}<coop_mat16x16<f16, A>>(&coop_sa[{off}], {sa}u);"
                ),
            );
        }
        for j in 0..cfg.tn {
            let (call, off) = if e.b_k_contiguous {
                (
                    "coopLoad",
                    format!(
                        "(wn * {}u + {}u) * {sb}u + {}u",
                        cfg.tn * FRAG,
                        j * FRAG,
                        kk * FRAG
                    ),
                )
            } else {
                (
                    "coopLoadT",
                    format!(
                        "{}u + wn * {}u + {}u",
                        kk * FRAG * sb,
                        cfg.tn * FRAG,
                        j * FRAG
                    ),
                )
            };
            w(
                s,
                format!(
                    "    let fb{kk}_{j} = {call}<coop_mat16x16<f16, B>>(&coop_sb[{off}], {sb}u);"
                ),
            );
        }
        for i in 0..cfg.tm {
            for j in 0..cfg.tn {
                w(
                    s,
                    format!(
                        "    acc{i}_{j} = coopMultiplyAdd(fa{kk}_{i}, fb{kk}_{j}, acc{i}_{j});"
                    ),
                );
            }
        }
    }
    w(s, "    workgroupBarrier();".into());
    w(s, "}".into());
    // The epilogue: one fragment at a time through the warp's scratch, two vec4s a lane.
    let scratch = FRAG * SC;
    for i in 0..cfg.tm {
        for j in 0..cfg.tn {
            w(
                s,
                format!("coopStoreT(acc{i}_{j}, &coop_sc[warp * {scratch}u], {SC}u);"),
            );
            w(s, "workgroupBarrier();".into());
            for q in 0..(FRAG * FRAG / 4).div_ceil(WARP) {
                w(s, format!("let e{i}_{j}_{q} = lane + {}u;", q * WARP));
                w(s, format!("let r{i}_{j}_{q} = e{i}_{j}_{q} / 4u;"));
                w(s, format!("let c{i}_{j}_{q} = (e{i}_{j}_{q} % 4u) * 4u;"));
                w(
                    s,
                    format!("let o{i}_{j}_{q} = warp * {scratch}u + r{i}_{j}_{q} * {SC}u + c{i}_{j}_{q};"),
                );
                let v = format!(
                    "vec4<f32>(coop_sc[o{i}_{j}_{q}], coop_sc[o{i}_{j}_{q} + 1u], coop_sc[o{i}_{j}_{q} + 2u], coop_sc[o{i}_{j}_{q} + 3u])"
                );
                w(
                    s,
                    format!(
                        "{p}_store4(part, m0 + (wm * {}u + {}u) + r{i}_{j}_{q}, n0 + (wn * {}u + {}u) + c{i}_{j}_{q}, {v});",
                        cfg.tm * FRAG,
                        i * FRAG,
                        cfg.tn * FRAG,
                        j * FRAG
                    ),
                );
            }
            w(s, "workgroupBarrier();".into());
        }
    }
    s.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gpu::kernel::Program;
    use crate::gpu::tiles::Core;

    /// naga's parse, validation with cooperative matrices and f16 enabled, and SPIR-V out:
    /// the module as the device would receive it.
    fn compile(src: &str, what: &str) -> Vec<u32> {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
        let caps = naga::valid::Capabilities::COOPERATIVE_MATRIX
            | naga::valid::Capabilities::SHADER_FLOAT16;
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
        // The convolution shader's override constants take their defaults here, as the
        // launcher's would be filled in by wgpu.
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            None,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: overrides: {e}"));
        naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"))
    }

    /// SPIR-V's OpCapability CooperativeMatrixKHR and OpCooperativeMatrixMulAddKHR.
    const CAP_COOP: u32 = 6022;
    const OP_MULADD: u32 = 4459;

    fn has_instruction(words: &[u32], opcode: u32, operand: Option<u32>) -> bool {
        let mut i = 5;
        while i < words.len() {
            let (len, op) = ((words[i] >> 16) as usize, words[i] & 0xffff);
            if op == opcode && operand.is_none_or(|v| words.get(i + 1) == Some(&v)) {
                return true;
            }
            i += len.max(1);
        }
        false
    }

    #[test]
    fn every_cooperative_candidate_validates_and_writes_spirv_for_every_tiled_shader() {
        let tiles = candidate_tiles();
        assert!(tiles.len() >= 4);
        for t in tiles {
            t.check().unwrap();
            assert_eq!(t.core, Core::Coop);
            assert_eq!(TileConfig::parse(&t.tag()), Ok(t), "{}", t.tag());
            for shader in [&crate::gpu::gemm::SHADER, &crate::gpu::conv::SHADER] {
                let src = Program::Tiled(shader, t).source();
                assert!(src.starts_with(ENABLES), "{}", t.tag());
                let words = compile(&src, &format!("{} {}", shader.name, t.tag()));
                assert!(has_instruction(&words, 17, Some(CAP_COOP)), "{}", t.tag());
                assert!(has_instruction(&words, OP_MULADD, None), "{}", t.tag());
                // One product per fragment of a warp per 16 of K, for every GEMM entry.
                let per_entry = t.tm * t.tn * t.bk / FRAG;
                assert_eq!(
                    src.matches("coopMultiplyAdd(").count() as u32,
                    per_entry * shader.gemm_entries.len() as u32
                );
            }
        }
    }

    #[test]
    fn the_broken_cooperative_variant_validates_and_differs() {
        let t = TileConfig {
            twist: Twist::OffByOne,
            ..candidate_tiles()[0]
        };
        let src = Program::Tiled(&crate::gpu::gemm::SHADER, t).source();
        compile(&src, &t.tag());
        assert_ne!(
            src,
            Program::Tiled(&crate::gpu::gemm::SHADER, candidate_tiles()[0]).source()
        );
        let slowed = TileConfig {
            twist: Twist::Twice,
            ..candidate_tiles()[0]
        };
        assert!(slowed.check().is_err());
    }

    #[test]
    fn the_f32_core_needs_no_enable_directive() {
        let src = Program::Tiled(&crate::gpu::gemm::SHADER, TileConfig::SMALL).source();
        assert!(!src.contains("enable "));
        assert!(!src.contains("coop"));
    }

    #[test]
    fn cooperative_tiles_are_checked_and_parsed() {
        let ok = candidate_tiles()[3];
        assert_eq!(ok.tag(), "128x128x32/coop4x2");
        assert_eq!(ok.threads(), 256);
        // f16 tiles 2·(128·40 + 128·40)... the larger layout, plus 8 scratch fragments.
        assert!(ok.shared_bytes() <= 48 * 1024, "{}", ok.shared_bytes());
        assert!(TileConfig::parse("64x64x24/coop2x2").is_err(), "K step 24");
        assert!(TileConfig::parse("48x64x32/coop2x2").is_err(), "48 rows");
        assert!(TileConfig::parse("64x64x32/coop0x2").is_err());
        let e = TileConfig::parse("64x64x32/cop2x2").unwrap_err();
        assert!(e.contains("coop2x2"), "{e}");
    }

    #[test]
    fn precision_parses_and_says_what_is_accepted() {
        assert_eq!("fp32".parse::<Precision>(), Ok(Precision::Fp32));
        assert_eq!(" Mixed".parse::<Precision>(), Ok(Precision::Mixed));
        let e = "bf16".parse::<Precision>().unwrap_err();
        assert!(e.contains("`bf16`") && e.contains("mixed"), "{e}");
        assert_eq!(Precision::default(), Precision::Fp32);
    }

    #[test]
    fn availability_needs_both_features_and_32_wide_subgroups() {
        let all = required_features() | wgpu::Features::TIMESTAMP_QUERY;
        assert_eq!(availability(all, (32, 32)), Ok(()));
        let e = availability(wgpu::Features::SHADER_F16, (32, 32)).unwrap_err();
        assert!(
            e.contains("cooperative-matrix") && !e.contains("shader-f16"),
            "{e}"
        );
        let e = availability(wgpu::Features::empty(), (32, 32)).unwrap_err();
        assert!(e.contains("cooperative-matrix and shader-f16"), "{e}");
        let e = availability(all, (32, 64)).unwrap_err();
        assert!(e.contains("32..64"), "{e}");
        assert!(availability(all, (0, 0)).is_err());
    }
}
