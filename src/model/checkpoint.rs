//! safetensors checkpoints that PyTorch loads as they are (docs/checkpoints.md).
//!
//! Tensors (all float32): the parameters under their state-dict names (`conv1.weight` …
//! `fc8.bias`), momentum under `momentum.<name>`, data statistics under `stats.mean_image`
//! `[S,S,3]`, `stats.pca_eigenvalues` `[3]`, `stats.pca_eigenvectors` `[3,3]` (row i = unit
//! eigenvector i as [r,g,b]). `__metadata__` holds `alexnet.config` (the [`ModelConfig`] as
//! JSON), `alexnet.format_version`, `input_size` (read by foreign tools), `format` = `pt`, and
//! the trainer's run state (step, epoch, seed, lr, …) as plain string entries.
//!
//! A checkpoint made elsewhere (no `alexnet.config`) is "foreign": widths, classes and groups
//! are read from the tensor shapes, the input size from `__metadata__["input_size"]` or the
//! caller's fallback, and LRN and the activation are assumed to be the paper's (on, ReLU;
//! batch normalisation instead of LRN when the file has `bn1.weight`).
use super::config::{ModelConfig, Norm};
use super::geometry::GeometryError;
use super::params::{param_specs, ParamSpec, Params, Tensor};
use crate::shape::Activation;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[cfg(target_endian = "big")]
compile_error!("checkpoints are written by viewing f32 memory as little-endian bytes; a big-endian target needs a byte-swapping View");

/// Metadata key of the model config (JSON).
pub const META_CONFIG: &str = "alexnet.config";
/// Metadata key of the checkpoint format version.
pub const META_FORMAT_VERSION: &str = "alexnet.format_version";
/// Metadata key of the input size, the one geometry fact tensor shapes cannot give.
pub const META_INPUT_SIZE: &str = "input_size";
/// Metadata key safetensors' PyTorch helpers write (`pt`); some loaders check it.
pub const META_FORMAT: &str = "format";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Prefix of the momentum tensors.
pub const MOMENTUM_PREFIX: &str = "momentum.";
/// Name of the mean image `[S,S,3]` (pixel values 0..255, H,W,C order).
pub const STATS_MEAN_IMAGE: &str = "stats.mean_image";
/// Name of the PCA eigenvalues `[3]` (descending).
pub const STATS_EIGENVALUES: &str = "stats.pca_eigenvalues";
/// Name of the PCA eigenvectors `[3,3]` (row i = eigenvector i).
pub const STATS_EIGENVECTORS: &str = "stats.pca_eigenvectors";

const RESERVED_KEYS: [&str; 4] = [
    META_CONFIG,
    META_FORMAT_VERSION,
    META_INPUT_SIZE,
    META_FORMAT,
];

/// Why a checkpoint could not be read or written. Every variant names the file.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("{}: cannot read the checkpoint: {source}", path.display())]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A tensor holds NaN or infinity: every score from it would be meaningless (a NaN used
    /// to vanish in ReLU and score top-1 1.0), so no command runs on it.
    #[error("{}: tensor `{name}` holds {count} NaN or infinite value(s), the first at index {first}; the weights diverged or the file is damaged: use an earlier checkpoint or train again", path.display())]
    NonFinite {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor, as stored.
        name: String,
        /// How many values are not finite.
        count: usize,
        /// The flat index of the first.
        first: usize,
    },
    /// The file ends before the data its header describes (an interrupted copy, a full disk).
    #[error("{}: truncated: {have} bytes of the {need} its header describes (an interrupted copy or a full disk?); --resume and every other command need an intact checkpoint: restore it, or start again from another with --init-from", path.display())]
    Truncated {
        /// The checkpoint.
        path: PathBuf,
        /// The file's length.
        have: usize,
        /// The length its header needs.
        need: usize,
    },
    /// The file is not valid safetensors.
    #[error("{}: not a safetensors file ({source}); pass a checkpoint written by `alexnet train` or safetensors' save_file", path.display())]
    Format {
        /// The checkpoint.
        path: PathBuf,
        /// The parser's complaint.
        source: SafeTensorError,
    },
    /// Writing failed.
    #[error("{}: cannot write the checkpoint ({source}); check that the directory exists, is writable and has space", path.display())]
    Write {
        /// The checkpoint.
        path: PathBuf,
        /// The writer's error.
        source: SafeTensorError,
    },
    /// A tensor the model needs is absent.
    #[error("{}: tensor `{name}` is missing; {hint}", path.display())]
    Missing {
        /// The checkpoint.
        path: PathBuf,
        /// The absent tensor.
        name: String,
        /// What a complete checkpoint holds.
        hint: &'static str,
    },
    /// A tensor has the wrong shape for the model.
    #[error("{}: tensor `{name}` has shape {got:?} but the model config needs {want:?}; the checkpoint and config describe different networks", path.display())]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its shape in the file.
        got: Vec<usize>,
        /// The shape the config implies.
        want: Vec<usize>,
    },
    /// A tensor is not float32.
    #[error("{}: tensor `{name}` is {dtype:?}; only float32 is supported, save it with `.float()` first", path.display())]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its type.
        dtype: Dtype,
    },
    /// A metadata entry cannot be understood.
    #[error("{}: metadata `{key}` is invalid: {reason}", path.display())]
    Metadata {
        /// The checkpoint.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A foreign checkpoint without `input_size` and no fallback given.
    #[error("{}: the checkpoint has no `input_size` metadata (made by another framework?); pass --input-size", path.display())]
    NoInputSize {
        /// The checkpoint.
        path: PathBuf,
    },
    /// A torchvision AlexNet state dict, which needs `alexnet import torchvision` first.
    #[error("{}: this is torchvision's AlexNet (features.* and classifier.* tensors): its conv1 pads by 2 and it expects per-channel normalised inputs, so it cannot run as the paper's network as it is; convert it once with `alexnet import torchvision {} OUT.safetensors`", path.display(), path.display())]
    Torchvision {
        /// The state dict.
        path: PathBuf,
    },
    /// A file given to `alexnet import` does not hold what the source framework writes.
    #[error("{}: {reason}", path.display())]
    Import {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The shapes of a foreign checkpoint do not describe an AlexNet.
    #[error("{}: cannot infer the network from the tensor shapes: {reason}", path.display())]
    Infer {
        /// The checkpoint.
        path: PathBuf,
        /// Which shapes disagree.
        reason: String,
    },
    /// The stored or inferred config is not a valid network.
    #[error("{}: {source}", path.display())]
    Geometry {
        /// The checkpoint.
        path: PathBuf,
        /// The geometry error.
        source: GeometryError,
    },
    /// In-memory tensors that do not match their config (a caller bug, caught before writing).
    #[error("{}: tensor `{name}` holds {got} values, its shape {shape:?} needs {want}; not written", path.display())]
    Inconsistent {
        /// The checkpoint being written.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Values held.
        got: usize,
        /// Values its shape needs.
        want: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A run-state key collides with a key of the format.
    #[error("{}: run-state key `{key}` is reserved by the checkpoint format; rename it", path.display())]
    ReservedKey {
        /// The checkpoint being written.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// The training data's statistics the model was trained with (docs/statistics.md "Which statistics a model uses").
#[derive(Clone, Debug, PartialEq)]
pub struct DataStats {
    /// Side S of the stored images.
    pub size: usize,
    /// Mean image `[S,S,3]`, pixel values 0..255.
    pub mean_image: Vec<f32>,
    /// PCA eigenvalues of the RGB covariance `[3]`, descending.
    pub pca_eigenvalues: [f32; 3],
    /// PCA eigenvectors `[3,3]`, row i = unit eigenvector i as [r,g,b].
    pub pca_eigenvectors: [[f32; 3]; 3],
}

/// Everything a checkpoint file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network (stored, or inferred for a foreign file).
    pub config: ModelConfig,
    /// The parameters.
    pub params: Params,
    /// SGD momentum, when the file has it (training can resume exactly).
    pub momentum: Option<Params>,
    /// The training data's statistics, when the file has them.
    pub stats: Option<DataStats>,
    /// The trainer's run state (step, epoch, seed, lr, …): every metadata entry that is not
    /// one of the format's own keys.
    pub run_state: BTreeMap<String, String>,
    /// True when the file had no `alexnet.config` (made by another framework): the config
    /// was inferred and LRN/activation assumed to be the paper's.
    pub foreign: bool,
}

/// A borrowed f32 tensor as safetensors sees it.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // Little-endian target (checked at compile time above), so memory is the file format.
        Cow::Borrowed(bytemuck::cast_slice(self.data))
    }
    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.data)
    }
}

const PARAM_HINT: &str = "a checkpoint needs the weight and bias of conv1..conv5 and fc6..fc8";
const MOMENTUM_HINT: &str =
    "the file has some momentum tensors but not all; re-save it or drop every momentum.* tensor";
const STATS_HINT: &str =
    "statistics need stats.mean_image, stats.pca_eigenvalues and stats.pca_eigenvectors together";

impl Checkpoint {
    /// A checkpoint of just the parameters.
    pub fn new(config: ModelConfig, params: Params) -> Checkpoint {
        Checkpoint {
            config,
            params,
            momentum: None,
            stats: None,
            run_state: BTreeMap::new(),
            foreign: false,
        }
    }

    /// Writes the checkpoint to `path` atomically: a hidden temporary file beside `path`,
    /// synced, then renamed over, so a crash never leaves a half file and a reader never sees
    /// one. The same checkpoint always gives the same bytes (tensors and metadata keys in
    /// name order), so two identical runs can be compared with `cmp`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let specs = param_specs(&self.config).map_err(|source| CheckpointError::Geometry {
            path: path.into(),
            source,
        })?;
        let check = |p: &Params, prefix: &str| -> Result<(), CheckpointError> {
            check_params_match(path, prefix, p, &specs)
        };
        check(&self.params, "")?;
        // Buffers (running statistics) take no SGD step, so they have no momentum to save.
        let learnable: Vec<ParamSpec> = specs.iter().filter(|s| !s.is_buffer()).cloned().collect();
        if let Some(m) = &self.momentum {
            check_params_match(path, MOMENTUM_PREFIX, m, &learnable)?;
        }
        let mut views: Vec<(String, F32View<'_>)> = Vec::new();
        for t in &self.params.tensors {
            views.push((
                t.spec.name.clone(),
                F32View {
                    shape: &t.spec.shape,
                    data: &t.data,
                },
            ));
        }
        let momentum = self.momentum.iter().flat_map(|m| &m.tensors);
        for t in momentum.filter(|t| !t.spec.is_buffer()) {
            views.push((
                format!("{MOMENTUM_PREFIX}{}", t.spec.name),
                F32View {
                    shape: &t.spec.shape,
                    data: &t.data,
                },
            ));
        }
        let stat_shapes;
        if let Some(s) = &self.stats {
            let want = s.size * s.size * 3;
            if s.mean_image.len() != want {
                return Err(CheckpointError::Inconsistent {
                    path: path.into(),
                    name: STATS_MEAN_IMAGE.into(),
                    got: s.mean_image.len(),
                    want,
                    shape: vec![s.size, s.size, 3],
                });
            }
            stat_shapes = [vec![s.size, s.size, 3], vec![3], vec![3, 3]];
            views.push((
                STATS_MEAN_IMAGE.into(),
                F32View {
                    shape: &stat_shapes[0],
                    data: &s.mean_image,
                },
            ));
            views.push((
                STATS_EIGENVALUES.into(),
                F32View {
                    shape: &stat_shapes[1],
                    data: &s.pca_eigenvalues,
                },
            ));
            views.push((
                STATS_EIGENVECTORS.into(),
                F32View {
                    shape: &stat_shapes[2],
                    data: s.pca_eigenvectors.as_flattened(),
                },
            ));
        }
        let mut meta = BTreeMap::new();
        for (k, v) in &self.run_state {
            if RESERVED_KEYS.contains(&k.as_str()) {
                return Err(CheckpointError::ReservedKey {
                    path: path.into(),
                    key: k.clone(),
                });
            }
            meta.insert(k.clone(), v.clone());
        }
        let config_json =
            serde_json::to_string(&self.config).map_err(|e| CheckpointError::Metadata {
                path: path.into(),
                key: META_CONFIG.into(),
                reason: e.to_string(),
            })?;
        meta.insert(META_CONFIG.into(), config_json);
        meta.insert(META_FORMAT_VERSION.into(), FORMAT_VERSION.into());
        meta.insert(META_INPUT_SIZE.into(), self.config.input_size.to_string());
        meta.insert(META_FORMAT.into(), "pt".into());
        write_safetensors(path, views, &meta).map_err(|e| CheckpointError::Write {
            path: path.into(),
            source: SafeTensorError::IoError(e),
        })
    }

    /// The `__metadata__` entries of a checkpoint, reading only its header (a few KiB, where
    /// [`Checkpoint::load`] reads every tensor); `None` when the file is missing or is not
    /// safetensors.
    pub fn read_metadata(path: &Path) -> Option<BTreeMap<String, String>> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut n = [0u8; 8];
        f.read_exact(&mut n).ok()?;
        let n = u64::from_le_bytes(n);
        // safetensors' own bound on a header; a larger value means a damaged file.
        if n > 100_000_000 {
            return None;
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
        let meta = v.get("__metadata__")?.as_object()?;
        Some(
            meta.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
        )
    }

    /// Reads a checkpoint. `fallback_input_size` is used only for a foreign file without
    /// `input_size` metadata (the CLI's `--input-size`).
    pub fn load(
        path: &Path,
        fallback_input_size: Option<usize>,
    ) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(path, &bytes, fallback_input_size)
    }

    /// Parses checkpoint `bytes`; `path` only names the source in errors.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        fallback_input_size: Option<usize>,
    ) -> Result<Checkpoint, CheckpointError> {
        let format_err = |source| match needed_len(bytes) {
            Some(need) if need > bytes.len() => CheckpointError::Truncated {
                path: path.into(),
                have: bytes.len(),
                need,
            },
            _ => CheckpointError::Format {
                path: path.into(),
                source,
            },
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(format_err)?;
        let st = SafeTensors::deserialize(bytes).map_err(format_err)?;
        let mut meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if let Some(v) = meta.get(META_FORMAT_VERSION) {
            if v != FORMAT_VERSION {
                return Err(CheckpointError::Metadata {
                    path: path.into(),
                    key: META_FORMAT_VERSION.into(),
                    reason: format!("version {v} is not {FORMAT_VERSION}, the one this build reads; use a matching alexnet"),
                });
            }
        }
        let (config, foreign) = match meta.get(META_CONFIG) {
            Some(json) => {
                let cfg = serde_json::from_str(json).map_err(|e| CheckpointError::Metadata {
                    path: path.into(),
                    key: META_CONFIG.into(),
                    reason: e.to_string(),
                })?;
                (cfg, false)
            }
            None if st.names().contains(&"features.0.weight") => {
                return Err(CheckpointError::Torchvision { path: path.into() })
            }
            None => {
                let input_size = match meta.get(META_INPUT_SIZE) {
                    Some(v) => v.trim().parse().map_err(|_| CheckpointError::Metadata {
                        path: path.into(),
                        key: META_INPUT_SIZE.into(),
                        reason: format!("`{v}` is not a whole number"),
                    })?,
                    None => fallback_input_size
                        .ok_or_else(|| CheckpointError::NoInputSize { path: path.into() })?,
                };
                let shapes: HashMap<String, Vec<usize>> = st
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.shape().to_vec()))
                    .collect();
                (infer_config(path, &shapes, input_size)?, true)
            }
        };
        let specs = param_specs(&config).map_err(|source| CheckpointError::Geometry {
            path: path.into(),
            source,
        })?;
        let params = read_params(path, &st, "", &specs, PARAM_HINT)?;
        let has_momentum = st.names().iter().any(|n| n.starts_with(MOMENTUM_PREFIX));
        let momentum = if has_momentum {
            let learnable: Vec<ParamSpec> =
                specs.iter().filter(|s| !s.is_buffer()).cloned().collect();
            let read = read_params(path, &st, MOMENTUM_PREFIX, &learnable, MOMENTUM_HINT)?;
            // Buffers' momentum is zero (they take no SGD step), in the full set's order.
            let tensors = specs
                .iter()
                .map(|spec| match read.get(&spec.name) {
                    Some(t) => t.clone(),
                    None => Tensor {
                        spec: spec.clone(),
                        data: vec![0.0; spec.len()],
                    },
                })
                .collect();
            Some(Params { tensors })
        } else {
            None
        };
        let stats = read_stats(path, &st)?;
        let mut tensors: Vec<(String, &[f32])> = params
            .tensors
            .iter()
            .map(|t| (t.spec.name.clone(), &t.data[..]))
            .collect();
        if let Some(m) = &momentum {
            let named = m
                .tensors
                .iter()
                .map(|t| (format!("{MOMENTUM_PREFIX}{}", t.spec.name), &t.data[..]));
            tensors.extend(named);
        }
        if let Some(s) = &stats {
            tensors.push((STATS_MEAN_IMAGE.into(), &s.mean_image[..]));
            tensors.push((STATS_EIGENVALUES.into(), &s.pca_eigenvalues[..]));
            tensors.push((STATS_EIGENVECTORS.into(), s.pca_eigenvectors.as_flattened()));
        }
        for (name, data) in tensors {
            if let Some(first) = data.iter().position(|v| !v.is_finite()) {
                return Err(CheckpointError::NonFinite {
                    path: path.into(),
                    name,
                    count: data.iter().filter(|v| !v.is_finite()).count(),
                    first,
                });
            }
        }
        for k in RESERVED_KEYS {
            meta.remove(k);
        }
        Ok(Checkpoint {
            config,
            params,
            momentum,
            stats,
            run_state: meta,
            foreign,
        })
    }
}

/// The length a safetensors file's header says it has (8 + header + the furthest tensor end),
/// or `None` when even the header cannot be read; tells a truncated file from a foreign one.
fn needed_len(bytes: &[u8]) -> Option<usize> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    // A header length past the end of a short file is truncation only if it is plausible.
    let header = match bytes.get(8..8usize.checked_add(n)?) {
        Some(h) => h,
        None if n < 100 << 20 => return Some(8 + n),
        None => return None,
    };
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let end = json
        .as_object()?
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0) as usize;
    Some(8 + n + end)
}

/// Writes a safetensors file with every map in name order: safetensors' own writer takes the
/// metadata as a `HashMap`, whose order changes from run to run, so identical checkpoints
/// would differ in their header bytes. Temporary file, sync, rename; the temporary is
/// removed if anything fails.
fn write_safetensors(
    path: &Path,
    mut views: Vec<(String, F32View<'_>)>,
    meta: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    use std::io::Write;
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(meta));
    let mut offset = 0usize;
    for (name, v) in &views {
        let end = offset + v.data_len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": v.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    // The format pads the header with spaces so the data starts 8-byte aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let (tmp, file) = crate::atomic::Temp::file(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for (_, v) in &views {
        w.write_all(&v.data())?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    // Mode 0644 and a sync before the rename (a crash must not leave an empty
    // last.safetensors in place of the previous good one) are the writer's.
    tmp.commit(Some(file))?;
    Ok(())
}

/// Checks that in-memory tensors match the config's names, shapes and lengths.
fn check_params_match(
    path: &Path,
    prefix: &str,
    p: &Params,
    specs: &[ParamSpec],
) -> Result<(), CheckpointError> {
    for spec in specs {
        let name = format!("{prefix}{}", spec.name);
        let t = p.get(&spec.name).ok_or_else(|| CheckpointError::Missing {
            path: path.into(),
            name: name.clone(),
            hint: PARAM_HINT,
        })?;
        if t.spec.shape != spec.shape {
            return Err(CheckpointError::Shape {
                path: path.into(),
                name,
                got: t.spec.shape.clone(),
                want: spec.shape.clone(),
            });
        }
        if t.data.len() != spec.len() {
            return Err(CheckpointError::Inconsistent {
                path: path.into(),
                name,
                got: t.data.len(),
                want: spec.len(),
                shape: spec.shape.clone(),
            });
        }
    }
    Ok(())
}

/// Reads tensor `name` as f32 values, checking it exists, is f32 and (when given) its shape.
fn read_f32(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    want: Option<&[usize]>,
    hint: &'static str,
) -> Result<(Vec<usize>, Vec<f32>), CheckpointError> {
    let view = st.tensor(name).map_err(|_| CheckpointError::Missing {
        path: path.into(),
        name: name.into(),
        hint,
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(CheckpointError::Dtype {
            path: path.into(),
            name: name.into(),
            dtype: view.dtype(),
        });
    }
    if let Some(w) = want {
        if view.shape() != w {
            return Err(CheckpointError::Shape {
                path: path.into(),
                name: name.into(),
                got: view.shape().to_vec(),
                want: w.to_vec(),
            });
        }
    }
    Ok((view.shape().to_vec(), f32_values(view.data())))
}

/// Little-endian f32s of a safetensors tensor's bytes. The data may start at any byte
/// offset, so they are decoded instead of cast in place.
pub(crate) fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Reads a full parameter set stored under `prefix`.
fn read_params(
    path: &Path,
    st: &SafeTensors<'_>,
    prefix: &str,
    specs: &[ParamSpec],
    hint: &'static str,
) -> Result<Params, CheckpointError> {
    let mut tensors = Vec::with_capacity(specs.len());
    for spec in specs {
        let (_, data) = read_f32(
            path,
            st,
            &format!("{prefix}{}", spec.name),
            Some(&spec.shape),
            hint,
        )?;
        tensors.push(Tensor {
            spec: spec.clone(),
            data,
        });
    }
    Ok(Params { tensors })
}

/// Reads the data statistics, if the file has any of them.
fn read_stats(path: &Path, st: &SafeTensors<'_>) -> Result<Option<DataStats>, CheckpointError> {
    let names = st.names();
    if ![STATS_MEAN_IMAGE, STATS_EIGENVALUES, STATS_EIGENVECTORS]
        .iter()
        .any(|n| names.contains(n))
    {
        return Ok(None);
    }
    let (shape, mean_image) = read_f32(path, st, STATS_MEAN_IMAGE, None, STATS_HINT)?;
    let size = shape.first().copied().unwrap_or(0);
    if shape != [size, size, 3] || size == 0 {
        return Err(CheckpointError::Shape {
            path: path.into(),
            name: STATS_MEAN_IMAGE.into(),
            got: shape,
            want: vec![size.max(1), size.max(1), 3],
        });
    }
    let (_, ev) = read_f32(path, st, STATS_EIGENVALUES, Some(&[3]), STATS_HINT)?;
    let (_, vecs) = read_f32(path, st, STATS_EIGENVECTORS, Some(&[3, 3]), STATS_HINT)?;
    Ok(Some(DataStats {
        size,
        mean_image,
        pca_eigenvalues: [ev[0], ev[1], ev[2]],
        pca_eigenvectors: [
            [vecs[0], vecs[1], vecs[2]],
            [vecs[3], vecs[4], vecs[5]],
            [vecs[6], vecs[7], vecs[8]],
        ],
    }))
}

/// The network a foreign checkpoint's tensor shapes describe: widths from each layer's output
/// dimension, classes from `fc8.weight`, groups from conv2's input channels per group
/// (`C1 / conv2.weight[1]`); batch normalisation when `bn1.weight` is there, else LRN; ReLU, as
/// in the paper. The full shape check against the
/// result happens after, so this only reads what it needs. shapes: tensor name → shape.
pub fn infer_config(
    path: &Path,
    shapes: &HashMap<String, Vec<usize>>,
    input_size: usize,
) -> Result<ModelConfig, CheckpointError> {
    let dim = |name: &str, i: usize| -> Result<usize, CheckpointError> {
        let s = shapes.get(name).ok_or_else(|| CheckpointError::Missing {
            path: path.into(),
            name: name.into(),
            hint: PARAM_HINT,
        })?;
        s.get(i).copied().ok_or_else(|| CheckpointError::Infer {
            path: path.into(),
            reason: format!(
                "`{name}` has shape {s:?}, expected at least {} dimensions",
                i + 1
            ),
        })
    };
    let mut widths = [0usize; 7];
    for (i, name) in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
        .iter()
        .enumerate()
    {
        widths[i] = dim(&format!("{name}.weight"), 0)?;
    }
    let per_group = dim("conv2.weight", 1)?;
    if per_group == 0 || widths[0] % per_group != 0 {
        return Err(CheckpointError::Infer {
            path: path.into(),
            reason: format!("conv2.weight takes {per_group} input channels per group, which does not divide conv1's {} outputs", widths[0]),
        });
    }
    Ok(ModelConfig {
        input_size,
        widths,
        classes: dim("fc8.weight", 0)?,
        groups: widths[0] / per_group,
        // A batch normalisation's tensors say it is there; without them, the paper's LRN.
        norm: if shapes.contains_key("bn1.weight") {
            Norm::Batch
        } else {
            Norm::Lrn
        },
        activation: Activation::Relu,
        // Another framework's preprocessing is the paper's unless the user rescales.
        input_scale: 1.0,
        // The tensors cannot tell the pooling; every published AlexNet uses the paper's.
        pool_size: 3,
        pool_stride: 2,
        conv1_pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::random_tensor;

    fn sample(cfg: &ModelConfig) -> Checkpoint {
        let mut params = Params::init(cfg, 3).unwrap();
        // Non-constant biases too, so a mix-up of tensors shows.
        for (i, t) in params.tensors.iter_mut().enumerate() {
            if t.spec.name.ends_with(".bias") {
                t.data = random_tensor(i as u32, t.data.len(), 1.0);
            }
        }
        let mut momentum = Params::zeros(cfg).unwrap();
        for (i, t) in momentum.tensors.iter_mut().enumerate() {
            t.data = random_tensor(100 + i as u32, t.data.len(), 0.1);
        }
        let mut ck = Checkpoint::new(cfg.clone(), params);
        ck.momentum = Some(momentum);
        ck.stats = Some(DataStats {
            size: 5,
            mean_image: random_tensor(7, 75, 50.0),
            pca_eigenvalues: [0.2, 0.02, 0.005],
            pca_eigenvectors: [[-0.58, -0.58, -0.58], [0.7, 0.0, -0.7], [0.4, -0.8, 0.4]],
        });
        ck.run_state.insert("step".into(), "1234".into());
        ck.run_state.insert("lr".into(), "0.001".into());
        ck
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let mut cfg = ModelConfig::small(67, 16, 5);
        cfg.activation = Activation::Tanh;
        cfg.norm = Norm::None;
        let ck = sample(&cfg);
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path, None).unwrap();
        assert_eq!(back, ck);
        // Saving again over the file works and leaves no temporary files behind.
        back.save(&path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "checkpoint mode {mode:o}");
        }
        // The raw file has the names and layouts of docs/checkpoints.md.
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("conv2.weight").unwrap().shape(),
            &[cfg.widths[1], cfg.widths[0] / 2, 5, 5]
        );
        assert_eq!(st.tensor("momentum.fc8.bias").unwrap().shape(), &[5]);
        assert_eq!(st.tensor("stats.mean_image").unwrap().shape(), &[5, 5, 3]);
    }

    #[test]
    fn the_same_checkpoint_is_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig::small(67, 16, 5);
        let mut ck = sample(&cfg);
        for (k, v) in [
            ("epoch", "2"),
            ("seed", "9"),
            ("schedule", "{}"),
            ("batch_in_epoch", "0"),
        ] {
            ck.run_state.insert(k.into(), v.into());
        }
        // Saved from separate maps and threads, as two runs would.
        let paths: Vec<_> = (0..4)
            .map(|i| dir.path().join(format!("{i}.safetensors")))
            .collect();
        std::thread::scope(|s| {
            for p in &paths {
                let ck = ck.clone();
                s.spawn(move || ck.save(p).unwrap());
            }
        });
        let first = std::fs::read(&paths[0]).unwrap();
        for p in &paths[1..] {
            assert!(
                std::fs::read(p).unwrap() == first,
                "{} differs",
                p.display()
            );
        }
        assert_eq!(
            Checkpoint::read_metadata(&paths[0]).unwrap()["step"],
            ck.run_state["step"]
        );
        // safetensors itself reads it, and the header is in name order.
        let st = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(st.len(), ck.params.tensors.len() * 2 + 3);
        let (_, header) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["seed"], "9");
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let keys = [
            "\"batch_in_epoch\"",
            "\"epoch\"",
            "\"lr\"",
            "\"schedule\"",
            "\"seed\"",
            "\"step\"",
        ];
        let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            4,
            "a temporary was left"
        );
    }

    #[test]
    fn foreign_checkpoint_shapes_give_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torch.safetensors");
        for (groups, norm) in [(1, Norm::Lrn), (2, Norm::Lrn), (2, Norm::Batch)] {
            let mut cfg = ModelConfig::small(99, 8, 7);
            (cfg.groups, cfg.norm) = (groups, norm);
            let params = Params::init(&cfg, 1).unwrap();
            // Write like safetensors.torch.save_file: parameters only, no alexnet metadata.
            let views: Vec<_> = params
                .tensors
                .iter()
                .map(|t| {
                    (
                        t.spec.name.clone(),
                        F32View {
                            shape: &t.spec.shape,
                            data: &t.data,
                        },
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &path).unwrap();
            assert!(matches!(
                Checkpoint::load(&path, None),
                Err(CheckpointError::NoInputSize { .. })
            ));
            let back = Checkpoint::load(&path, Some(99)).unwrap();
            assert!(back.foreign && back.momentum.is_none() && back.stats.is_none());
            assert_eq!(back.config, cfg);
            assert_eq!(back.params, params);
            // A wrong input size makes fc6's fan-in disagree, and the error names it.
            let err = Checkpoint::load(&path, Some(131))
                .err()
                .map(|e| e.to_string())
                .expect("a wrong input size must be refused");
            assert!(err.contains("fc6.weight"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let cfg = ModelConfig::small(67, 16, 5);
        let mut ck = Checkpoint::new(cfg.clone(), Params::init(&cfg, 1).unwrap());
        ck.params.tensors.retain(|t| t.spec.name != "conv3.bias");
        let err = ck.save(&path).unwrap_err().to_string();
        assert!(
            err.contains("conv3.bias") && err.contains("missing"),
            "{err}"
        );

        // Write a file whose fc6.weight is transposed, with our metadata: the load names it.
        let params = Params::init(&cfg, 1).unwrap();
        let shapes: Vec<Vec<usize>> = params
            .tensors
            .iter()
            .map(|t| {
                if t.spec.name == "fc6.weight" {
                    vec![t.spec.shape[1], t.spec.shape[0]]
                } else {
                    t.spec.shape.clone()
                }
            })
            .collect();
        let views: Vec<_> = params
            .tensors
            .iter()
            .zip(&shapes)
            .map(|(t, s)| {
                (
                    t.spec.name.clone(),
                    F32View {
                        shape: s,
                        data: &t.data,
                    },
                )
            })
            .collect();
        let meta = HashMap::from([(
            META_CONFIG.to_string(),
            serde_json::to_string(&cfg).unwrap(),
        )]);
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        let err = Checkpoint::load(&path, None)
            .err()
            .map(|e| e.to_string())
            .expect("a transposed fc6.weight must be refused");
        assert!(err.contains("fc6.weight") && err.contains("shape"), "{err}");

        let mut ck = Checkpoint::new(cfg.clone(), params);
        ck.run_state.insert("input_size".into(), "3".into());
        assert!(matches!(
            ck.save(&path),
            Err(CheckpointError::ReservedKey { .. })
        ));
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(matches!(
            Checkpoint::load(&path, None),
            Err(CheckpointError::Format { .. })
        ));
    }
}
