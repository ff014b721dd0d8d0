//! Ensembles (the paper's Section 7) and the predictions sheet (Figure 4, left): `eval` and
//! `predict` with several checkpoints average the members' softmax outputs, each member with
//! its own input size and mean image, classes mapped by wnid; the sheet draws one panel per
//! image. The truth is each member's logits from `export-features --layer logits`.
mod common;

use alexnet::device::Device;
use alexnet::export::predictions_sheet::{PredictionsLayout, OTHER_BAR, TRUE_BAR};
use alexnet::export::FeatureFile;
use alexnet::model::Checkpoint;
use alexnet::train::eval::softmax;
use alexnet::train::{eval_checkpoints, EvalJob, View};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Side of the stored images; member A sees 67², member B 71².
const S: usize = 72;
/// Member B's classes, in its own label order: B's class j is the data's class PERM[j].
const PERM: [usize; 3] = [2, 0, 1];

struct Setup {
    dir: PathBuf,
    raw: PathBuf,
    shards: PathBuf,
    wnids: Vec<String>,
    a: PathBuf,
    b: PathBuf,
    /// Each member's softmax of every stored image (data's class order), by source.
    pa: Vec<(String, i32, Vec<f64>)>,
    pb: Vec<(String, i32, Vec<f64>)>,
}

fn train(shards: &Path, out: &Path, input: &str, seed: &str) -> PathBuf {
    let (ok, _, err) = alexnet(&[
        "train",
        s(shards),
        "--out",
        s(out),
        "--steps",
        "3",
        "--batch",
        "4",
        "--input-size",
        input,
        "--widths",
        "8,16,24,24,16,32,32",
        "--init",
        "he",
        "--lr",
        "0.001",
        "--seed",
        seed,
        "--devices",
        "cpu",
        "--quiet",
    ]);
    assert!(ok, "train failed: {err}");
    out.join("last.safetensors")
}

/// Two members of three classes: A as trained; B trained at another input size, then given
/// another mean image and its classes in another order (fc8's rows and its `classes`
/// metadata permuted together), so only a wnid mapping makes it agree with A.
fn setup() -> &'static Setup {
    static S_: OnceLock<Setup> = OnceLock::new();
    S_.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ensemble");
        let _ = std::fs::remove_dir_all(&dir);
        let raw = dir.join("raw");
        make_tree(&raw, 3, 4, false);
        let shards = dir.join("shards");
        ingest_ok(&[s(&raw), s(&shards), "--size", &S.to_string()]);
        // Beside the runs, not in them: a run folder's files are train's own.
        let a = dir.join("a.safetensors");
        std::fs::copy(train(&shards, &dir.join("run-a"), "67", "1"), &a).unwrap();
        let trained_b = train(&shards, &dir.join("run-b"), "71", "2");
        let mut ck = Checkpoint::load(&trained_b, None).unwrap();
        let wnids: Vec<String> = serde_json::from_str(&ck.run_state["classes"]).unwrap();
        assert_eq!(
            wnids,
            ["n00001000", "n00001007", "n00001014"],
            "train records the wnids"
        );
        let permuted: Vec<String> = PERM.iter().map(|&c| wnids[c].clone()).collect();
        ck.run_state
            .insert("classes".into(), serde_json::to_string(&permuted).unwrap());
        let w = ck.params.get("fc8.weight").unwrap().data.clone();
        let bias = ck.params.get("fc8.bias").unwrap().data.clone();
        let inputs = w.len() / 3;
        let fc8 = ck.params.get_mut("fc8.weight").unwrap();
        for (j, &c) in PERM.iter().enumerate() {
            fc8.data[j * inputs..(j + 1) * inputs]
                .copy_from_slice(&w[c * inputs..(c + 1) * inputs]);
        }
        let b8 = ck.params.get_mut("fc8.bias").unwrap();
        for (j, &c) in PERM.iter().enumerate() {
            b8.data[j] = bias[c];
        }
        ck.momentum = None;
        let stats = ck.stats.as_mut().unwrap();
        for (i, m) in stats.mean_image.iter_mut().enumerate() {
            *m = (*m + (i % 23) as f32 * 2.0 - 20.0).clamp(0.0, 255.0);
        }
        let b = dir.join("b-permuted.safetensors");
        ck.save(&b).unwrap();
        let pa = member_probs(&shards, &a, None);
        let pb = member_probs(&shards, &b, Some(&PERM));
        Setup {
            dir,
            raw,
            shards,
            wnids,
            a,
            b,
            pa,
            pb,
        }
    })
}

/// A member's softmax of every stored image, in the data's class order, by source path.
fn member_probs(shards: &Path, ck: &Path, order: Option<&[usize]>) -> Vec<(String, i32, Vec<f64>)> {
    let out = ck.with_extension("logits.parquet");
    let (ok, _, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--checkpoint",
        s(ck),
        "--layer",
        "logits",
        "--devices",
        "cpu",
        "--overwrite",
        s(shards),
        s(&out),
    ]);
    assert!(ok, "export-features failed: {err}");
    let f = FeatureFile::open(&out).unwrap();
    (0..f.len())
        .map(|i| {
            let p = softmax(&f.row(i).unwrap());
            let mut mapped = vec![0.0; p.len()];
            for (j, v) in p.into_iter().enumerate() {
                mapped[order.map_or(j, |o| o[j])] = v;
            }
            (f.sources[i].clone(), f.labels[i], mapped)
        })
        .collect()
}

fn job(st: &Setup, checkpoints: &[&Path], view: View) -> EvalJob {
    EvalJob {
        checkpoints: checkpoints.iter().map(|p| p.to_path_buf()).collect(),
        data: vec![st.shards.clone()],
        view,
        // Five: the last batch is short.
        batch: 5,
        device: Device::Cpu,
        input_size: None,
        keep: 0,
        precision: Default::default(),
        part: None,
    }
}

/// Loss, top-1 and top-5 accuracy of probabilities, as eval counts them (ties are misses).
fn score(rows: &[(i32, Vec<f64>)]) -> (f64, f64, f64) {
    let n = rows.len() as f64;
    let (mut loss, mut top1, mut top5) = (0.0, 0.0, 0.0);
    for (label, p) in rows {
        let l = *label as usize;
        let rank = p
            .iter()
            .enumerate()
            .filter(|&(j, &q)| j != l && q >= p[l])
            .count();
        loss -= p[l].ln();
        top1 += (rank < 1) as u8 as f64;
        top5 += (rank < 5) as u8 as f64;
    }
    (loss / n, top1 / n, top5 / n)
}

#[test]
fn the_ensemble_is_the_mean_of_its_members_softmax() {
    let st = setup();
    let (pa, pb) = (&st.pa, &st.pb);
    let e = eval_checkpoints(&job(st, &[&st.a, &st.b], View::Centre)).unwrap();
    assert_eq!(e.classes, st.wnids);
    assert_eq!(e.labels.len(), pa.len());
    let k = 3;
    let mut want = Vec::new();
    let mut differ = 0.0f64;
    for (i, ((src, label, a), (src_b, _, b))) in pa.iter().zip(pb.iter()).enumerate() {
        assert_eq!(src, src_b);
        assert_eq!(e.labels[i], *label as usize);
        let mean: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect();
        for c in 0..k {
            let got = e.probs[i * k + c];
            assert!(
                (got - mean[c]).abs() < 1e-6,
                "{src} class {c}: ensemble {got}, mean of the members {}",
                mean[c]
            );
            differ = differ.max((a[c] - b[c]).abs());
        }
        want.push((*label, mean));
    }
    assert!(
        differ > 1e-3,
        "the members must disagree for the test to mean anything"
    );

    // The command line reports the same, and every member alone.
    let (ok, out, err) = alexnet(&[
        "eval",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&st.b),
        s(&st.shards),
        "--devices",
        "cpu",
        "--batch",
        "7",
        "--json",
    ]);
    assert!(ok, "eval failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let close = |v: &serde_json::Value, want: (f64, f64, f64)| {
        let got = (
            v["loss"].as_f64().unwrap(),
            v["top1_accuracy"].as_f64().unwrap(),
            v["top5_accuracy"].as_f64().unwrap(),
        );
        assert!((got.0 - want.0).abs() < 1e-6, "{v}: want {want:?}");
        assert!(
            (got.1 - want.1).abs() < 1e-9 && (got.2 - want.2).abs() < 1e-9,
            "{v}: {want:?}"
        );
    };
    close(&v, score(&want));
    assert_eq!(v["count"], 12);
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1]["checkpoint"].as_str(), Some(s(&st.b)));
    let alone = |p: &[(String, i32, Vec<f64>)]| -> Vec<(i32, Vec<f64>)> {
        p.iter().map(|(_, l, q)| (*l, q.clone())).collect()
    };
    close(&members[0], score(&alone(pa)));
    close(&members[1], score(&alone(pb)));
    let (ok, out, _) = alexnet(&[
        "eval",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&st.b),
        s(&st.shards),
        "--devices",
        "cpu",
    ]);
    assert!(
        ok && out.starts_with("ensemble of 2 networks, 12 images"),
        "{out}"
    );
}

#[test]
fn a_ten_crop_ensemble_is_the_mean_of_its_members_ten_crop_softmax() {
    let st = setup();
    let a = eval_checkpoints(&job(st, &[&st.a], View::TenCrop)).unwrap();
    let b = eval_checkpoints(&job(st, &[&st.b], View::TenCrop)).unwrap();
    let ab = eval_checkpoints(&job(st, &[&st.a, &st.b], View::TenCrop)).unwrap();
    let centre = eval_checkpoints(&job(st, &[&st.a], View::Centre)).unwrap();
    let mut views_matter = 0.0f64;
    for i in 0..ab.probs.len() {
        let want = (a.probs[i] + b.probs[i]) / 2.0;
        assert!(
            (ab.probs[i] - want).abs() < 1e-9,
            "{i}: {} vs {want}",
            ab.probs[i]
        );
        views_matter = views_matter.max((a.probs[i] - centre.probs[i]).abs());
    }
    assert!(
        views_matter > 1e-4,
        "ten views must differ from the centre crop"
    );
    // Each member's own score is the one it gets alone.
    assert_eq!(ab.report.members[0].result, a.report.ensemble);
    assert_eq!(ab.report.members[1].result, b.report.ensemble);
    let rows: Vec<(i32, Vec<f64>)> = (0..ab.labels.len())
        .map(|i| (ab.labels[i] as i32, ab.probs[i * 3..(i + 1) * 3].to_vec()))
        .collect();
    let (loss, top1, _) = score(&rows);
    assert!((ab.report.ensemble.loss - loss).abs() < 1e-9);
    assert_eq!(ab.report.ensemble.top1_accuracy, top1);
}

#[test]
fn networks_with_other_classes_are_refused_naming_the_class() {
    let st = setup();
    let mut ck = Checkpoint::load(&st.b, None).unwrap();
    let mut wnids: Vec<String> = serde_json::from_str(&ck.run_state["classes"]).unwrap();
    wnids[1] = "n09999999".into();
    ck.run_state
        .insert("classes".into(), serde_json::to_string(&wnids).unwrap());
    let other = st.dir.join("other-classes.safetensors");
    ck.save(&other).unwrap();
    let (ok, _, err) = alexnet(&[
        "eval",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&other),
        s(&st.shards),
        "--devices",
        "cpu",
    ]);
    assert!(!ok, "a member with other classes must be refused");
    assert!(
        err.contains("other-classes.safetensors") && err.contains("class 1 `n09999999`"),
        "{err}"
    );
    let (ok, _, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&other),
        s(&st.raw),
        "--devices",
        "cpu",
    ]);
    assert!(!ok && err.contains("class 1 `n09999999`"), "{err}");
}

#[test]
fn predict_averages_the_members_and_draws_one_panel_per_image() {
    let st = setup();
    let (pa, pb) = (&st.pa, &st.pb);
    let sheet = st.dir.join("predict-sheet.png");
    let _ = std::fs::remove_file(&sheet);
    let (ok, out, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&st.b),
        "--json",
        "--devices",
        "cpu",
        "--sheet",
        s(&sheet),
        "--sheet-count",
        "5",
        s(&st.raw),
    ]);
    assert!(ok, "predict failed: {err}");
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 12);
    for a in &answers {
        let path = a["path"].as_str().unwrap();
        let source = path.strip_prefix(&format!("{}/", s(&st.raw))).unwrap();
        let find =
            |p: &[(String, i32, Vec<f64>)]| p.iter().find(|r| r.0 == source).unwrap().2.clone();
        let (x, y) = (find(pa), find(pb));
        let folder = source.split('/').next().unwrap();
        let truth = st.wnids.iter().position(|w| w == folder).unwrap();
        assert_eq!(a["true_label"], truth, "{a}");
        for c in a["top"].as_array().unwrap() {
            let label = c["label"].as_u64().unwrap() as usize;
            let want = (x[label] + y[label]) / 2.0;
            let got = c["probability"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-6,
                "{source} class {label}: {got} vs {want}"
            );
            // No --classes: the names come from the checkpoints' recorded wnids.
            assert_eq!(c["wnid"].as_str(), Some(st.wnids[label].as_str()));
        }
    }
    let img = image::open(&sheet).unwrap().to_rgb8();
    let l = PredictionsLayout::new(5, S);
    assert_eq!(
        img.dimensions(),
        (l.width, l.height),
        "five panels of 72-pixel images"
    );
    assert!(l.bytes() < 8 << 20);
    // Every panel: its three classes as bars, exactly one of them the true class in red.
    for p in 0..5 {
        let colours: Vec<_> = (0..3)
            .map(|b| {
                let (x, y) = l.bar(p, b);
                *img.get_pixel(x + 1, y + 8)
            })
            .collect();
        let red = colours.iter().filter(|&&c| c == TRUE_BAR).count();
        let blue = colours.iter().filter(|&&c| c == OTHER_BAR).count();
        assert_eq!((red, blue), (1, 2), "panel {p}: {colours:?}");
    }
    // An existing sheet is kept unless --overwrite; a count the sheet cannot show is refused.
    let (ok, _, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&st.a),
        "--sheet",
        s(&sheet),
        s(&st.raw),
    ]);
    assert!(!ok && err.contains("predict-sheet.png"), "{err}");
    let other = st.dir.join("none.png");
    let (ok, _, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&st.a),
        "--sheet",
        s(&other),
        "--sheet-count",
        "65",
        s(&st.raw),
    ]);
    assert!(
        !ok && err.contains("--sheet-count 65") && !other.exists(),
        "{err}"
    );
}

#[test]
fn eval_draws_the_first_images_with_the_true_class_marked() {
    let st = setup();
    let sheet = st.dir.join("eval-sheet.png");
    let names = st.dir.join("names.txt");
    std::fs::write(
        &names,
        "n00001014 third\nn00001000 first\nn00001007 second\n",
    )
    .unwrap();
    let (ok, _, err) = alexnet(&[
        "eval",
        "--checkpoint",
        s(&st.a),
        "--checkpoint",
        s(&st.b),
        s(&st.shards),
        "--devices",
        "cpu",
        "--sheet",
        s(&sheet),
        "--sheet-count",
        "3",
        "--classes",
        s(&names),
        "--overwrite",
    ]);
    assert!(ok, "eval failed: {err}");
    let img = image::open(&sheet).unwrap().to_rgb8();
    let l = PredictionsLayout::new(3, S);
    assert_eq!(img.dimensions(), (l.width, l.height));
    let e = eval_checkpoints(&EvalJob {
        keep: 3,
        ..job(st, &[&st.a, &st.b], View::Centre)
    })
    .unwrap();
    assert_eq!(
        e.kept.len(),
        3 * S * S * 3,
        "the first three images' pixels"
    );
    for p in 0..3 {
        // The panel's image is the stored image, enlarged by a whole factor.
        let (x, y) = l.image(p);
        let i = (10 * S + 20) * 3 + p * S * S * 3;
        let want = image::Rgb([e.kept[i], e.kept[i + 1], e.kept[i + 2]]);
        assert_eq!(
            *img.get_pixel(x + 20 * l.up, y + 10 * l.up),
            want,
            "panel {p}"
        );
        let red = (0..3)
            .filter(|&b| {
                let (x, y) = l.bar(p, b);
                *img.get_pixel(x + 1, y + 8) == TRUE_BAR
            })
            .count();
        assert_eq!(red, 1, "panel {p}");
    }
}
