//! Launcher for `shaders/channels.wgsl`: a channel slice of one `[N,C,HW]` tensor copied or
//! added into another, the data movement of the two-column split.
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{GpuError, Recorder, Result, Tensor};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "channels",
    source: include_str!("../../shaders/channels.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static COPY: Entry = Entry {
    name: "copy",
    slots: &[Slot::Uniform, Slot::Read, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct ChannelParams {
    n: u32,
    hw: u32,
    k: u32,
    src_c: u32,
    src_off: u32,
    dst_c: u32,
    dst_off: u32,
    accumulate: u32,
}

/// Where a slice sits: `channels` per image in the tensor, the slice starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Channels per image of the tensor.
    pub channels: usize,
    /// First channel of the slice.
    pub offset: usize,
}

impl Slice {
    /// The slice at `offset` of a tensor with `channels` channels per image.
    pub fn at(channels: usize, offset: usize) -> Slice {
        Slice { channels, offset }
    }
}

/// The shape of a move: `n` images, `k` channels of `hw` values each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// Images.
    pub n: usize,
    /// Channels moved.
    pub k: usize,
    /// Values per channel (H·W; 1 for the features of a fully connected layer).
    pub hw: usize,
}

/// Records `dst[:, d.offset..d.offset+k] (+)= src[:, s.offset..s.offset+k]` over `m.n` images.
pub fn copy(
    rec: &mut Recorder<'_>,
    m: Move,
    src: (&Tensor, Slice),
    dst: (&Tensor, Slice),
    accumulate: bool,
) -> Result<()> {
    let gpu = rec.gpu();
    let ((s, ss), (d, ds)) = (src, dst);
    for (t, sl, role) in [(s, ss, "src"), (d, ds, "dst")] {
        if sl.offset + m.k > sl.channels {
            return Err(GpuError::Invalid {
                op: "channels",
                reason: format!(
                    "{role} slice {}..{} does not fit {} channels",
                    sl.offset,
                    sl.offset + m.k,
                    sl.channels
                ),
            });
        }
        kernel::expect_len("channels", role, t, m.n * sl.channels * m.hw)?;
    }
    let params = ChannelParams {
        n: kernel::u32_of("channels", m.n)?,
        hw: kernel::u32_of("channels", m.hw)?,
        k: kernel::u32_of("channels", m.k)?,
        src_c: kernel::u32_of("channels", ss.channels)?,
        src_off: kernel::u32_of("channels", ss.offset)?,
        dst_c: kernel::u32_of("channels", ds.channels)?,
        dst_off: kernel::u32_of("channels", ds.offset)?,
        accumulate: accumulate as u32,
    };
    let total = kernel::u32_of("channels", m.n * m.k * m.hw)?;
    let groups = kernel::grid_1d(gpu, "channels", u64::from(total).div_ceil(256))?;
    let vs = kernel::whole(gpu, "channels", "src", s)?;
    let vd = kernel::whole(gpu, "channels", "dst", d)?;
    rec.launch(&Launch::new(
        &SHADER,
        &COPY,
        bytemuck::bytes_of(&params),
        &[vs, vd],
        groups,
    ))
}
