//! Op shapes and the counter-based random numbers shared by the WGSL kernels (`gpu`), the
//! CPU reference (`reference`) and the model graph (`model`). Defined once so all three agree.
//!
//! Layouts everywhere: activations `[N,C,H,W]` f32 row-major; convolution weights
//! `[C_out, C_in/groups, KH, KW]`; linear weights `[out, in]` (PyTorch's layouts).

/// Geometry of a 2-D convolution (square kernel, same stride and padding on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels (all groups together).
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (all groups together).
    pub c_out: usize,
    /// Kernel size (KH = KW).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Channel groups: both `c_in` and `c_out` are divisible by it.
    pub groups: usize,
}

impl ConvShape {
    /// The paper's conv1 on a batch of `n`: 3×227×227 in, 96 maps of 11×11 at stride 4.
    #[cfg(test)]
    pub(crate) const fn paper_conv1(n: usize) -> Self {
        ConvShape {
            n,
            c_in: 3,
            h: 227,
            w: 227,
            c_out: 96,
            k: 11,
            stride: 4,
            pad: 0,
            groups: 1,
        }
    }
    /// Output height: `(h + 2·pad − k) / stride + 1`.
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Elements of the input `[N,C_in,H,W]`.
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of the output `[N,C_out,OH,OW]`.
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    /// Elements of the weight `[C_out, C_in/groups, K, K]`.
    pub fn weight_len(&self) -> usize {
        self.c_out * (self.c_in / self.groups) * self.k * self.k
    }
    /// Multiply-adds of the forward pass (×2 for FLOPs).
    pub fn macs(&self) -> usize {
        self.output_len() * (self.c_in / self.groups) * self.k * self.k
    }
}

/// Shape of a fully connected layer: y `[N,Fout]` = x `[N,Fin]` · wᵀ, w `[Fout,Fin]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Batch size.
    pub n: usize,
    /// Input features.
    pub fin: usize,
    /// Output features.
    pub fout: usize,
}

impl LinearShape {
    /// Multiply-adds of the forward pass (×2 for FLOPs).
    pub fn macs(&self) -> usize {
        self.n * self.fin * self.fout
    }
}

/// Geometry of a max pooling (square window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window size (the paper: 3).
    pub k: usize,
    /// Stride (the paper: 2, so windows overlap).
    pub stride: usize,
}

impl PoolShape {
    /// Output height: `(h − k) / stride + 1` (no padding, floor).
    pub fn out_h(&self) -> usize {
        (self.h - self.k) / self.stride + 1
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.w - self.k) / self.stride + 1
    }
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }
}

/// Local response normalisation across channels, the paper's formula:
/// `b[c] = a[c] / (k + alpha · Σ_{c'=c−size/2}^{c+size/2} a[c']²)^beta`, alpha not divided by size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnParams {
    /// Window size n (odd; the paper: 5).
    pub size: usize,
    /// k (the paper: 2).
    pub k: f32,
    /// alpha (the paper: 1e-4).
    pub alpha: f32,
    /// beta (the paper: 0.75).
    pub beta: f32,
}

impl Default for LrnParams {
    fn default() -> Self {
        LrnParams {
            size: 5,
            k: 2.0,
            alpha: 1e-4,
            beta: 0.75,
        }
    }
}

/// Batch normalisation of `[N,C,H,W]` per channel, as PyTorch's `BatchNorm2d`: each channel
/// is normalised over its N·H·W values and scaled by γ, shifted by β. The constants are
/// PyTorch's defaults ([`BN_EPS`], [`BN_MOMENTUM`]), so a checkpoint means the same there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    /// Batch size.
    pub n: usize,
    /// Channels (one γ, β, running mean and variance each).
    pub c: usize,
    /// H·W.
    pub hw: usize,
}

impl BnShape {
    /// Elements of the input (and output).
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// Whether it has no elements (an invalid shape: every engine refuses it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values a channel is normalised over, N·H·W.
    pub fn per_channel(&self) -> usize {
        self.n * self.hw
    }
}

/// ε added to the variance before its square root (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// Weight of the new batch's statistic in the running averages (PyTorch's default):
/// `running ← (1 − m)·running + m·batch`, the running variance from the unbiased estimate.
pub const BN_MOMENTUM: f32 = 0.1;

/// The nonlinearity after each convolution and hidden fully connected layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x), the paper's choice.
    Relu,
    /// tanh(x), the saturating unit the paper compares against.
    Tanh,
}

/// lowbias32 (C. Wellons): a cheap integer hash with good avalanche. The WGSL kernels use the
/// same function (`shaders/random.wgsl`), so a mask or noise drawn on the GPU can be recomputed
/// on the CPU, and the backward pass can recompute dropout's mask instead of storing it.
pub fn hash_u32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform in [0, 1) for element `index` of the stream `seed`: `hash(hash(seed) ^ index) >> 8`
/// scaled by 2⁻²⁴ (24 bits, exact in f32).
pub fn uniform01(seed: u32, index: u32) -> f32 {
    (hash_u32(hash_u32(seed) ^ index) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Standard normal draw number `index` of stream `seed` by Box–Muller from the uniforms
/// `2·index` and `2·index+1` (u1 is moved into (0,1] so the log is finite).
pub fn normal(seed: u32, index: u32) -> f32 {
    let u1 = 1.0 - uniform01(seed, index.wrapping_mul(2));
    let u2 = uniform01(seed, index.wrapping_mul(2).wrapping_add(1));
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// The seed of one random stream: mixes a run seed, a step and a stream id (dropout layer,
/// augmentation) so every stream of every step differs and each can be recomputed.
pub fn stream_seed(run_seed: u64, step: u64, stream: u32) -> u32 {
    let lo = hash_u32(run_seed as u32 ^ hash_u32((run_seed >> 32) as u32));
    let s = hash_u32(lo ^ hash_u32(step as u32) ^ hash_u32((step >> 32) as u32 ^ 0x9e37_79b9));
    hash_u32(s ^ stream.wrapping_mul(0x85eb_ca6b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_geometry_matches_the_paper() {
        let c1 = ConvShape::paper_conv1(1);
        assert_eq!((c1.out_h(), c1.out_w()), (55, 55));
        let p1 = PoolShape {
            n: 1,
            c: 96,
            h: 55,
            w: 55,
            k: 3,
            stride: 2,
        };
        assert_eq!(p1.out_h(), 27);
        let c2 = ConvShape {
            n: 1,
            c_in: 96,
            h: 27,
            w: 27,
            c_out: 256,
            k: 5,
            stride: 1,
            pad: 2,
            groups: 2,
        };
        assert_eq!(c2.out_h(), 27);
        assert_eq!(c2.weight_len(), 256 * 48 * 25);
    }

    #[test]
    fn random_streams_are_uniform_and_distinct() {
        let n = 100_000u32;
        let mean: f64 = (0..n).map(|i| uniform01(7, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");
        let z: Vec<f64> = (0..n).map(|i| normal(7, i) as f64).collect();
        let zm = z.iter().sum::<f64>() / n as f64;
        let zv = z.iter().map(|v| (v - zm) * (v - zm)).sum::<f64>() / n as f64;
        assert!(
            zm.abs() < 0.02 && (zv - 1.0).abs() < 0.03,
            "normal mean {zm} var {zv}"
        );
        assert_ne!(uniform01(7, 0), uniform01(8, 0));
        assert_ne!(stream_seed(1, 0, 0), stream_seed(1, 1, 0));
        assert_ne!(stream_seed(1, 0, 0), stream_seed(1, 0, 1));
    }
}

/// One image's augmentation draws, as the augment kernel reads them (`shaders/augment.wgsl`,
/// 32 bytes, std430 layout). Drawn on the host from the run's random stream, so the CPU
/// reference can replay exactly what the GPU did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AugmentDraw {
    /// Column of the crop's top-left corner in the stored S×S image.
    pub x0: u32,
    /// Row of the crop's top-left corner.
    pub y0: u32,
    /// 1 to mirror the crop horizontally.
    pub flip: u32,
    /// Keeps `shift` 16-byte aligned as WGSL's vec4 requires.
    pub _pad: u32,
    /// The PCA lighting offset added to every pixel, [r, g, b, unused], in 0..255 units.
    pub shift: [f32; 4],
}

/// Geometry of one augmentation: a batch of stored S×S RGB u8 images to model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentShape {
    /// Images in the batch.
    pub n: usize,
    /// Side of the stored images (the shards' `size`).
    pub stored: usize,
    /// Side of the model input crop.
    pub crop: usize,
}
