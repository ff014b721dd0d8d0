//! `alexnet report RUN RUN…`: several runs on the same axes, and `--table`, their numbers side
//! by side. Runs whose directory names differ only in a seed suffix (`lrn-s1`, `lrn-s2`,
//! `lrn_seed3`) form a group, drawn as its mean with the spread across seeds and counted as
//! one row of the table; this is how the ablation pipelines name their runs.
mod figure;
mod table;

pub use figure::{render_comparison, COMPARE_HEIGHT, COMPARE_WIDTH};
pub use table::{markdown, table, GroupRow, Stat};

use super::plot::PlotError;
use crate::train::metrics::{read_metrics, Record, METRICS_FILE};
use std::path::{Path, PathBuf};

/// The paper's Figure 1 threshold: steps until the training error reaches 25%.
pub const DEFAULT_THRESHOLD: f64 = 0.25;

/// One run's records, with its name and group.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// The run directory's name.
    pub name: String,
    /// The name without its seed suffix.
    pub group: String,
    /// Its metrics.
    pub records: Vec<Record>,
}

impl RunCurves {
    /// A run named `name` (its group follows from the name).
    pub fn new(name: &str, records: Vec<Record>) -> RunCurves {
        RunCurves {
            name: name.into(),
            group: group_name(name).into(),
            records,
        }
    }
}

/// `name` without a trailing seed marker: `-s3`, `_s3`, `.s3`, `-seed3`, `_seed3` (case as
/// written). A name that is only the marker keeps it.
pub fn group_name(name: &str) -> &str {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return name;
    }
    let head = &name[..name.len() - digits];
    for marker in ["seed", "s"] {
        if let Some(rest) = head.strip_suffix(marker) {
            if let Some(base) = rest.strip_suffix(['-', '_', '.']) {
                if !base.is_empty() {
                    return base;
                }
            }
        }
    }
    name
}

/// How the comparison is drawn and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareOptions {
    /// The figure's title.
    pub title: Option<String>,
    /// Training top-1 error the table counts steps to (0..1).
    pub threshold: f64,
    /// Also write the table as `OUT.md` and `OUT.json` beside the image.
    pub table: bool,
    /// `--overwrite`: existing outputs may be replaced.
    pub overwrite: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            title: None,
            threshold: DEFAULT_THRESHOLD,
            table: false,
            overwrite: false,
        }
    }
}

/// What [`write_comparison`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The figure.
    pub image: PathBuf,
    /// The table's rows.
    pub rows: Vec<GroupRow>,
    /// The Markdown and JSON files, when the table was asked for.
    pub tables: Option<(PathBuf, PathBuf)>,
}

/// Reads every run's `metrics.jsonl`, draws them on one figure at `out` (the command's default:
/// `report.png` in the runs' [`common_parent`]) and, with `opts.table`, writes the table beside.
pub fn write_comparison(
    run_dirs: &[PathBuf],
    out: &Path,
    opts: &CompareOptions,
) -> Result<Comparison, PlotError> {
    for (i, a) in run_dirs.iter().enumerate() {
        if let Some(b) = run_dirs[i + 1..]
            .iter()
            .find(|b| crate::output_check::same_file(a, b))
        {
            return Err(PlotError::SameRun {
                first: a.clone(),
                second: b.clone(),
            });
        }
    }
    let mut runs = Vec::with_capacity(run_dirs.len());
    let mut inputs = Vec::new();
    for dir in run_dirs {
        let metrics = dir.join(METRICS_FILE);
        let records = read_metrics(&metrics)?;
        if records.is_empty() {
            return Err(PlotError::Empty { path: metrics });
        }
        runs.push(RunCurves::new(&super::plot::run_name(dir), records));
        inputs.push(metrics);
        inputs.push(dir.clone());
    }
    let out = out.to_path_buf();
    let with_ext = |ext: &str| out.with_extension(ext);
    let input_refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    use crate::output_check::{check, Format, Output};
    let mut outputs = vec![(out.clone(), Format::Png)];
    if opts.table {
        outputs.extend([
            (with_ext("md"), Format::Markdown),
            (with_ext("json"), Format::Json),
        ]);
    }
    for (o, format) in &outputs {
        check(&Output::new(o, *format, &input_refs, opts.overwrite))?;
    }
    let rows = table(&runs, opts.threshold);
    let img = render_comparison(&runs, opts)?;
    super::plot::save_report_png(&img, &out)?;
    let tables = if opts.table {
        let (md, json) = (with_ext("md"), with_ext("json"));
        let doc = serde_json::json!({ "threshold": opts.threshold, "groups": rows });
        write_text(&md, &markdown(&rows, opts.threshold))?;
        write_text(&json, &(doc.to_string() + "\n"))?;
        Some((md, json))
    } else {
        None
    };
    Ok(Comparison {
        image: out,
        rows,
        tables,
    })
}

/// The deepest directory holding every run (the current directory if they share none).
pub fn common_parent(dirs: &[PathBuf]) -> PathBuf {
    let parents: Vec<PathBuf> = dirs
        .iter()
        .map(|d| {
            let full = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            full.parent().map_or(full.clone(), Path::to_path_buf)
        })
        .collect();
    let mut common = parents.first().cloned().unwrap_or_default();
    while !parents.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            return PathBuf::from(".");
        }
    }
    common
}

/// Writes `text`, atomically ([`super::write_via_temp`]).
fn write_text(path: &Path, text: &str) -> Result<(), PlotError> {
    super::write_via_temp(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| e.to_string())
    })
    .map_err(|problem| PlotError::Write {
        path: path.into(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_suffixes_group_and_other_digits_do_not() {
        for (name, group) in [
            ("lrn-s1", "lrn"),
            ("no-lrn_s12", "no-lrn"),
            ("pool2x2.seed3", "pool2x2"),
            ("tanh-seed2", "tanh"),
            ("run", "run"),
            ("conv64", "conv64"),
            ("s1", "s1"),
            ("-s1", "-s1"),
            ("relus1", "relus1"),
        ] {
            assert_eq!(group_name(name), group, "{name}");
        }
    }

    #[test]
    fn common_parent_of_sibling_and_nested_runs() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("x/a");
        let b = d.path().join("x/y/b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(common_parent(std::slice::from_ref(&a)), root.join("x"));
        assert_eq!(common_parent(&[a, b]), root.join("x"));
    }
}
