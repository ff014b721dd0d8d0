//! The GEMM core every matrix product runs on (the fully connected layers and the three
//! products of a convolution), generated as straight-line WGSL for one tile configuration.
//!
//! Why generated: the 8×8 outputs of a thread must live in registers. Held in a dynamically
//! indexed array they spill (an 8×8 SGEMM measured 2.2 TFLOP/s against 19 for 4×4 on an H200
//! through Vulkan, 2026-11-27), and WGSL has no unrolling directive, so the core is written out
//! by Rust with one named `vec4` variable per four outputs and every K step unrolled.
//!
//! The core: a workgroup computes a BM×BN tile of C = op(A)·op(B) as (BM/TM)×(BN/TN) threads
//! of TM×TN outputs. Each K step of BK, every thread loads its share of the next A and B tiles
//! from global memory into registers (so the loads are in flight during the arithmetic),
//! computes on the current shared tiles, stores its registers into the other half of the
//! double-buffered shared tiles, and meets the others at one barrier. Shared tiles are stored
//! K-major as `vec4`s so each thread reads its rows and columns with 128-bit loads; each K row
//! is padded by one `vec4`, which keeps the alignment and spreads a warp's transposing stores
//! over the banks. A thread's TM rows are two runs of four, `ty·4` and `BM/2 + ty·4` (and its
//! TN columns likewise), so a warp's `vec4` reads hit consecutive 16-byte words.
//!
//! The op (a shader in `shaders/` with [`GemmEntry`] entries) supplies, per entry prefix `P`:
//! - `fn P_part(z: u32) -> Part`: what workgroup_id.z means (group, split-K slice, K range);
//! - `fn P_a_row(p: Part, m: u32) -> R` and `fn P_a_at(p: Part, r: R, k: u32) -> f32`: op(A)
//!   `[m, k]`, with what depends on m alone computed once per thread (zero outside M×K);
//! - `fn P_b_col(p: Part, n: u32) -> C` and `fn P_b_at(p: Part, c: C, k: u32) -> f32`: op(B)
//!   `[k, n]` likewise (a convolution decomposes its output column here, once);
//! - `fn P_store4(p: Part, m: u32, n: u32, v: vec4<f32>)`: the epilogue for C `[m, n..n+4]`
//!   (bias, activation, accumulation, split-K partials; it checks the bounds).
//!
//! `Part` is declared here: `struct Part { g: u32, split: u32, k_begin: u32, k_end: u32 }`.
use std::fmt::Write;

/// One GEMM-shaped entry point of an op shader.
#[derive(Debug)]
pub struct GemmEntry {
    /// Entry point name.
    pub name: &'static str,
    /// Prefix of the op's functions (`P_part`, `P_a_row`, …).
    pub prefix: &'static str,
    /// Whether op(A)'s K index is the contiguous one in memory (A stored `[M,K]`); otherwise M
    /// is (A stored `[K,M]`). Decides which index consecutive threads load, for coalescing.
    pub a_k_contiguous: bool,
    /// Whether op(B)'s K index is the contiguous one (B stored `[N,K]`); otherwise N is.
    pub b_k_contiguous: bool,
}

/// A deliberate change to the generated core, for the tests of the self-test and the tuner:
/// the engine itself only generates [`Twist::Plain`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Twist {
    /// The core as designed.
    #[default]
    Plain,
    /// Broken on purpose: the first K tile is read one element late (an off-by-one in the
    /// generated loads), so every product is wrong; the self-test must drop it.
    OffByOne,
    /// Slowed on purpose: the K loop runs twice and the sum is halved, so it computes the
    /// same product (within rounding) in about twice the time; the tuner must not pick it.
    Twice,
}

/// Which core computes the tile's products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Core {
    /// f32 fused multiply-adds, each thread `tm`×`tn` outputs (this file).
    #[default]
    Fma,
    /// 16×16×16 cooperative-matrix products (tensor cores) on f16 copies of the operands
    /// with f32 accumulation, each 32-wide subgroup `tm`×`tn` fragments
    /// ([`super::coop`]); only under `--precision mixed` on an adapter that has the feature.
    Coop,
}

/// A tile configuration: the workgroup's C tile, its K step and each thread's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Rows of C per workgroup (a multiple of `tm`, and of 8 when `tm` is 8).
    pub bm: u32,
    /// Columns of C per workgroup (a multiple of `tn`, and of 8 when `tn` is 8).
    pub bn: u32,
    /// K step (the depth of the shared tiles).
    pub bk: u32,
    /// Rows per thread: 4 or 8.
    pub tm: u32,
    /// Columns per thread: 4 or 8.
    pub tn: u32,
    /// [`Twist::Plain`] except in tests.
    pub twist: Twist,
    /// The core ([`Core::Fma`] but for the mixed-precision candidates); with
    /// [`Core::Coop`], `tm`×`tn` count 16×16 fragments per subgroup, not outputs per thread.
    pub core: Core,
}

impl TileConfig {
    /// 128×128 tiles of 8×8 per thread, K step 8: 256 threads, the classic SGEMM shape for a
    /// large GPU (64 accumulators a thread; two workgroups fit an SM's registers).
    pub const LARGE: TileConfig = TileConfig {
        bm: 128,
        bn: 128,
        bk: 8,
        tm: 8,
        tn: 8,
        twist: Twist::Plain,
        core: Core::Fma,
    };
    /// 64×64 tiles of 4×4 per thread, K step 16: the previous core's shape.
    pub const SMALL: TileConfig = TileConfig {
        bm: 64,
        bn: 64,
        bk: 16,
        tm: 4,
        tn: 4,
        twist: Twist::Plain,
        core: Core::Fma,
    };

    /// Threads along N.
    pub fn wg_x(&self) -> u32 {
        self.bn / self.tn
    }
    /// Threads along M.
    pub fn wg_y(&self) -> u32 {
        self.bm / self.tm
    }
    /// Threads per workgroup.
    pub fn threads(&self) -> u32 {
        match self.core {
            Core::Fma => self.wg_x() * self.wg_y(),
            Core::Coop => super::coop::threads(self),
        }
    }
    /// Bytes of workgroup memory: two buffers of each padded shared tile.
    pub fn shared_bytes(&self) -> u32 {
        match self.core {
            Core::Fma => 2 * self.bk * (self.bm / 4 + 1 + self.bn / 4 + 1) * 16,
            Core::Coop => super::coop::shared_bytes(self),
        }
    }
    /// Why this configuration cannot be generated, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.core == Core::Coop {
            return super::coop::check(self);
        }
        let ok_t = |t: u32| t == 4 || t == 8;
        if !ok_t(self.tm) || !ok_t(self.tn) {
            return Err(format!(
                "outputs per thread {}×{} must be 4 or 8",
                self.tm, self.tn
            ));
        }
        if self.bm == 0 || self.bn == 0 || self.bk == 0 {
            return Err("empty tile".into());
        }
        // Two runs of four per thread need the tile's halves to be whole runs.
        let step = |t: u32| if t == 8 { 8 } else { 4 };
        if self.bm % step(self.tm) != 0 || self.bn % step(self.tn) != 0 {
            return Err(format!(
                "tile {}×{} is not a multiple of {}×{}",
                self.bm,
                self.bn,
                step(self.tm),
                step(self.tn)
            ));
        }
        Ok(())
    }
    /// Parses [`TileConfig::tag`]'s spelling, `BMxBNxBK/TMxTN`, and checks the result.
    pub fn parse(s: &str) -> Result<TileConfig, String> {
        let bad = || {
            format!(
                "tile `{s}`: expected BMxBNxBK/TMxTN, e.g. 128x128x8/8x8 (or BMxBNxBK/coopFMxFN, e.g. 64x64x32/coop2x2)"
            )
        };
        let (tile, per) = s.split_once('/').ok_or_else(bad)?;
        let (per, core) = match per.strip_prefix("coop") {
            Some(rest) => (rest, Core::Coop),
            None => (per, Core::Fma),
        };
        let nums = |part: &str| -> Result<Vec<u32>, String> {
            part.split('x')
                .map(|v| v.trim().parse::<u32>().map_err(|_| bad()))
                .collect()
        };
        let (t, p) = (nums(tile)?, nums(per)?);
        let (&[bm, bn, bk], &[tm, tn]) = (t.as_slice(), p.as_slice()) else {
            return Err(bad());
        };
        let cfg = TileConfig {
            bm,
            bn,
            bk,
            tm,
            tn,
            twist: Twist::Plain,
            core,
        };
        cfg.check().map(|_| cfg)
    }

    /// A short name for labels and cache keys: `128x128x8/8x8`, `64x64x32/coop2x2` for a
    /// cooperative-matrix tile (a test twist adds `+offbyone` or `+twice`, so it never
    /// shares a pipeline or a cache entry).
    pub fn tag(&self) -> String {
        let twist = match self.twist {
            Twist::Plain => "",
            Twist::OffByOne => "+offbyone",
            Twist::Twice => "+twice",
        };
        let core = match self.core {
            Core::Fma => "",
            Core::Coop => "coop",
        };
        format!(
            "{}x{}x{}/{core}{}x{}{twist}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

/// The WGSL every tiled op shares: the `Part` struct.
pub const PART_WGSL: &str =
    "struct Part {\n    g: u32,\n    split: u32,\n    k_begin: u32,\n    k_end: u32,\n}\n";

/// The workgroup arrays and one entry point per `entries`, for `cfg`.
pub fn generate(cfg: &TileConfig, entries: &[GemmEntry]) -> String {
    if cfg.core == Core::Coop {
        return super::coop::generate(cfg, entries);
    }
    let mut s = String::new();
    let sa = cfg.bm / 4 + 1;
    let sb = cfg.bn / 4 + 1;
    let _ = writeln!(s, "// generated by src/gpu/tiles.rs for tile {}", cfg.tag());
    let _ = writeln!(
        s,
        "var<workgroup> gemm_sa: array<vec4<f32>, {}>;\nvar<workgroup> gemm_sb: array<vec4<f32>, {}>;",
        2 * cfg.bk * sa,
        2 * cfg.bk * sb
    );
    for e in entries {
        entry(&mut s, cfg, e);
    }
    s
}

/// Which element of the A (or B) tile slot `t` of a thread loads: `(fixed, kk)` where `fixed`
/// is the row (column) inside the tile.
struct Slots {
    /// Elements of the tile.
    total: u32,
    /// Loads per thread.
    count: u32,
}

fn slots(tile_len: u32, bk: u32, threads: u32) -> Slots {
    let total = tile_len * bk;
    Slots {
        total,
        count: total.div_ceil(threads),
    }
}

fn entry(s: &mut String, cfg: &TileConfig, e: &GemmEntry) {
    let p = e.prefix;
    let threads = cfg.threads();
    let (bm, bn, bk) = (cfg.bm, cfg.bn, cfg.bk);
    let (sa, sb) = (bm / 4 + 1, bn / 4 + 1);
    let a = slots(bm, bk, threads);
    let b = slots(bn, bk, threads);
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
    w(s, format!("let tx = lidx % {}u;", cfg.wg_x()));
    w(s, format!("let ty = lidx / {}u;", cfg.wg_x()));
    // Slot coordinates and what depends only on the fixed index, once.
    for t in 0..a.count {
        w(s, format!("let ea{t} = lidx + {}u;", t * threads));
        if e.a_k_contiguous {
            w(s, format!("let am{t} = ea{t} / {bk}u;"));
            w(s, format!("let ak{t} = ea{t} % {bk}u;"));
        } else {
            w(s, format!("let am{t} = ea{t} % {bm}u;"));
            w(s, format!("let ak{t} = ea{t} / {bm}u;"));
        }
        w(s, format!("let ar{t} = {p}_a_row(part, m0 + am{t});"));
    }
    for t in 0..b.count {
        w(s, format!("let eb{t} = lidx + {}u;", t * threads));
        if e.b_k_contiguous {
            w(s, format!("let bn{t} = eb{t} / {bk}u;"));
            w(s, format!("let bk{t} = eb{t} % {bk}u;"));
        } else {
            w(s, format!("let bn{t} = eb{t} % {bn}u;"));
            w(s, format!("let bk{t} = eb{t} / {bn}u;"));
        }
        w(s, format!("let bc{t} = {p}_b_col(part, n0 + bn{t});"));
    }
    // A slot past the tile (when threads do not divide it) loads and stores nothing.
    let guard = |total: u32, count: u32, t: u32, var: &str| -> Option<String> {
        (t + 1 == count && count * threads > total).then(|| format!("{var}{t} < {total}u"))
    };
    let load = |s: &mut String, k: &str| {
        for t in 0..a.count {
            let expr = format!("{p}_a_at(part, ar{t}, {k} + ak{t})");
            match guard(a.total, a.count, t, "ea") {
                Some(g) => w(s, format!("if {g} {{ pa{t} = {expr}; }}")),
                None => w(s, format!("pa{t} = {expr};")),
            }
        }
        for t in 0..b.count {
            let expr = format!("{p}_b_at(part, bc{t}, {k} + bk{t})");
            match guard(b.total, b.count, t, "eb") {
                Some(g) => w(s, format!("if {g} {{ pb{t} = {expr}; }}")),
                None => w(s, format!("pb{t} = {expr};")),
            }
        }
    };
    let store = |s: &mut String, buf: &str| {
        for t in 0..a.count {
            let st = format!(
                "gemm_sa[({buf} * {bk}u + ak{t}) * {sa}u + am{t} / 4u][am{t} % 4u] = pa{t};"
            );
            match guard(a.total, a.count, t, "ea") {
                Some(g) => w(s, format!("if {g} {{ {st} }}")),
                None => w(s, st),
            }
        }
        for t in 0..b.count {
            let st = format!(
                "gemm_sb[({buf} * {bk}u + bk{t}) * {sb}u + bn{t} / 4u][bn{t} % 4u] = pb{t};"
            );
            match guard(b.total, b.count, t, "eb") {
                Some(g) => w(s, format!("if {g} {{ {st} }}")),
                None => w(s, st),
            }
        }
    };
    for t in 0..a.count {
        w(s, format!("var pa{t} = 0.0;"));
    }
    for t in 0..b.count {
        w(s, format!("var pb{t} = 0.0;"));
    }
    let rows = cfg.tm / 4;
    let cols = cfg.tn / 4;
    for i in 0..cfg.tm {
        for h in 0..cols {
            w(s, format!("var c{i}_{h} = vec4<f32>(0.0);"));
        }
    }
    // The loads, the first tile and the K loop, in `body` so the slowed variant can repeat them.
    let mut body = String::new();
    // The deliberately broken variant reads its first K tile one element late.
    let first = if cfg.twist == Twist::OffByOne {
        "part.k_begin + 1u"
    } else {
        "part.k_begin"
    };
    load(&mut body, first);
    store(&mut body, "0u");
    w(&mut body, "workgroupBarrier();".into());
    w(&mut body, "var cur = 0u;".into());
    w(
        &mut body,
        format!("for (var k0 = part.k_begin; k0 < part.k_end; k0 += {bk}u) {{"),
    );
    w(&mut body, format!("    let next = k0 + {bk}u;"));
    w(&mut body, "    let more = next < part.k_end;".into());
    w(&mut body, "    if more {".into());
    let mut inner = String::new();
    load(&mut inner, "next");
    for line in inner.lines() {
        w(&mut body, format!("        {}", line.trim_start()));
    }
    w(&mut body, "    }".into());
    w(&mut body, format!("    let abase = cur * {};", bk * sa));
    w(&mut body, format!("    let bbase = cur * {};", bk * sb));
    let comps = ["x", "y", "z", "w"];
    for kk in 0..bk {
        for r in 0..rows {
            let off = kk * sa + r * (bm / 8);
            w(
                &mut body,
                format!("    let a{kk}_{r} = gemm_sa[abase + {off}u + ty];"),
            );
        }
        for h in 0..cols {
            let off = kk * sb + h * (bn / 8);
            w(
                &mut body,
                format!("    let b{kk}_{h} = gemm_sb[bbase + {off}u + tx];"),
            );
        }
        for i in 0..cfg.tm {
            let (r, c) = (i / 4, comps[(i % 4) as usize]);
            for h in 0..cols {
                w(
                    &mut body,
                    format!("    c{i}_{h} = fma(vec4<f32>(a{kk}_{r}.{c}), b{kk}_{h}, c{i}_{h});"),
                );
            }
        }
    }
    w(&mut body, "    if more {".into());
    let mut inner = String::new();
    store(&mut inner, "(1u - cur)");
    for line in inner.lines() {
        w(&mut body, format!("        {}", line.trim_start()));
    }
    w(&mut body, "    }".into());
    w(&mut body, "    workgroupBarrier();".into());
    w(&mut body, "    cur = 1u - cur;".into());
    w(&mut body, "}".into());
    if cfg.twist == Twist::Twice {
        // The slowed variant: the whole K loop twice (the barrier keeps the second pass's
        // first store from racing the first pass's last reads), then half the sum.
        w(s, "for (var rep = 0u; rep < 2u; rep++) {".into());
        w(s, "workgroupBarrier();".into());
        s.push_str(&body);
        w(s, "}".into());
        for i in 0..cfg.tm {
            for h in 0..cols {
                w(s, format!("c{i}_{h} = c{i}_{h} * 0.5;"));
            }
        }
    } else {
        s.push_str(&body);
    }
    // Row i of the thread: the first run of four at ty·4, the second at BM/2 + ty·4.
    for i in 0..cfg.tm {
        let row = if i < 4 {
            format!("m0 + ty * 4u + {i}u")
        } else {
            format!("m0 + {}u + ty * 4u + {}u", bm / 2, i - 4)
        };
        for h in 0..cols {
            let col = if h == 0 {
                "n0 + tx * 4u".to_string()
            } else {
                format!("n0 + {}u + tx * 4u", bn / 2)
            };
            w(s, format!("{p}_store4(part, {row}, {col}, c{i}_{h});"));
        }
    }
    s.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_checked() {
        assert!(TileConfig::LARGE.check().is_ok());
        assert!(TileConfig::SMALL.check().is_ok());
        let bad = TileConfig {
            tm: 6,
            ..TileConfig::LARGE
        };
        assert!(bad.check().is_err());
        let odd = TileConfig {
            bm: 20,
            ..TileConfig::LARGE
        };
        assert!(odd.check().is_err());
        assert_eq!(TileConfig::LARGE.threads(), 256);
        assert_eq!(TileConfig::LARGE.tag(), "128x128x8/8x8");
        assert_eq!(TileConfig::parse("128x128x8/8x8"), Ok(TileConfig::LARGE));
        assert_eq!(
            TileConfig::parse(&TileConfig::SMALL.tag()),
            Ok(TileConfig::SMALL)
        );
        assert!(TileConfig::parse("128x128/8x8").is_err());
        assert!(TileConfig::parse("128x128x8/6x8").is_err());
    }

    #[test]
    fn the_generated_core_is_straight_line() {
        let e = [GemmEntry {
            name: "forward",
            prefix: "f",
            a_k_contiguous: true,
            b_k_contiguous: false,
        }];
        let src = generate(&TileConfig::LARGE, &e);
        // 64 accumulators as 16 named vec4s, no array-indexed accumulator.
        assert!(src.contains("var c7_1 = vec4<f32>(0.0);"));
        assert!(!src.contains("var c8_0"));
        assert!(!src.contains("array<vec4<f32>, 4>"));
        // One barrier per K step inside the loop, plus the one after the first tile.
        assert_eq!(src.matches("workgroupBarrier()").count(), 2);
        // Every K step unrolled: 8 K rows × 8 × 2 fused multiply-adds.
        assert_eq!(src.matches("fma(").count(), 8 * 8 * 2);
    }

    #[test]
    fn the_test_twists_generate_valid_wgsl_that_differs_from_the_plain_core() {
        use crate::gpu::kernel::Program;
        let plain = Program::Tiled(&crate::gpu::gemm::SHADER, TileConfig::SMALL).source();
        for twist in [Twist::OffByOne, Twist::Twice] {
            let t = TileConfig {
                twist,
                ..TileConfig::SMALL
            };
            assert!(t.tag().ends_with(if twist == Twist::Twice {
                "+twice"
            } else {
                "+offbyone"
            }));
            assert!(
                TileConfig::parse(&t.tag()).is_err(),
                "a twist never parses back"
            );
            for shader in [&crate::gpu::gemm::SHADER, &crate::gpu::conv::SHADER] {
                let src = Program::Tiled(shader, t).source();
                let module = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{}: {}", t.tag(), e.emit_to_string(&src)));
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::all(),
                )
                .validate(&module)
                .unwrap_or_else(|e| panic!("{}: {e:?}", t.tag()));
            }
            let src = Program::Tiled(&crate::gpu::gemm::SHADER, t).source();
            assert_ne!(src, plain);
        }
    }
}
