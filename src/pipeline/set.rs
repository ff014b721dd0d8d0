//! `alexnet run FILE --set KEY=VALUE`: changes to a pipeline file's values before it is
//! read, so one file serves a miniature test run or another machine's paths without a copy.
//!
//! KEY is `work_dir`, or `STAGE.PATH`: STAGE a stage's number (from 1) or a kind (every
//! stage of that kind), PATH the dotted key inside the stage (`config.model.input_size`;
//! missing tables are created). VALUE is read as a TOML value (`76`, `[12, 32]`, `true`,
//! `"text"`), and anything that is not one is taken as a string, so paths need no quotes.

/// Applies every `KEY=VALUE` to the parsed file, in order.
pub fn apply(doc: &mut toml::Table, sets: &[String]) -> Result<(), String> {
    for set in sets {
        apply_one(doc, set).map_err(|e| format!("--set {set}: {e}"))?;
    }
    Ok(())
}

fn apply_one(doc: &mut toml::Table, set: &str) -> Result<(), String> {
    let (key, value) = set
        .split_once('=')
        .ok_or("expected KEY=VALUE, e.g. train.config.epochs=1")?;
    let value = parse_value(value.trim());
    let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` has an empty part"));
    }
    if path == ["work_dir"] {
        doc.insert("work_dir".into(), value);
        return Ok(());
    }
    let (selector, inner) = path.split_first().expect("split yields at least one part");
    if inner.is_empty() {
        return Err(format!(
            "`{key}` names no key inside the stage; write STAGE.KEY, e.g. {selector}.out=DIR"
        ));
    }
    let stages = match doc.get_mut("stage") {
        Some(toml::Value::Array(a)) => a,
        _ => return Err("the file has no [[stage]] tables".into()),
    };
    let count = stages.len();
    let kinds: Vec<String> = stages
        .iter()
        .map(|s| {
            s.get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let chosen: Vec<usize> = match selector.parse::<usize>() {
        Ok(n) if (1..=count).contains(&n) => vec![n - 1],
        Ok(n) => return Err(format!("there is no stage {n}; the file has {count}")),
        Err(_) => (0..count).filter(|&i| kinds[i] == *selector).collect(),
    };
    if chosen.is_empty() {
        let mut known: Vec<&str> = kinds.iter().map(String::as_str).collect();
        known.dedup();
        return Err(format!(
            "`{selector}` is not work_dir, a stage number (1 to {count}) or a kind in this file ({})",
            known.join(", ")
        ));
    }
    for i in chosen {
        let table = stages[i]
            .as_table_mut()
            .ok_or_else(|| format!("stage {} is not a table", i + 1))?;
        set_in(table, inner, value.clone()).map_err(|e| format!("stage {}: {e}", i + 1))?;
    }
    Ok(())
}

/// Sets `path` inside `table`, creating the tables on the way.
fn set_in(table: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("checked non-empty");
    let mut t = table;
    for p in parents {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
work_dir = "w"
[[stage]]
kind = "ingest"
raw = "a"
out = "b"
[[stage]]
kind = "ingest"
raw = "c"
out = "d"
[[stage]]
kind = "train"
data = "b"
"#;

    fn doc() -> toml::Table {
        toml::from_str(FILE).unwrap()
    }

    fn stage(d: &toml::Table, i: usize) -> &toml::Table {
        d["stage"].as_array().unwrap()[i].as_table().unwrap()
    }

    #[test]
    fn sets_by_number_by_kind_and_at_the_top() {
        let mut d = doc();
        let sets = [
            "work_dir=/tmp/x",
            "2.raw=/data/val",
            "ingest.size=76",
            "train.config.model.widths=[12, 32, 48, 48, 32, 64, 64]",
            "train.config.model.input_size=67",
        ]
        .map(String::from);
        apply(&mut d, &sets).unwrap();
        assert_eq!(d["work_dir"].as_str(), Some("/tmp/x"));
        assert_eq!(stage(&d, 0)["raw"].as_str(), Some("a"));
        assert_eq!(stage(&d, 1)["raw"].as_str(), Some("/data/val"));
        assert_eq!(stage(&d, 0)["size"].as_integer(), Some(76));
        assert_eq!(stage(&d, 1)["size"].as_integer(), Some(76));
        let model = stage(&d, 2)["config"]["model"].as_table().unwrap();
        assert_eq!(model["input_size"].as_integer(), Some(67));
        assert_eq!(model["widths"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn bad_keys_say_what_is_allowed() {
        for (set, want) in [
            ("size", "expected KEY=VALUE"),
            ("7.size=1", "no stage 7; the file has 3"),
            (
                "eval.batch=1",
                "not work_dir, a stage number (1 to 3) or a kind in this file (ingest, train)",
            ),
            ("train=1", "names no key inside the stage"),
            ("ingest.raw.x=1", "`raw` is not a table"),
            ("1..x=1", "empty part"),
        ] {
            let e = apply(&mut doc(), &[set.to_string()]).unwrap_err();
            assert!(
                e.contains(want) && e.starts_with(&format!("--set {set}")),
                "{set}: {e}"
            );
        }
    }
}
