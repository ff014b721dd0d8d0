//! Exports of a trained run: feature vectors, nearest neighbours, and images (filters,
//! contact sheets, the report's curves, several runs compared).
pub mod compare;
pub mod embed;
mod error;
pub mod features;
pub mod features_file;
pub mod figure;
pub mod filters;
pub mod neighbors;
pub mod onnx;
pub mod plot;
pub mod predictions_sheet;
pub mod shard_columns;
pub mod sheet;

pub use error::ExportError;
pub use features::{export_features, ExportConfig, ExportSummary, Layer};
pub use features_file::{features_schema, FeatureFile, FeatureWriter, FeaturesMeta};
pub use filters::{render_filters, write_filters, FiltersConfig};
pub use neighbors::{nearest, neighbors, Neighbor, NeighborsConfig, NeighborsResult, QueryImage};

use std::path::Path;

/// Writes `out` through `write` (given the temporary's path) with the project's one writer
/// ([`crate::atomic`]): a reader never sees half a file, and a failure or Ctrl-C leaves no
/// temporary. The error is `write`'s or the rename's, in words.
pub(crate) fn write_via_temp(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    crate::atomic::write_at_path(out, |tmp| write(tmp).map_err(Problem)).map_err(|Problem(p)| p)
}

/// A writer's error in words, so [`write_via_temp`] keeps its `String` errors.
struct Problem(String);

impl From<crate::atomic::AtomicError> for Problem {
    fn from(e: crate::atomic::AtomicError) -> Problem {
        Problem(e.to_string())
    }
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
