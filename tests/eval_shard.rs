//! `alexnet eval --shard I/N --out PART` and `alexnet eval --merge PART…`
//! (docs/job-arrays.md): the merge of the parts is the evaluation of the whole set, for one
//! network and for an ensemble, centre crop and ten views; parts that do not make one whole
//! evaluation are refused, naming the part, and nothing is written.
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A network trained for a few steps on real images, so its scores are not those of chance.
fn train(shards: &Path, out: &Path, seed: &str) -> PathBuf {
    let (ok, _, err) = alexnet(&[
        "train",
        s(shards),
        "--out",
        s(out),
        "--steps",
        "4",
        "--batch",
        "8",
        "--input-size",
        "67",
        "--widths",
        "8,16,24,24,16,32,32",
        "--init",
        "he",
        "--lr",
        "0.002",
        "--seed",
        seed,
        "--devices",
        "cpu",
        "--quiet",
    ]);
    assert!(ok, "train failed: {err}");
    out.join("last.safetensors")
}

/// `eval --json` of `args`, parsed.
fn eval_json(args: &[&str]) -> Value {
    let mut all = vec!["eval", "--devices", "cpu", "--batch", "5", "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = alexnet(&all);
    assert!(ok, "eval {args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Same counts, the same rates (exactly: they come from the same integers) and the same loss
/// up to the order of a sum.
fn assert_same_report(got: &Value, want: &Value, what: &str) {
    assert_eq!(got["count"], want["count"], "{what}: {got} vs {want}");
    assert_eq!(got["non_finite"], want["non_finite"], "{what}");
    for k in ["top1_accuracy", "top5_accuracy"] {
        assert_eq!(got[k], want[k], "{what}: {k}: {got} vs {want}");
    }
    let (g, w) = (
        got["loss"].as_f64().unwrap(),
        want["loss"].as_f64().unwrap(),
    );
    assert!((g - w).abs() <= 1e-12 * w.abs(), "{what}: loss {g} vs {w}");
}

#[test]
fn three_parts_merge_to_the_whole_evaluation_and_bad_parts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 37 images: the three parts are 12, 12 and 13 rows, and batches of 5 end short.
    let data = fashion_shards(d, 37);
    let a = train(&data, &d.join("a"), "1");
    let b = train(&data, &d.join("b"), "2");
    let whole = eval_json(&["--checkpoint", s(&a), s(&data)]);
    assert_eq!(whole["count"], 37);
    // The loss, a sum over every image, is what tells a wrong merge (a row counted twice or
    // left out) from the right one; the rates and counts must match exactly.
    assert!(whole["loss"].as_f64().unwrap() > 0.0, "{whole}");

    // `extra` before the data; each part's file under `tag`.
    let parts = |tag: &str, extra: &[&str]| -> Vec<PathBuf> {
        (0..3)
            .map(|i| {
                let p = d.join(format!("{tag}-{i}.json"));
                let shard = format!("{i}/3");
                let mut args = vec!["--shard", &shard, "--out", s(&p)];
                args.extend_from_slice(extra);
                args.push(s(&data));
                let part = eval_json(&args);
                let n = part["count"].as_u64().unwrap();
                assert_eq!(n, if i == 2 { 13 } else { 12 }, "part {i}: {part}");
                p
            })
            .collect()
    };
    let merge = |files: &[&Path]| {
        let mut args = vec!["eval", "--json", "--merge"];
        args.extend(files.iter().map(|p| s(p)));
        alexnet(&args)
    };
    let merged_of = |files: &[PathBuf]| {
        // The parts in another order than their numbers: the merge takes them by number.
        let order: Vec<&Path> = [2, 0, 1].iter().map(|&i| files[i].as_path()).collect();
        let (ok, out, err) = merge(&order);
        assert!(ok, "merge: {err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };

    let one = parts("one", &["--checkpoint", s(&a)]);
    let merged = merged_of(&one);
    assert_same_report(&merged, &whole, "one network");
    assert_eq!(merged["members"][0]["checkpoint"], s(&a));

    // An ensemble of two, ten views each: every member's score and the ensemble's.
    let ens_args = ["--checkpoint", s(&a), "--checkpoint", s(&b), "--ten-crop"];
    let mut want_args = ens_args.to_vec();
    want_args.push(s(&data));
    let want = eval_json(&want_args);
    assert_ne!(
        want["loss"], whole["loss"],
        "the ensemble must score otherwise"
    );
    let ten = parts("ten", &ens_args);
    let got = merged_of(&ten);
    assert_same_report(&got, &want, "ensemble, ten views");
    for m in 0..2 {
        assert_same_report(&got["members"][m], &want["members"][m], "member");
    }

    // --out of the merge: the report, written whole; the text line is eval's.
    let report = d.join("report.json");
    let (ok, out, err) = alexnet(&[
        "eval",
        "--merge",
        s(&one[0]),
        s(&one[1]),
        s(&one[2]),
        "--out",
        s(&report),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("37 images"), "{out}");
    let written: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_same_report(&written, &whole, "--out");

    // Refusals: each names what is wrong and writes nothing.
    let refused = |files: &[&Path], words: &[&str]| {
        let out = d.join("refused.json");
        let mut args = vec!["eval", "--merge"];
        args.extend(files.iter().map(|p| s(p)));
        args.extend(["--out", s(&out)]);
        let (ok, _, err) = alexnet(&args);
        assert!(!ok, "{files:?} merged");
        for w in words {
            assert!(err.contains(w), "{files:?}: {w:?} not in {err}");
        }
        assert!(!out.exists(), "a refused merge wrote its --out");
    };
    refused(&[&one[0], &one[2]], &["1/3", "missing"]);
    refused(&[&one[0], &one[1], &one[1], &one[2]], &["1/3 given twice"]);
    refused(
        &[&one[0], &ten[1], &one[2]],
        &["one-0.json", "ten-1.json", "different evaluations"],
    );
    // The same views and data, another checkpoint: told apart by content.
    let other = parts("other", &["--checkpoint", s(&b)]);
    refused(&[&one[0], &other[1], &one[2]], &["other checkpoints"]);
    // Parts of a 2-way split do not complete a 3-way one.
    let half = d.join("half.json");
    eval_json(&[
        "--shard",
        "1/2",
        "--out",
        s(&half),
        "--checkpoint",
        s(&a),
        s(&data),
    ]);
    refused(
        &[&one[0], &half, &one[2]],
        &["1/2", "different evaluations"],
    );
    // A file that is not a part.
    refused(
        &[&one[0], &report, &one[2]],
        &["report.json", "not an `eval --shard` part"],
    );
    // --shard needs --out; a part number beyond N is refused by the parser.
    let (ok, _, err) = alexnet(&["eval", "--shard", "0/3", "--checkpoint", s(&a), s(&data)]);
    assert!(!ok && err.contains("--out"), "{err}");
    let (ok, _, err) = alexnet(&[
        "eval",
        "--shard",
        "3/3",
        "--out",
        "x.json",
        "--checkpoint",
        s(&a),
        s(&data),
    ]);
    assert!(!ok && err.contains("3/3"), "{err}");
}
