#!/usr/bin/env bash
# The GPU benchmark table, for a machine lent through the device tool (or any machine whose GPU
# wgpu can see). Two halves, because that machine has no Rust toolchain:
#
#   scripts/gpu_bench.sh prepare     here: release build, the alexnet binary and the step,
#                                    engine and loader benches stripped and packed into
#                                    .gpu/bins.tar.gz, the Vulkan loader's .deb files into .gl/
#   scripts/gpu_bench.sh run [--quick] [--sweep] [--tile BMxBNxBK/TMxTN]
#                                    there (carry .gpu and .gl): unpack, find the NVIDIA driver,
#                                    then, each part on its own so one failure does not stop
#                                    the rest: the adapters; the kernel self-test (every tile
#                                    variant against the reference); the tuner's table for the
#                                    paper network at batch 128 (tuned afresh into a cache the
#                                    later parts read); the step bench (per-kernel GPU time
#                                    table first, then images/s on one device and two columns,
#                                    then the training loop with its loader); the same step
#                                    under --precision mixed (the tuner's table with the f16
#                                    cooperative-matrix candidates first, if the adapter has
#                                    them, then the kernel table and images/s); PyTorch's paper
#                                    AlexNet on the same card (fp32 with TF32 off, TF32, bf16);
#                                    the ratio; the kernel bench (GEMM 4096³, fc6, convolutions;
#                                    --sweep adds every tile configuration; --tile runs the
#                                    step bench's products on one); the loader bench.
#
# Output also goes to $OUT/gpu_bench.txt when OUT is set (the device tool sends it back).
# Scratch data goes to a temporary folder of the machine it runs on. Each part has a time
# limit, and the limits add up to 8 minutes (the device tool lends 15, start-up included):
# 15 adapters, 50 self-test, 100 tuner, 70 step, 100 mixed (tuning included), 35 probe tile,
# 65 PyTorch, 5 ratio, 25 kernels, 15 loader.
set -eu
cd "$(dirname "$0")/.."

prepare() {
  set -o pipefail
  cargo build --release
  # Compile errors must show: build the benches once plainly, then ask for their paths.
  cargo bench --no-run
  local json
  json=$(cargo bench --no-run --message-format=json)
  rm -rf .gpu && mkdir -p .gpu/bin
  strip -o .gpu/bin/alexnet target/release/alexnet
  for b in step engine loader; do
    local exe
    exe=$(jq -r "select(.reason == \"compiler-artifact\" and .target.name == \"$b\" and .executable != null) | .executable" <<<"$json" | tail -1)
    [ -n "$exe" ] || { echo "no bench binary '$b' found" >&2; exit 1; }
    strip -o ".gpu/bin/$b" "$exe"
  done
  cp benches/torch_alexnet.py .gpu/bin/
  tar -C .gpu -czf .gpu/bins.tar.gz bin && rm -rf .gpu/bin
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
  grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >>.git/info/exclude
  if ! ls .gl/*.deb >/dev/null 2>&1; then
    # The device machine's image has the NVIDIA driver but no Vulkan loader.
    mkdir -p .gl /tmp/amd64/partial
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  du -sh .gpu .gl
  echo "now: device run with carry [.gpu, .gl] and command 'bash scripts/gpu_bench.sh run'"
}

# One part of the run: a heading, the command under a time limit, and a note when it fails.
part() {
  local title=$1 limit=$2
  shift 2
  echo
  echo "## $title"
  echo
  local rc=0
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo
    echo "($title: exit $rc$([ "$rc" -eq 124 ] && echo ", stopped after $limit"))"
  fi
  return 0
}

run() {
  local quick=() sweep=() tile=()
  while [ $# -gt 0 ]; do
    case $1 in
      --quick) quick=(--quick) ;;
      --sweep) sweep=(--sweep) ;;
      --tile) tile=(--tile "$2"); shift ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
  done
  # grep -c, not grep -q: with -q, ldconfig can die of SIGPIPE and the test misreads.
  if [ "$(ldconfig -p | grep -c libvulkan || true)" -eq 0 ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
  local bin
  bin=$(mktemp -d)
  tar -C "$bin" -xzf .gpu/bins.tar.gz
  export ALEXNET_BENCH_DIR
  ALEXNET_BENCH_DIR=$(mktemp -d)
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$ALEXNET_BENCH_DIR}
  local log=${OUT:-$bin}/gpu_bench.txt
  local steplog=$ALEXNET_BENCH_DIR/step.txt torchlog=$ALEXNET_BENCH_DIR/torch.txt
  local mixedlog=$ALEXNET_BENCH_DIR/mixed.txt
  # A fresh tuning cache: the tuner part fills it, the step bench reads it.
  export XDG_CACHE_HOME=$ALEXNET_BENCH_DIR/cache
  # The quick form (a lavapipe dry run) tunes a small network at a small batch.
  local net=(--batch 128)
  [ ${#quick[@]} -gt 0 ] && net=(--small 4 --batch 16)
  {
    echo "# gpu_bench $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
    part "adapters" 15 "$bin/bin/alexnet" devices
    part "kernel self-test" 50 "$bin/bin/alexnet" devices --selftest
    part "tuner" 100 "$bin/bin/alexnet" devices --tune full "${net[@]}"
    part "training step (ours)" 70 bash -c "'$bin/bin/step' --bench ${quick[*]} ${tile[*]} | tee '$steplog'"
    # Its own tuning table (a mixed device's cache is apart from the fp32 one): the
    # cooperative candidates are self-tested at the f16 tolerance and timed beside the f32
    # tiles, and the step bench then reads that table.
    part "training step, --precision mixed" 100 bash -c "'$bin/bin/alexnet' devices --tune cached --precision mixed ${net[*]} && '$bin/bin/step' --bench ${quick[*]} --precision mixed | tee '$mixedlog'"
    part "training step, probe tile forced" 35 "$bin/bin/step" --bench "${quick[@]}" --tile 64x64x8/4x4
    part "PyTorch on the same card" 65 bash -c "python3 '$bin/bin/torch_alexnet.py' ${quick[*]:+--model quickstart --batch 128} | tee '$torchlog'"
    part "ratio" 5 python3 - "$steplog" "$torchlog" "$mixedlog" <<'EOF'
import json, os, re, sys
def result(path):
    rate = None
    if os.path.exists(path):
        for line in open(path):
            m = re.match(r"RESULT images_per_s=([0-9.]+)", line)
            if m:
                rate = float(m.group(1))
    return rate
ours, mixed = result(sys.argv[1]), result(sys.argv[3])
torch = None
for line in open(sys.argv[2]):
    if line.startswith("{"):
        torch = json.loads(line)
if ours is None or torch is None:
    sys.exit("missing a number: ours %s, PyTorch %s" % (ours, torch))
rows = [("ours, fp32", ours)] + ([("ours, mixed", mixed)] if mixed else [])
print("| | images/s | " + " | ".join(f"{n} ÷ this" for n, _ in rows) + " |")
print("|---|---|" + "---|" * len(rows))
def line(name, rate):
    print(f"| {name} | {rate:.0f} | " + " | ".join(f"{r / rate:.2f}×" for _, r in rows) + " |")
for name, rate in rows:
    line(name, rate)
for p in ("fp32", "tf32", "bf16"):
    if p in torch:
        line(f"PyTorch {torch['torch']} {p}", torch[p])
EOF
    part "kernels" 25 "$bin/bin/engine" --bench "${quick[@]}" "${sweep[@]}"
    part "input pipeline" 15 "$bin/bin/loader" --bench "${quick[@]}"
  } 2>&1 | tee "$log"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n 2,20p "$0"; exit 2 ;;
esac
