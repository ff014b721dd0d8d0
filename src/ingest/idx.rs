//! Importing IDX files (the MNIST family's format, e.g. Fashion-MNIST) into class folders of
//! PNGs, `OUT/<NN_class>/<index>.png`, the raw-folder layout `alexnet ingest` reads.
//!
//! IDX: a big-endian header `0x00 0x00 <type> <ndim>` (type 0x08 = unsigned byte), then `ndim`
//! big-endian u32 sizes, then the data row-major. Images are `0x00000803` `[n, rows, cols]`,
//! labels `0x00000801` `[n]`. Files may be gzipped; that is sniffed from the content.
//!
//! Class folders are named with a zero-padded label index first (`00_tshirt_top`) so that
//! sorted folder order equals label order, and every class gets its folder even when `--limit`
//! leaves it empty, so a limited test set keeps the same class list as the training set.
//! The output appears atomically: images go to a temporary folder beside `OUT` (the project's
//! one writer, `crate::atomic`), renamed to `OUT` at the end, so an existing `OUT` is a
//! finished import and a second run only checks it.
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Fashion-MNIST's classes in label order, as folder names (without the index prefix).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// What can go wrong importing IDX files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdxError {
    /// A file could not be read or decompressed.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header is not the expected kind of IDX file.
    #[error("{path}: {problem}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// Images and labels disagree, or a label has no class name.
    #[error("{images} and {labels}: {problem}")]
    Mismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The class-name file is unusable.
    #[error("{path}: {problem}")]
    Classes {
        /// The class-name file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file or folder could not be written.
    #[error("{path}: cannot write: {problem}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// `OUT` exists but is not the import this call would make.
    #[error("{path}: already exists but {problem}; delete it and re-run import-idx")]
    Existing {
        /// The output folder.
        path: PathBuf,
        /// How it differs.
        problem: String,
    },
}

/// Where class names come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassNames {
    /// Fashion-MNIST's ten names ([`FASHION_MNIST_CLASSES`]).
    FashionMnist,
    /// A text file, one name per line in label order (blank lines ignored).
    File(PathBuf),
    /// No names: folders are the zero-padded label numbers, as many as the largest label + 1.
    Numbers,
}

impl FromStr for ClassNames {
    type Err = std::convert::Infallible;
    /// `fashion-mnist` is the built-in list; anything else is a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "fashion-mnist" => ClassNames::FashionMnist,
            path => ClassNames::File(PathBuf::from(path)),
        })
    }
}

/// One import: the arguments of `alexnet import-idx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportIdxConfig {
    /// The images file (`*-images-idx3-ubyte[.gz]`).
    pub images: PathBuf,
    /// The labels file (`*-labels-idx1-ubyte[.gz]`).
    pub labels: PathBuf,
    /// The folder to create.
    pub out: PathBuf,
    /// Where the class names come from.
    pub classes: ClassNames,
    /// Import only the first N images.
    pub limit: Option<usize>,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    /// Images in `OUT`.
    pub images: usize,
    /// Class folders in `OUT`.
    pub classes: usize,
    /// True when `OUT` already held this import and nothing was written.
    pub skipped: bool,
}

/// The pixels of an IDX image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `[count, rows, cols]` row-major grey levels.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The grey levels of image `i`, `[rows, cols]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let err = |source| IdxError::Read {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(err)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(err)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the header of an IDX u8 file with `ndim` dimensions and returns the sizes and the data.
fn parse_idx(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<Vec<usize>, IdxError> {
    let bad = |problem: String| IdxError::Header {
        path: path.to_path_buf(),
        problem,
    };
    let ndim = (magic & 0xff) as usize;
    let want = format!(
        "an IDX {what} file starts with 0x{magic:08x} (unsigned bytes, {ndim} dimension(s))"
    );
    if bytes.len() < 4 {
        return Err(bad(format!(
            "only {} bytes, too short for an IDX header: {want}",
            bytes.len()
        )));
    }
    let got = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if got != magic {
        let hint = match got {
            IMAGES_MAGIC => "; this is an images file: are IMAGES and LABELS swapped?",
            LABELS_MAGIC => "; this is a labels file: are IMAGES and LABELS swapped?",
            _ if bytes[0] != 0 || bytes[1] != 0 => "; this is not an IDX file at all",
            _ => "",
        };
        return Err(bad(format!("magic number 0x{got:08x}, but {want}{hint}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!(
            "truncated header: {} bytes, the header alone needs {header}; the file is damaged, fetch it again",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let data: usize = dims.iter().product();
    if bytes.len() - header != data {
        return Err(bad(format!(
            "the header says {dims:?} = {data} bytes of data, but the file has {}; the file is damaged or truncated, fetch it again",
            bytes.len() - header
        )));
    }
    Ok(dims)
}

/// Reads an IDX images file (`0x00000803`, `[n, rows, cols]` u8), gzipped or not.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, IdxError> {
    let mut bytes = read_maybe_gz(path)?;
    let dims = parse_idx(path, &bytes, IMAGES_MAGIC, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(IdxError::Header {
            path: path.to_path_buf(),
            problem: format!(
                "images of {}×{} pixels: nothing to import",
                dims[1], dims[2]
            ),
        });
    }
    bytes.drain(..16);
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: bytes,
    })
}

/// Reads an IDX labels file (`0x00000801`, `[n]` u8), gzipped or not.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let mut bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes, LABELS_MAGIC, "labels")?;
    bytes.drain(..8);
    Ok(bytes)
}

/// Lower-case letters and digits kept, every other run of characters one `_`.
fn sanitize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// The class folder names, in label order: a zero-padded index (at least two digits), then
/// the sanitised name. `max_label` is the largest label in the data, which must have a name.
pub fn class_folder_names(spec: &ClassNames, max_label: usize) -> Result<Vec<String>, IdxError> {
    let names: Vec<String> = match spec {
        ClassNames::FashionMnist => FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ClassNames::Numbers => vec![String::new(); max_label + 1],
        ClassNames::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| IdxError::Read {
                path: path.clone(),
                source,
            })?;
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(sanitize)
                .collect();
            if names.iter().any(String::is_empty) {
                return Err(IdxError::Classes {
                    path: path.clone(),
                    problem: "a class name has no letters or digits; give every class a name"
                        .into(),
                });
            }
            names
        }
    };
    if names.len() <= max_label {
        let source = match spec {
            ClassNames::File(p) => p.display().to_string(),
            _ => "fashion-mnist".into(),
        };
        return Err(IdxError::Classes {
            path: PathBuf::from(source),
            problem: format!(
                "{} class names, but the labels go up to {max_label}; give one name per label",
                names.len()
            ),
        });
    }
    let width = (names.len() - 1).to_string().len().max(2);
    Ok(names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n.is_empty() {
                format!("{i:0width$}")
            } else {
                format!("{i:0width$}_{n}")
            }
        })
        .collect())
}

/// Counts the `.png` files per folder name directly under `dir`.
fn existing_layout(dir: &Path) -> Result<Vec<(String, usize)>, IdxError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdxError::Read { path, source }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err(dir))? {
        let entry = entry.map_err(err(dir))?;
        if !entry.path().is_dir() {
            continue;
        }
        let mut n = 0;
        for f in std::fs::read_dir(entry.path()).map_err(err(&entry.path()))? {
            let f = f.map_err(err(&entry.path()))?;
            if f.path().extension().is_some_and(|e| e == "png") {
                n += 1;
            }
        }
        out.push((entry.file_name().to_string_lossy().into_owned(), n));
    }
    out.sort();
    Ok(out)
}

/// Imports IDX images and labels into `OUT/<NN_class>/<index>.png` (greyscale PNGs; `index` is
/// the row in the IDX file, zero-padded). If `OUT` already holds exactly this import (same
/// class folders, same image count), nothing is written.
pub fn import_idx(cfg: &ImportIdxConfig) -> Result<ImportSummary, IdxError> {
    let images = read_idx_images(&cfg.images)?;
    let labels = read_idx_labels(&cfg.labels)?;
    let mismatch = |problem: String| IdxError::Mismatch {
        images: cfg.images.clone(),
        labels: cfg.labels.clone(),
        problem,
    };
    if images.count != labels.len() {
        return Err(mismatch(format!(
            "{} images but {} labels; they must come from the same set (train with train, t10k with t10k)",
            images.count,
            labels.len()
        )));
    }
    let count = cfg.limit.map_or(images.count, |l| l.min(images.count));
    let max_label = labels.iter().copied().max().unwrap_or(0) as usize;
    let folders = class_folder_names(&cfg.classes, max_label)?;

    let mut want: Vec<(String, usize)> = folders.iter().map(|f| (f.clone(), 0)).collect();
    for &l in &labels[..count] {
        want[l as usize].1 += 1;
    }
    want.sort();

    if cfg.out.exists() {
        let have = existing_layout(&cfg.out)?;
        if have == want {
            return Ok(ImportSummary {
                images: count,
                classes: folders.len(),
                skipped: true,
            });
        }
        let total: usize = have.iter().map(|(_, n)| n).sum();
        return Err(IdxError::Existing {
            path: cfg.out.clone(),
            problem: format!(
                "holds {total} images in {} folders, not the {count} images in {} class folders of this import",
                have.len(),
                folders.len()
            ),
        });
    }

    let write_err = |path: &Path, e: &dyn std::fmt::Display| IdxError::Write {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    // Removed if the import fails or is interrupted; a killed one's is removed by the next.
    if let Some(parent) = cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| write_err(parent, &e))?;
    }
    crate::atomic::remove_stale_beside(&cfg.out);
    let temp = crate::atomic::Temp::folder(&cfg.out).map_err(|e| write_err(&cfg.out, &e))?;
    let tmp = temp.path().to_path_buf();
    for f in &folders {
        let d = tmp.join(f);
        std::fs::create_dir_all(&d).map_err(|e| write_err(&d, &e))?;
    }
    let digits = count.saturating_sub(1).to_string().len().max(5);
    (0..count).into_par_iter().try_for_each(|i| {
        let path = tmp
            .join(&folders[labels[i] as usize])
            .join(format!("{i:0digits$}.png"));
        let img = image::GrayImage::from_raw(
            images.cols as u32,
            images.rows as u32,
            images.image(i).to_vec(),
        )
        // from_raw only fails when the buffer is shorter than w·h, and image(i) is exactly w·h.
        .ok_or_else(|| write_err(&path, &"image buffer has the wrong size"))?;
        img.save_with_format(&path, image::ImageFormat::Png)
            .map_err(|e| write_err(&path, &e))
    })?;
    temp.commit(None).map_err(|e| write_err(&cfg.out, &e))?;
    Ok(ImportSummary {
        images: count,
        classes: folders.len(),
        skipped: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "/usr/share/datasets/fashion-mnist";

    fn real(name: &str) -> PathBuf {
        let p = Path::new(DATA).join(name);
        assert!(
            p.exists(),
            "{}: missing; install Fashion-MNIST with `apt-get install dataset-fashion-mnist`",
            p.display()
        );
        p
    }

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_the_real_fashion_mnist_headers() {
        let img = read_idx_images(&real("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (10_000, 28, 28));
        let labels = read_idx_labels(&real("t10k-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels.len(), 10_000);
        assert_eq!(labels.iter().max(), Some(&9));
    }

    #[test]
    fn imports_real_files_with_limit_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("train");
        let cfg = ImportIdxConfig {
            images: real("train-images-idx3-ubyte.gz"),
            labels: real("train-labels-idx1-ubyte.gz"),
            out: out.clone(),
            classes: ClassNames::FashionMnist,
            limit: Some(40),
        };
        let s = import_idx(&cfg).unwrap();
        assert_eq!((s.images, s.classes, s.skipped), (40, 10, false));
        // Nothing beside the import: its temporary folder became it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let layout = existing_layout(&out).unwrap();
        assert_eq!(layout.len(), 10);
        assert_eq!(layout[0].0, "00_tshirt_top");
        assert_eq!(layout[9].0, "09_ankle_boot");
        assert_eq!(layout.iter().map(|(_, n)| n).sum::<usize>(), 40);

        // Image 0's PNG is in its label's folder and holds its pixels.
        let images = read_idx_images(&cfg.images).unwrap();
        let labels = read_idx_labels(&cfg.labels).unwrap();
        let folders = class_folder_names(&ClassNames::FashionMnist, 9).unwrap();
        let p = out.join(&folders[labels[0] as usize]).join("00000.png");
        let png = image::open(&p).unwrap();
        assert_eq!(png.color(), image::ColorType::L8);
        assert_eq!(png.to_luma8().as_raw().as_slice(), images.image(0));

        // Again: nothing written. With another limit: a clear error.
        let again = import_idx(&cfg).unwrap();
        assert!(again.skipped);
        let e = import_idx(&ImportIdxConfig {
            limit: Some(41),
            ..cfg.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("delete it"), "{e}");
    }

    #[test]
    fn leftover_tmp_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("test");
        // A killed import's temporary (pid_max is at most 2^22: that writer is gone).
        let stale = dir.path().join(".test.alexnet-4194304-0.tmp");
        std::fs::create_dir_all(stale.join("junk")).unwrap();
        import_idx(&ImportIdxConfig {
            images: real("t10k-images-idx3-ubyte.gz"),
            labels: real("t10k-labels-idx1-ubyte.gz"),
            out: out.clone(),
            classes: ClassNames::Numbers,
            limit: Some(5),
        })
        .unwrap();
        let layout = existing_layout(&out).unwrap();
        assert_eq!(layout.len(), 10);
        assert_eq!(layout[3].0, "03");
        assert!(!stale.exists());
    }

    #[test]
    fn bad_headers_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let good_images = write("img", &idx(IMAGES_MAGIC, &[2, 2, 2], &[1; 8]));
        let good_labels = write("lab", &idx(LABELS_MAGIC, &[2], &[0, 1]));
        assert_eq!(read_idx_images(&good_images).unwrap().count, 2);

        let cases: Vec<(PathBuf, &str)> = vec![
            (write("short", &[0, 0]), "too short"),
            (
                write("swapped", &idx(LABELS_MAGIC, &[2], &[0, 1])),
                "swapped",
            ),
            (
                write("notidx", b"\x89PNG\r\n\x1a\n0000000000000000"),
                "not an IDX file",
            ),
            (
                write("f32", &idx(0x0000_0d03, &[1, 1, 1], &[0; 4])),
                "0x00000d03",
            ),
            (
                write("trunc", &idx(IMAGES_MAGIC, &[3, 2, 2], &[1; 8])),
                "12 bytes of data",
            ),
            (
                write("long", &idx(IMAGES_MAGIC, &[1, 2, 2], &[1; 8])),
                "damaged",
            ),
            (
                write("hdr", &IMAGES_MAGIC.to_be_bytes()[..]),
                "truncated header",
            ),
        ];
        for (p, want) in cases {
            let e = read_idx_images(&p).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(&*p.to_string_lossy()),
                "{want}: {e}"
            );
        }

        // Gzipped crafted file with a bad header: the error still names the file.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx(LABELS_MAGIC, &[5], &[0; 2])).unwrap();
        let p = write("lab.gz", &gz.finish().unwrap());
        let e = read_idx_labels(&p).unwrap_err().to_string();
        assert!(e.contains("lab.gz") && e.contains("5 bytes of data"), "{e}");

        // Counts that disagree, and labels without names.
        let three = write("lab3", &idx(LABELS_MAGIC, &[3], &[0, 1, 2]));
        let cfg = ImportIdxConfig {
            images: good_images.clone(),
            labels: three,
            out: dir.path().join("out"),
            classes: ClassNames::Numbers,
            limit: None,
        };
        let e = import_idx(&cfg).unwrap_err().to_string();
        assert!(e.contains("2 images but 3 labels"), "{e}");
        let names = write("names.txt", b"Cat\n\n");
        let e = import_idx(&ImportIdxConfig {
            labels: good_labels,
            classes: ClassNames::File(names.clone()),
            ..cfg
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("names.txt") && e.contains("up to 1"), "{e}");
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn class_names_from_a_file_are_sanitised_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("names.txt");
        std::fs::write(&p, "T-shirt/top\n  Ankle boot \n\nBag\n").unwrap();
        let names = class_folder_names(&ClassNames::File(p), 2).unwrap();
        assert_eq!(names, vec!["00_t_shirt_top", "01_ankle_boot", "02_bag"]);
        let many = class_folder_names(&ClassNames::Numbers, 120).unwrap();
        assert_eq!((many[0].as_str(), many[120].as_str()), ("000", "120"));
        assert_eq!("fashion-mnist".parse(), Ok(ClassNames::FashionMnist));
    }
}
