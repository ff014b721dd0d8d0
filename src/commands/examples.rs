//! Examples shown at the end of every command's `--help`, kept apart from the flag
//! definitions so the two read well on their own.
use clap::Command;

/// (subcommand, examples) pairs; the top-level command's examples are under "".
const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "alexnet ingest ~/ILSVRC/train shards/train/
  alexnet train shards/train/ --val shards/val/ --out runs/paper
  alexnet eval --checkpoint runs/paper/best.safetensors shards/val/ --json
  alexnet predict --checkpoint runs/paper/best.safetensors --classes LOC_synset_mapping.txt cat.jpg
  alexnet completions bash > ~/.local/share/bash-completion/completions/alexnet",
    ),
    (
        "devices",
        "alexnet devices
  alexnet devices --devices 0,1          # would the paper's two columns fit on adapters 0 and 1?
  alexnet devices --devices auto         # what a run picks here: the first GPU, else the CPU engine
  alexnet devices --json | jq '.adapters[].name'
  alexnet devices --selftest             # every kernel variant against the CPU reference
  alexnet devices --tune --batch 128     # time the tile choices per product, print the table",
    ),
    (
        "train",
        "alexnet train shards/train/ --val shards/val/ --out runs/paper
  alexnet train shards/train/ --out runs/paper --resume
  alexnet train shards/train/ --out runs/two --devices 0,1
  alexnet train shards/ --out runs/cpu --devices cpu      # the native CPU engine (lavapipe: --devices lavapipe)
  alexnet train shards/ --out runs/r2 --devices cpu,cpu --columns 1   # two data-parallel replicas
  alexnet train shards/ --out runs/h2 --devices cpu,cpu --parallel hybrid   # one weird trick: conv data parallel, fc model parallel
  alexnet train shards/ --out runs/r4 --devices 0,1,2,3              # four GPU replicas (0,1 --columns 1: two)
  mpirun -np 2 alexnet train shards/ --out runs/mpi --devices cpu   # built with --features mpi
  mpirun -np 2 alexnet train shards/ --out runs/h2mpi --devices cpu --parallel hybrid   # one hybrid worker per rank
  mpirun -np 8 --npernode 4 alexnet train shards/ --out runs/m8 --devices local   # each rank its node's GPU
  alexnet train shards/ --out runs/small --input-size 67 --widths 12,32,48,48,32,512,512 --init he
  alexnet train shards/ --out runs/cos --schedule cosine --min-lr 1e-4 --momentum 0.9 --weight-decay 5e-4
  alexnet train shards/ --out runs/x --steps 100 --json | jq .last_loss
  alexnet train shards/flowers/ --init-from tv.safetensors --freeze conv5 --out runs/head   # fc6–fc8 only",
    ),
    (
        "eval",
        "alexnet eval --checkpoint runs/paper/best.safetensors shards/val/
  alexnet eval --checkpoint runs/paper/best.safetensors shards/val/ --ten-crop --json
  alexnet eval --checkpoint W shards/val/ --devices 1, --out eval.json   # on adapter 1, result to a file
  alexnet eval --checkpoint runs/paper/best.safetensors shards/val/ --devices cpu   # the native CPU engine
  alexnet eval --checkpoint runs/s1/best.safetensors --checkpoint runs/s2/best.safetensors shards/val/ --ten-crop   # an ensemble
  alexnet eval --checkpoint W shards/val/ --sheet predictions.png --sheet-count 8 --classes LOC_synset_mapping.txt   # Figure 4, left
  alexnet eval --checkpoint W shards/val/ --shard 0/8 --out part-0.json   # part 0 of 8 (a job array; docs/job-arrays.md)
  alexnet eval --merge part-*.json --json   # the whole set's score from every part",
    ),
    (
        "forward",
        "alexnet forward --checkpoint runs/paper/best.safetensors --input images.safetensors --out acts.safetensors
  alexnet forward --checkpoint tv-alexnet.safetensors --input tv.safetensors --out acts.safetensors --normalize imagenet

The input `images` [N,3,H,W] f32 is what the network takes: x = (pixel − mean image) · input_scale,
pixel values 0..255 (RGB), the checkpoint's mean image centre-cropped to H×W, input_scale from the
checkpoint's config (1 for the paper's model, 1/255 for `alexnet import torchvision`'s);
python/alexnet's model.preprocess makes it. With --normalize imagenet, `images` are torchvision's
(pixel/255 − [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225] per channel instead, and are turned
into x first. docs/outputs.md has the details.",
    ),
    (
        "ingest",
        "alexnet ingest ~/ILSVRC/train shards/train/
  alexnet ingest ~/ILSVRC/val shards/val/ --labels LOC_val_solution.csv --classes shards/train/
  alexnet ingest photos/ photos.parquet --size 128 --encoding jpeg   # Hugging Face datasets reads it as Image + ClassLabel
  alexnet ingest ~/ILSVRC/train shards/train/ --shard 0/4            # machine 0 of 4
  alexnet ingest photos/ shards/photos/ --resize bilinear            # torchvision's Resize filter

Raw shards store each image as S·S·3 bytes, RGB, row-major H,W,C (S = --size, in the footer's
`size`); the footer also holds the mean image and RGB statistics (see `alexnet inspect --json`).",
    ),
    (
        "inspect",
        "alexnet inspect shards/train/
  alexnet inspect shards/train/ --json | jq .rgb_mean

Every shard's footer holds exact sums: the mean image (S×S×3 per-pixel sums of the file's
images, footer key `alexnet.mean_image`, base64 little-endian u64 in H,W,C order) and the RGB
sums behind rgb_mean, rgb_cov and the PCA. Sets of shards merge exactly; training subtracts the
merged mean image and stores it in the checkpoint. docs/formats.md has every field.",
    ),
    (
        "report",
        "alexnet report runs/paper                     # writes runs/paper/report.png
  alexnet report runs/paper --log-loss --out loss.png",
    ),
    (
        "import-idx",
        "alexnet import-idx train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz raw/fashion --classes fashion-mnist",
    ),
    (
        "import",
        "python -c 'import torchvision, safetensors.torch as s; s.save_file(torchvision.models.alexnet(weights=\"IMAGENET1K_V1\").state_dict(), \"tv.safetensors\")'
  alexnet import torchvision tv.safetensors tv-alexnet.safetensors
  alexnet predict --checkpoint tv-alexnet.safetensors --classes LOC_synset_mapping.txt photos/",
    ),
    (
        "export-features",
        "alexnet export-features --checkpoint runs/paper/best.safetensors shards/val/ fc7.parquet
  alexnet export-features --checkpoint W shards/val/ conv5.parquet --layer conv5
  alexnet export-features --checkpoint W shards/val/ fc7/ --shard 3/8   # part 3 of 8: fc7/fc7-00003-of-00008.parquet",
    ),
    (
        "export",
        "alexnet export onnx --checkpoint runs/paper/best.safetensors alexnet.onnx
  alexnet export weights --checkpoint runs/paper/best.safetensors alexnet-weights.safetensors

The ONNX graph's input `pixels` is [N,3,I,I] float32: crops of stored images (RGB, pixel values
0..255, C,H,W; I = the model's input size). The graph subtracts the centre crop of the mean image
and multiplies by the model's input_scale, so the centre crop of a stored image gives the logits
`alexnet eval` scores. docs/outputs.md has the details.",
    ),
    (
        "neighbors",
        "alexnet neighbors fc7.parquet --query n01440764/n01440764_10026.JPEG -k 6 --sheet sheet.png
  alexnet neighbors fc7.parquet --query 17 --json | jq '.neighbors[].source'
  alexnet neighbors fc7.parquet --query-image cat.jpg --checkpoint runs/paper/best.safetensors -k 6",
    ),
    (
        "filters",
        "alexnet filters --checkpoint runs/paper/best.safetensors conv1.png --scale 6",
    ),
    (
        "run",
        "alexnet run pipelines/quickstart.toml
  alexnet run pipelines/quickstart.toml --force
  alexnet run pipelines/imagenet.toml --set 1.raw=/data/train --set 2.raw=/data/val --set train.config.epochs=1
  alexnet run pipelines/ablations/fashion-mnist.toml --list            # stage names, one per line
  alexnet run pipelines/ablations/fashion-mnist.toml --only baseline-s1   # one stage (a job array's task)

A stage is a command: `kind = \"eval\"` and eval's arguments by their long names (ten_crop = true).
A stage whose arguments changed is run again; one that would continue its old output with
other settings (ingest, train) stops and says what changed. docs/pipelines.md has the format.",
    ),
    (
        "predict",
        "alexnet predict --checkpoint runs/paper/best.safetensors cat.jpg dog.png
  alexnet predict --checkpoint W --classes LOC_synset_mapping.txt photos/ --json
  alexnet predict --checkpoint W --classes shards/train/ photos/
  alexnet predict --checkpoint A --checkpoint B --classes LOC_synset_mapping.txt photos/ --sheet top5.png   # an ensemble, drawn",
    ),
    (
        "completions",
        "alexnet completions bash > ~/.local/share/bash-completion/completions/alexnet
  alexnet completions zsh > ~/.zfunc/_alexnet
  alexnet completions fish > ~/.config/fish/completions/alexnet.fish",
    ),
    (
        "man",
        "alexnet man man/              # man/alexnet.1 and one page per command
  man -l man/alexnet-train.1",
    ),
];

/// The examples of subcommand `name` ("" for the top level), if it has any.
pub fn examples(name: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
}

/// `cmd` with "Examples:" added to its help and every subcommand's.
pub fn with_examples(mut cmd: Command) -> Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        if let Some(e) = examples(&name) {
            cmd = cmd.mut_subcommand(name, |s| s.after_help(format!("Examples:\n  {e}")));
        }
    }
    match examples("") {
        Some(e) => cmd.after_help(format!("Examples:\n  {e}")),
        None => cmd,
    }
}
