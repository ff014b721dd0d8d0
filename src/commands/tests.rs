//! The command line and a pipeline stage mean the same: for every command, the arguments clap
//! parses from a minimal command line equal those serde reads from the matching stage table,
//! defaults included, and every key serde writes is an argument clap knows.
use super::*;
use clap::Parser;

/// (command line after the command's name, the same as a stage's TOML keys).
const MINIMAL: &[(&str, &[&str], &str)] = &[
    ("devices", &[], ""),
    ("train", &["d"], r#"data = "d""#),
    (
        "eval",
        &["--checkpoint", "c", "d"],
        r#"checkpoint = "c"
data = "d""#,
    ),
    (
        "forward",
        &["--checkpoint", "c", "--input", "i", "--out", "o"],
        r#"checkpoint = "c"
input = "i"
out = "o""#,
    ),
    ("ingest", &["r", "o"], "raw = \"r\"\nout = \"o\""),
    ("inspect", &["d"], r#"data = ["d"]"#),
    ("report", &["r"], r#"run = "r""#),
    (
        "import-idx",
        &["i", "l", "o"],
        "images = \"i\"\nlabels = \"l\"\nout = \"o\"",
    ),
    (
        "import",
        &["torchvision", "i", "o"],
        "from = \"torchvision\"\ninput = \"i\"\nout = \"o\"",
    ),
    (
        "export-features",
        &["--checkpoint", "c", "d", "o"],
        "checkpoint = \"c\"\ndata = \"d\"\nout = \"o\"",
    ),
    (
        "export",
        &["onnx", "--checkpoint", "c", "o"],
        "format = \"onnx\"\ncheckpoint = \"c\"\nout = \"o\"",
    ),
    (
        "neighbors",
        &["f", "--query", "q"],
        "features = \"f\"\nquery = \"q\"",
    ),
    (
        "filters",
        &["--checkpoint", "c", "o"],
        "checkpoint = \"c\"\nout = \"o\"",
    ),
    ("run", &["p"], r#"pipeline = "p""#),
    (
        "predict",
        &["--checkpoint", "c", "x"],
        "checkpoint = \"c\"\ninputs = \"x\"",
    ),
    ("completions", &["bash"], r#"shell = "bash""#),
    ("man", &["m"], r#"dir = "m""#),
];

fn from_cli(args: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("alexnet").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
}

fn from_toml(name: &str, text: &str) -> Command {
    let args: toml::Table = toml::from_str(text).unwrap();
    let mut outer = toml::Table::new();
    outer.insert(name.into(), toml::Value::Table(args));
    toml::Value::Table(outer)
        .try_into()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn clap_and_serde_agree_on_every_command_and_default() {
    let mut covered: Vec<String> = MINIMAL.iter().map(|(n, _, _)| n.to_string()).collect();
    covered.sort();
    let mut all = names();
    all.sort();
    assert_eq!(covered, all, "add the new command to MINIMAL");
    for (name, argv, text) in MINIMAL {
        let cli = from_cli(&[&[*name], *argv].concat());
        let stage = from_toml(name, text);
        assert_eq!(cli, stage, "{name}: the command line and the stage differ");
        assert_eq!(cli.name(), *name);
        // What a record writes is what a stage may say.
        let json = serde_json::to_value(&cli).unwrap();
        let keys = argument_keys(name);
        for k in json[name].as_object().unwrap().keys() {
            assert!(
                keys.contains(k),
                "{name}: serde writes `{k}`, clap has {keys:?}"
            );
        }
    }
}

#[test]
fn one_device_commands_take_train_s_grammar_and_the_old_index() {
    let eval =
        |extra: &[&str]| match from_cli(&[&["eval", "--checkpoint", "c", "d"], extra].concat()) {
            Command::Eval(a) => a.device.device(),
            _ => unreachable!(),
        };
    use crate::device::Device;
    assert_eq!(eval(&[]), Ok(Device::Auto));
    assert_eq!(eval(&["--devices", "0"]), Ok(Device::Adapter(0)));
    assert_eq!(eval(&["--devices", "1,"]), Ok(Device::Adapter(1)));
    assert_eq!(eval(&["--devices", "cpu"]), Ok(Device::Cpu));
    assert_eq!(
        eval(&["--device", "1"]),
        Ok(Device::Adapter(1)),
        "the old spelling"
    );
    assert_eq!(eval(&["--device", "cpu"]), Ok(Device::Cpu));
    // A bare number is a count in the grammar, so `--devices 1` is adapter 0, as in train.
    assert_eq!(eval(&["--devices", "1"]), Ok(Device::Adapter(0)));
    for bad in ["0,1", "2"] {
        let e = eval(&["--devices", bad]).unwrap_err();
        assert!(
            e.contains("names 2 devices; this command runs on one device"),
            "{e}"
        );
    }
    let e = eval(&["--devices", "0,,1"]).unwrap_err();
    assert!(e.starts_with("--devices: devices \"0,,1\""), "{e}");
    assert!(Cli::try_parse_from([
        "alexnet",
        "eval",
        "--checkpoint",
        "c",
        "d",
        "--devices",
        "0",
        "--device",
        "1"
    ])
    .is_err());
    for cmd in [
        &["forward", "--checkpoint", "c", "--input", "i", "--out", "o"][..],
        &["predict", "--checkpoint", "c", "x"],
        &["export-features", "--checkpoint", "c", "d", "o"],
    ] {
        let c = from_cli(&[cmd, &["--devices", "1,"]].concat());
        let choice = match &c {
            Command::Forward(a) => &a.device,
            Command::Predict(a) => &a.device,
            Command::ExportFeatures(a) => &a.device,
            _ => unreachable!(),
        };
        assert_eq!(
            choice.device(),
            Ok(crate::device::Device::Adapter(1)),
            "{}",
            c.name()
        );
    }
}

#[test]
fn a_stage_spells_lists_and_inline_configs_as_the_file_does() {
    let t = from_toml(
        "train",
        "data = \"a\"\nval = [\"b\", \"c\"]\nepochs = 3\n[config]\nbatch = 16\n[config.model]\nclasses = 10\n",
    );
    let Command::Train(t) = t else { unreachable!() };
    assert_eq!(t.val.len(), 2);
    let c = t.effective_config().unwrap();
    assert_eq!(
        (c.epochs, c.batch, c.model.classes),
        (3, 16, 10),
        "flags over the table"
    );
    let bad: toml::Table = toml::from_str("data = \"a\"\n[config]\nbatsh = 1\n").unwrap();
    let mut outer = toml::Table::new();
    outer.insert("train".into(), toml::Value::Table(bad));
    let e = toml::Value::Table(outer).try_into::<Command>().unwrap_err();
    assert!(e.to_string().contains("batsh"), "{e}");
}
