//! Exports of a trained run: feature vectors, nearest neighbours, and images (filters,
//! contact sheets, the report's curves).
mod error;
pub mod features;
pub mod features_file;
pub mod figure;
pub mod filters;
pub mod neighbors;
pub mod plot;
pub mod shard_columns;

pub use error::ExportError;
pub use features::{export_features, ExportConfig, ExportSummary, Layer};
pub use features_file::{features_schema, FeatureFile, FeatureWriter, FeaturesMeta};
pub use filters::{render_filters, write_filters, FiltersConfig};
pub use neighbors::{nearest, neighbors, Neighbor, NeighborsConfig, NeighborsResult};

use std::path::{Path, PathBuf};

/// Saves `img` as a PNG under a temporary name beside `out`, then renames it into place, so
/// a viewer never shows half an image.
pub(crate) fn save_png(img: &image::RgbImage, out: &Path) -> Result<(), ExportError> {
    let err = |problem: String| ExportError::Image {
        path: out.into(),
        problem,
    };
    let mut tmp = out.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let saved = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| err(e.to_string())));
    if saved.is_err() {
        // A full disk must not also keep a half image.
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}
