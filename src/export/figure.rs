//! What every figure shares: plotters drawing into an [`RgbImage`], with DejaVu Sans (bundled
//! by the `dejavu` crate) registered as plotters' `sans-serif`, so text renders the same on
//! every machine and no system font or fontconfig is needed.
use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, IntoFont};
use std::sync::OnceLock;

/// The font family name figures use; [`font`] registers it.
pub const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters, once per process. An error means the bundled
/// font bytes are unreadable, which only a broken build can cause.
pub fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular())
            .and_then(|_| {
                plotters::style::register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold())
            })
            .map_err(|_| "the bundled DejaVu Sans font cannot be read (a broken build)".into())
    })
    .clone()
}

/// Runs `draw` on a plotters drawing area over `img`'s pixels.
pub fn draw_on<F>(img: &mut RgbImage, draw: F) -> Result<(), String>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    font()?;
    let (w, h) = img.dimensions();
    let area = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    draw(&area)?;
    area.present().map_err(|e| e.to_string())
}

/// Text style of `size` pixels in `color`.
pub fn text_style(size: u32, color: Rgb<u8>, bold: bool) -> TextStyle<'static> {
    let style = if bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    (FAMILY, size as f64, style)
        .into_font()
        .color(&RGBColor(color.0[0], color.0[1], color.0[2]))
}

/// Width and height in pixels of `text` at `size` (bold is wider).
pub fn text_size(text: &str, size: u32, bold: bool) -> (u32, u32) {
    if font().is_err() {
        return (0, 0);
    }
    text_style(size, Rgb([0, 0, 0]), bold)
        .font
        .box_size(text)
        .unwrap_or((0, 0))
}

/// Writes `text` with its top-left corner at (x, y).
pub fn draw_text(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    size: u32,
    color: Rgb<u8>,
    bold: bool,
) -> Result<(), String> {
    draw_on(img, |area| {
        area.draw(&Text::new(
            text.to_string(),
            (x, y),
            text_style(size, color, bold),
        ))
        .map_err(|e| e.to_string())
    })
}

/// `text` cut with an ellipsis to fit `width` pixels at `size`.
pub fn fit_text(text: &str, size: u32, width: u32, bold: bool) -> String {
    if text_size(text, size, bold).0 <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (0..chars.len()).rev() {
        let s: String = chars[..keep].iter().collect::<String>() + "…";
        if text_size(&s, size, bold).0 <= width {
            return s;
        }
    }
    String::new()
}

/// Pixels in the rectangle whose colour differs from `background` (tests use it to check
/// that text or a curve was drawn where expected).
pub fn inked(img: &RgbImage, x: u32, y: u32, w: u32, h: u32, background: Rgb<u8>) -> usize {
    let mut n = 0;
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            n += (*img.get_pixel(xx, yy) != background) as usize;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_draws_text_of_the_measured_size() {
        let white = Rgb([255, 255, 255]);
        let mut img = RgbImage::from_pixel(300, 60, white);
        let (w, h) = text_size("Hello, figure", 20, false);
        assert!(text_size("Hello, figure", 20, true).0 > w, "bold is wider");
        assert!(w > 80 && w < 200 && h > 10 && h < 30, "{w}×{h}");
        draw_text(&mut img, 10, 10, "Hello, figure", 20, Rgb([0, 0, 0]), false).unwrap();
        // Ink inside the measured box, none far outside it.
        assert!(inked(&img, 10, 10, w, h, white) > 100);
        assert_eq!(inked(&img, 10 + w + 20, 0, 300 - w - 30, 60, white), 0);
        let cut = fit_text("a very long class name indeed", 14, 80, true);
        assert!(
            cut.ends_with('…') && text_size(&cut, 14, true).0 <= 80,
            "{cut}"
        );
        assert_eq!(fit_text("short", 14, 80, false), "short");
    }
}
