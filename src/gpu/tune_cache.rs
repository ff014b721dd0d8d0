//! The tuner's table on disk: one JSON file per key (adapter, driver, crate version, hash of
//! the generated WGSL) under `$XDG_CACHE_HOME/alexnet` (default `~/.cache/alexnet`), so that
//! another card, driver or build never reads a table that was not measured for it. A file
//! that cannot be read is ignored with a warning and rewritten; it is never fatal.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a table is valid for. Every field must match for a table to be reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Adapter name (`NVIDIA H100 80GB HBM3`, `llvmpipe …`).
    pub adapter: String,
    /// Backend and device type (`Vulkan DiscreteGpu`).
    pub backend: String,
    /// Driver name and version.
    pub driver: String,
    /// The crate's version.
    pub version: String,
    /// FNV-1a hash of the generated WGSL of every candidate, in hex.
    pub wgsl: String,
}

impl CacheKey {
    /// The file name of the table for this key: a hash of every field.
    pub fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        format!("tune-{:016x}.json", fnv1a(text.as_bytes()))
    }
}

/// The best choice found for one product, with what was timed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductEntry {
    /// Winning tile ([`super::tiles::TileConfig::tag`]).
    pub tile: String,
    /// Winning split-K factor (`None`: the product has no split-K).
    pub splits: Option<usize>,
    /// Every candidate timed, fastest first.
    pub candidates: Vec<Timed>,
}

/// One timed candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timed {
    /// Tile tag.
    pub tile: String,
    /// Split-K factor, if the product has one.
    pub splits: Option<usize>,
    /// Median GPU time in milliseconds.
    pub ms: f64,
    /// Floating-point operations per second at that time, in GFLOP/s.
    pub gflops: f64,
}

/// The file: key, self-test outcomes per tile and check, and the table per product.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TuneFile {
    /// What the file is valid for.
    pub key: Option<CacheKey>,
    /// Tile tag → check name → `None` (passed) or the error.
    pub selftest: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// Product label → entry.
    pub products: BTreeMap<String, ProductEntry>,
}

/// `$XDG_CACHE_HOME/alexnet`, else `$HOME/.cache/alexnet`; `None` when neither is set.
pub fn default_dir() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("alexnet"))
}

/// The table stored for `key` in `dir`, if there is one made for exactly that key. A file
/// that does not parse, or was made for another key, gives `None` and a warning line.
pub fn load(dir: &Path, key: &CacheKey) -> (Option<TuneFile>, Option<String>) {
    let path = dir.join(key.file_name());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(e) => {
            return (
                None,
                Some(format!(
                    "{}: cannot read the tuning cache ({e}); tuning again",
                    path.display()
                )),
            )
        }
    };
    match serde_json::from_str::<TuneFile>(&text) {
        Ok(f) if f.key.as_ref() == Some(key) => (Some(f), None),
        Ok(_) => (
            None,
            Some(format!(
                "{}: the tuning cache was made for another adapter, driver or build; tuning again",
                path.display()
            )),
        ),
        Err(e) => (
            None,
            Some(format!(
                "{}: not a tuning table ({e}); ignored, it will be rewritten",
                path.display()
            )),
        ),
    }
}

/// Write `file` for `key` into `dir` through the one atomic writer ([`crate::atomic`]), so a
/// reader never sees half a table. Errors are returned as a warning line: a cache that cannot
/// be written only costs the next run its tuning time.
pub fn save(dir: &Path, key: &CacheKey, file: &TuneFile) -> Result<PathBuf, String> {
    let path = dir.join(key.file_name());
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "{}: cannot write the tuning cache ({e}); the next run tunes again",
            path.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let text = serde_json::to_string_pretty(file).map_err(|e| fail(&e))?;
    crate::atomic::write_bytes(&path, text.as_bytes()).map_err(|e| fail(&e))?;
    Ok(path)
}

pub use crate::digest::fnv1a;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            adapter: "card".into(),
            backend: "Vulkan DiscreteGpu".into(),
            driver: "580".into(),
            version: "0.1.0".into(),
            wgsl: "abc".into(),
        }
    }

    #[test]
    fn a_table_round_trips_and_other_keys_or_garbage_are_not_reused() {
        let dir = std::env::temp_dir().join(format!("alexnet-tune-cache-{}", std::process::id()));
        let mut file = TuneFile {
            key: Some(key()),
            ..TuneFile::default()
        };
        file.products.insert(
            "gemm.forward 8x8x8".into(),
            ProductEntry {
                tile: "64x64x8/4x4".into(),
                splits: Some(2),
                candidates: vec![],
            },
        );
        save(&dir, &key(), &file).unwrap();
        assert_eq!(load(&dir, &key()), (Some(file.clone()), None));
        // Another driver or WGSL: another file name, so nothing is found.
        for other in [
            CacheKey {
                driver: "581".into(),
                ..key()
            },
            CacheKey {
                wgsl: "abd".into(),
                ..key()
            },
        ] {
            assert_ne!(other.file_name(), key().file_name());
            assert_eq!(load(&dir, &other).0, None);
        }
        // A file under this key's name holding another key's table is refused with a warning.
        let foreign = TuneFile {
            key: Some(CacheKey {
                driver: "581".into(),
                ..key()
            }),
            ..file.clone()
        };
        std::fs::write(
            dir.join(key().file_name()),
            serde_json::to_string(&foreign).unwrap(),
        )
        .unwrap();
        let (got, warn) = load(&dir, &key());
        assert_eq!(got, None);
        assert!(warn.unwrap().contains("another adapter"));
        // Garbage: ignored with a warning, never an error.
        std::fs::write(dir.join(key().file_name()), "{\"key\": [1, 2").unwrap();
        let (got, warn) = load(&dir, &key());
        assert_eq!(got, None);
        assert!(warn.unwrap().contains("not a tuning table"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
