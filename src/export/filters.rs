//! `alexnet filters`: conv1's kernels as a grid of colour patches (the paper's Figure 3).
//! Each kernel is stretched on its own to 0..255 over all three channels (so its colours
//! keep their balance), upscaled by pixel repetition, with 1-pixel gaps. A model with two
//! groups draws each group's kernels as its own captioned block, the first group above the
//! second with a rule between them, as the paper shows the kernels learned on its two GPUs.
use super::{figure, ExportError};
use crate::model::Checkpoint;
use crate::output_check::{check, Format, Output};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

/// Kernels per row of a block (the paper's figure: 48 kernels per GPU in 3 rows of 16).
const COLUMNS: usize = 16;
/// Gap between kernels, in pixels.
const GAP: u32 = 1;
/// Gap between the group blocks, in pixels; a rule runs through its middle.
const GROUP_GAP: u32 = 14;
/// Thickness of that rule.
const RULE: u32 = 2;
/// Band above each block for its caption.
const CAPTION: u32 = 26;
/// Smallest image width, so a caption always fits.
const MIN_WIDTH: u32 = 440;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const RULE_COLOUR: Rgb<u8> = Rgb([60, 60, 60]);

/// What `filters` does.
#[derive(Clone, Debug)]
pub struct FiltersConfig {
    /// The trained weights.
    pub checkpoint: PathBuf,
    /// The PNG to write.
    pub out: PathBuf,
    /// Screen pixels per kernel pixel.
    pub scale: u32,
    /// `--overwrite`: an existing image may be replaced.
    pub overwrite: bool,
    /// Input size of a foreign checkpoint that does not record it (the kernels do not
    /// depend on it, but reading the checkpoint does).
    pub input_size: Option<usize>,
}

/// Grid layout of `count` kernels in `groups` blocks: (columns, rows per block).
fn layout(count: usize, groups: usize) -> (usize, usize) {
    let per_group = count.div_ceil(groups.max(1));
    let cols = per_group.clamp(1, COLUMNS);
    (cols, per_group.div_ceil(cols))
}

/// Size in pixels of the image [`render_filters`] draws.
pub fn filters_size(count: usize, k: usize, groups: usize, scale: u32) -> (u32, u32) {
    let (w, h) = filters_size_u64(count, k, groups, scale);
    (w as u32, h as u32)
}

/// [`filters_size`] without overflow, for checking a requested scale before drawing.
fn filters_size_u64(count: usize, k: usize, groups: usize, scale: u32) -> (u64, u64) {
    let (cols, rows) = layout(count, groups);
    let cell = k as u64 * scale as u64 + GAP as u64;
    let groups = groups.max(1) as u64;
    let w = (GAP as u64 + cols as u64 * cell).max(MIN_WIDTH as u64);
    let h = groups * (CAPTION as u64 + GAP as u64 + rows as u64 * cell)
        + (groups - 1) * GROUP_GAP as u64;
    (w, h)
}

/// Top of group `g`'s block: its caption band, then the kernels.
fn block_top(g: usize, rows: usize, cell: u32) -> u32 {
    g as u32 * (CAPTION + GAP + rows as u32 * cell + GROUP_GAP)
}

/// Draws `weights` `[count, 3, k, k]` (RGB input channels) as [`filters_size`] says.
pub fn render_filters(
    weights: &[f32],
    count: usize,
    k: usize,
    groups: usize,
    scale: u32,
) -> Result<RgbImage, String> {
    let (w, h) = filters_size(count, k, groups, scale);
    let mut img = RgbImage::from_pixel(w, h, BACKGROUND);
    let (cols, rows) = layout(count, groups);
    let per_group = count.div_ceil(groups.max(1));
    let cell = k as u32 * scale + GAP;
    let plane = k * k;
    for f in 0..count {
        let kernel = &weights[f * 3 * plane..(f + 1) * 3 * plane];
        let (lo, hi) = kernel
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        // A constant kernel has no contrast to show: draw it mid-grey rather than divide by 0.
        let range = if hi > lo { hi - lo } else { 1.0 };
        let (g, i) = (f / per_group, f % per_group);
        let x0 = GAP + (i % cols) as u32 * cell;
        let y0 = block_top(g, rows, cell) + CAPTION + GAP + (i / cols) as u32 * cell;
        for y in 0..k {
            for x in 0..k {
                let c = |ch: usize| {
                    let v = if hi > lo {
                        (kernel[ch * plane + y * k + x] - lo) / range
                    } else {
                        0.5
                    };
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                };
                let px = Rgb([c(0), c(1), c(2)]);
                for dy in 0..scale {
                    for dx in 0..scale {
                        img.put_pixel(x0 + x as u32 * scale + dx, y0 + y as u32 * scale + dy, px);
                    }
                }
            }
        }
    }
    let groups = groups.max(1);
    for g in 1..groups {
        let y = block_top(g, rows, cell) - GROUP_GAP / 2 - RULE / 2;
        for yy in y..y + RULE {
            for x in 0..w {
                img.put_pixel(x, yy, RULE_COLOUR);
            }
        }
    }
    for g in 0..groups {
        let n = per_group.min(count - (g * per_group).min(count));
        let caption = if groups == 1 {
            format!("conv1: {n} kernels of {k}×{k}")
        } else {
            format!(
                "column {} (GPU {} in the paper): {n} kernels of {k}×{k}",
                g + 1,
                g + 1
            )
        };
        let caption = figure::fit_text(&caption, 15, w - 2 * GAP, true);
        figure::draw_text(
            &mut img,
            GAP as i32,
            block_top(g, rows, cell) as i32 + 5,
            &caption,
            15,
            Rgb([0, 0, 0]),
            true,
        )?;
    }
    Ok(img)
}

/// Reads conv1 from the checkpoint and writes the grid; returns the image's (width, height).
pub fn write_filters(cfg: &FiltersConfig) -> Result<(u32, u32), ExportError> {
    if cfg.scale == 0 {
        return Err(ExportError::Mismatch(
            "--scale 0: each kernel pixel needs at least one screen pixel (default 4)".into(),
        ));
    }
    // A PNG over the checkpoint would destroy the weights.
    check(&Output::new(
        &cfg.out,
        Format::Png,
        &[&cfg.checkpoint],
        cfg.overwrite,
    ))?;
    let ck = Checkpoint::load(&cfg.checkpoint, cfg.input_size)?;
    let t = ck.params.get("conv1.weight").ok_or_else(|| {
        ExportError::Mismatch(format!(
            "{}: no conv1.weight tensor; pass a checkpoint written by alexnet train",
            cfg.checkpoint.display()
        ))
    })?;
    let shape = &t.spec.shape;
    if shape.len() != 4 || shape[1] != 3 || shape[2] != shape[3] {
        return Err(ExportError::Mismatch(format!(
            "{}: conv1.weight has shape {shape:?}; filters draws [count, 3, k, k] RGB kernels",
            cfg.checkpoint.display()
        )));
    }
    let (w, h) = filters_size_u64(shape[0], shape[2], ck.config.groups, cfg.scale.max(1));
    let what = format!("--scale {} (a {w}×{h} image)", cfg.scale);
    if w > u32::MAX as u64 || h > u32::MAX as u64 {
        return Err(ExportError::Mismatch(format!(
            "{what} is larger than an image can be (4294967295 pixels a side); lower --scale"
        )));
    }
    crate::memory::check(what, w as u128 * h as u128 * 3, "lower --scale (default 4)")?;
    let img = render_filters(
        &t.data,
        shape[0],
        shape[2],
        ck.config.groups,
        cfg.scale.max(1),
    )
    .map_err(|problem| ExportError::Image {
        path: cfg.out.clone(),
        problem,
    })?;
    super::save_png(&img, &cfg.out)?;
    Ok(img.dimensions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_are_stretched_and_placed_by_group_under_captions() {
        // Two 1×1 kernels in two groups: kernel 0 red-ish, kernel 1 constant.
        let w = [2.0, 0.0, 1.0, 0.5, 0.5, 0.5];
        let img = render_filters(&w, 2, 1, 2, 3).unwrap();
        assert_eq!(img.dimensions(), filters_size(2, 1, 2, 3));
        let cell = 4;
        assert_eq!(
            img.dimensions(),
            (MIN_WIDTH, 2 * (CAPTION + GAP + cell) + GROUP_GAP)
        );
        let top1 = block_top(1, 1, cell);
        assert_eq!(*img.get_pixel(1, CAPTION + 1), Rgb([255, 0, 128]));
        // The second group starts below the first block, the rule and its caption.
        assert_eq!(*img.get_pixel(1, top1 + CAPTION + 1), Rgb([128, 128, 128]));
        assert_eq!(*img.get_pixel(200, top1 - GROUP_GAP / 2), RULE_COLOUR);
        assert_eq!(*img.get_pixel(0, CAPTION + cell + 2), BACKGROUND);
        // Each block's caption is written in its band.
        for top in [0, top1] {
            let ink = figure::inked(&img, 0, top, MIN_WIDTH, CAPTION, BACKGROUND);
            assert!(ink > 200, "caption at {top}: {ink} pixels");
        }
        let one = render_filters(&w, 2, 1, 1, 3).unwrap();
        assert_eq!(one.height(), CAPTION + GAP + cell);
    }
}
