//! `alexnet export-features`: one layer's activations for every image of a shard set, in the
//! evaluation view (centre crop minus the checkpoint's mean image, no dropout), computed in
//! batches on a GPU or the CPU engine and written as a features file ([`super::features_file`]).
use super::features_file::{FeatureWriter, FeaturesMeta};
use super::shard_columns::read_shard_names;
use super::ExportError;
use crate::dataset::{Loader, LoaderConfig, ShardSet, Shuffle};
use crate::device::Device;
use crate::engine::augment::centre_draws;
use crate::engine::input::{checkpoint_mean, pad_images};
use crate::engine::Inference;
use crate::model::Checkpoint;
use crate::output_check::{check, Format, Output};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which activation becomes the feature vector.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// conv5 after ReLU and pooling, flattened in C,H,W order (the paper's model: 9216).
    Conv5,
    /// fc6 after ReLU (4096).
    Fc6,
    /// fc7 after ReLU (4096): the paper's Figure 4 vectors.
    Fc7,
    /// fc8's output before the softmax (classes).
    Logits,
}

impl Layer {
    /// The name [`Network::activations`] and the features file use.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Conv5 => "conv5",
            Layer::Fc6 => "fc6",
            Layer::Fc7 => "fc7",
            Layer::Logits => "logits",
        }
    }
}

/// What `export-features` does.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// The trained weights.
    pub checkpoint: PathBuf,
    /// Shard files and/or directories, read as one set in file order.
    pub data: Vec<PathBuf>,
    /// The features file to write.
    pub out: PathBuf,
    /// The layer to export.
    pub layer: Layer,
    /// Images per batch.
    pub batch: usize,
    /// The device (`auto`: the first real GPU, else the CPU engine).
    pub device: Device,
    /// Input size of a foreign checkpoint that does not record it.
    pub input_size: Option<usize>,
    /// Draw a progress bar.
    pub progress: bool,
    /// Replace `out` if it exists (an output that is one of the inputs is refused anyway).
    pub overwrite: bool,
    /// `--shard I/N`: export only part I of N (the set's shard files split in N runs of
    /// consecutive files) into `out/LAYER-IIIII-of-NNNNN.parquet`, `out` being a directory
    /// (not `part-…`, which names shards: a folder of those is a shard folder).
    pub part: Option<crate::ingest::ShardPart>,
}

impl ExportConfig {
    /// fc7 in batches of 128 on the best adapter, with a progress bar.
    pub fn new(checkpoint: PathBuf, data: Vec<PathBuf>, out: PathBuf) -> ExportConfig {
        ExportConfig {
            checkpoint,
            data,
            out,
            layer: Layer::Fc7,
            batch: 128,
            device: Device::Auto,
            input_size: None,
            progress: true,
            overwrite: false,
            part: None,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    /// The file written.
    pub out: PathBuf,
    /// Rows (images).
    pub rows: usize,
    /// Floats per vector.
    pub width: usize,
    /// True when the checkpoint had no statistics and the data's own mean image was used.
    pub used_data_mean: bool,
    /// Images per second, reading included.
    pub images_per_s: f64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} rows of {} floats ({:.0} images/s)",
            self.out.display(),
            self.rows,
            self.width,
            self.images_per_s
        )
    }
}

/// Exports `cfg.layer` for every image of `cfg.data`; see the module docs.
pub fn export_features(cfg: &ExportConfig) -> Result<ExportSummary, ExportError> {
    let t0 = Instant::now();
    if cfg.batch == 0 {
        return Err(ExportError::Mismatch(
            "--batch 0: the export needs at least one image per batch (default 128)".into(),
        ));
    }
    let ck = Checkpoint::load(&cfg.checkpoint, cfg.input_size)?;
    // The whole set, also for a part: its statistics are the data's mean image, whichever
    // part is exported.
    let whole = ShardSet::open(&cfg.data)?;
    let (set, out) = match cfg.part {
        None => (whole.clone(), cfg.out.clone()),
        Some(p) => part_of(&whole, p, &cfg.out, cfg.layer)?,
    };
    let inputs: Vec<&Path> = std::iter::once(cfg.checkpoint.as_path())
        .chain(cfg.data.iter().map(PathBuf::as_path))
        .chain(whole.files().iter().map(PathBuf::as_path))
        .collect();
    check(&Output::new(&out, Format::Parquet, &inputs, cfg.overwrite))?;
    if cfg.part.is_some() {
        std::fs::create_dir_all(&cfg.out).map_err(|e| {
            ExportError::Mismatch(format!(
                "{}: cannot create the directory of the parts: {e}",
                cfg.out.display()
            ))
        })?;
    }
    let first = set.files()[0].display().to_string();
    for gap in whole.incomplete() {
        eprintln!("warning: {gap}; exporting the images that are there");
    }
    if set.is_empty() {
        return Err(ExportError::Mismatch(format!(
            "{first}: the shard set holds no images; nothing to export"
        )));
    }
    let crop = ck.config.input_size;
    let (mean, used_data_mean) =
        checkpoint_mean(&ck, &cfg.checkpoint, &whole).map_err(ExportError::Mismatch)?;
    let names = read_shard_names(set.files())?;
    if names.sources.len() != set.len() {
        return Err(ExportError::Mismatch(format!(
            "{first}: the shards' source column has {} rows but their row groups {}; re-run alexnet ingest",
            names.sources.len(),
            set.len()
        )));
    }

    let batch = cfg.batch.clamp(1, set.len());
    let engine = Inference::open(cfg.device, &ck.config, batch, set.size(), &mean, &ck.params)?;
    let net = engine.scorer();
    let shape = net.shape(cfg.layer.name()).ok_or_else(|| {
        ExportError::Mismatch(format!(
            "the network reports no activation `{}`",
            cfg.layer.name()
        ))
    })?;
    // Every activation is [N, …]: one image's vector is the product of the other dimensions.
    let width: usize = shape[1..].iter().product();

    let mut meta = FeaturesMeta {
        layer: cfg.layer.name().into(),
        width,
        checkpoint: cfg.checkpoint.display().to_string(),
        data: Vec::new(),
        input_size: crop,
        stored_size: set.size(),
        mean_image: if used_data_mean { "data" } else { "checkpoint" }.into(),
    };
    meta.set_shards(&out, set.files());
    let mut writer = FeatureWriter::create(&out, &meta)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loader_cfg = LoaderConfig {
        batch,
        seed: 0,
        shuffle: Shuffle::None,
        drop_last: false,
        threads,
        prefetch: 2,
        ..LoaderConfig::default()
    };
    let draws = centre_draws(batch, set.size(), crop);
    let bar = progress_bar(cfg.progress, set.len() as u64);
    for b in Loader::epoch(&set, &loader_cfg, 0, 0) {
        let mut b = b?;
        let have = b.len();
        pad_images(&mut b.images, have, batch);
        net.upload_images(&b.images)?;
        net.forward(&draws)?;
        let feats = net.download(cfg.layer.name())?;
        let rows: Vec<usize> = b.rows.iter().map(|&r| r as usize).collect();
        // NaN or inf would be ranked by `neighbors` as if it were a distance; a diverged
        // checkpoint has nothing to export.
        if let Some(i) = feats[..have * width]
            .chunks_exact(width)
            .position(|v| v.iter().any(|x| !x.is_finite()))
        {
            return Err(ExportError::NotFinite {
                checkpoint: cfg.checkpoint.clone(),
                layer: cfg.layer.name(),
                row: rows[i],
                input: names.sources[rows[i]].clone(),
            });
        }
        let sources: Vec<&str> = rows.iter().map(|&r| names.sources[r].as_str()).collect();
        let wnids: Vec<&str> = rows.iter().map(|&r| names.wnids[r].as_str()).collect();
        writer.write(&sources, &b.labels, &wnids, &feats[..have * width])?;
        bar.inc(have as u64);
    }
    bar.finish_and_clear();
    let rows = writer.rows();
    let out = writer.finish()?;
    Ok(ExportSummary {
        out,
        rows,
        width,
        used_data_mean,
        images_per_s: rows as f64 / t0.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Part `p` of `whole`: its shard files `[I·F/N, (I+1)·F/N)` (F files; consecutive runs, so
/// the parts' rows in part order are the set's rows in order), and the file it is written to
/// in the directory `dir`.
fn part_of(
    whole: &ShardSet,
    p: crate::ingest::ShardPart,
    dir: &Path,
    layer: Layer,
) -> Result<(ShardSet, PathBuf), ExportError> {
    let files = whole.files();
    let (from, to) = (
        p.index * files.len() / p.count,
        (p.index + 1) * files.len() / p.count,
    );
    if from == to {
        return Err(ExportError::Mismatch(format!(
            "--shard {p}: the data has {} shard files, fewer than the {} parts, so part {} would be empty; use at most {} parts",
            files.len(),
            p.count,
            p.index,
            files.len()
        )));
    }
    let name = format!("{}-{:05}-of-{:05}.parquet", layer.name(), p.index, p.count);
    Ok((ShardSet::open(&files[from..to])?, dir.join(name)))
}

fn progress_bar(enabled: bool, rows: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(rows);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {rate}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                // Whole images per second, as ingest's bar shows them ({per_sec} prints 4 decimals).
                let _ = write!(w, "{:.0} images/s", s.per_sec());
            },
        ),
    );
    bar
}
