//! Exports of a trained run: feature vectors, nearest neighbours, and images (filters,
//! contact sheets, the report's curves, several runs compared).
pub mod compare;
mod error;
pub mod features;
pub mod features_file;
pub mod figure;
pub mod filters;
pub mod neighbors;
pub mod onnx;
pub mod plot;
pub mod shard_columns;

pub use error::ExportError;
pub use features::{export_features, ExportConfig, ExportSummary, Layer};
pub use features_file::{features_schema, FeatureFile, FeatureWriter, FeaturesMeta};
pub use filters::{render_filters, write_filters, FiltersConfig};
pub use neighbors::{nearest, neighbors, Neighbor, NeighborsConfig, NeighborsResult};

use std::path::{Path, PathBuf};

/// Writes `out` through `write` under a temporary name beside it, then renames it into place,
/// so a reader never sees half a file; on failure the temporary is removed (a full disk must
/// not also keep half a file). The error is `write`'s or the rename's, in words.
pub(crate) fn write_via_temp(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let mut tmp = out.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let saved = write(&tmp).and_then(|()| std::fs::rename(&tmp, out).map_err(|e| e.to_string()));
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}

/// Saves `img` as a PNG, atomically ([`write_via_temp`]).
pub(crate) fn save_png(img: &image::RgbImage, out: &Path) -> Result<(), ExportError> {
    write_via_temp(out, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
    .map_err(|problem| ExportError::Image {
        path: out.into(),
        problem,
    })
}
