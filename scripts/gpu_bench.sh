#!/usr/bin/env bash
# The GPU benchmark table, for a machine lent through the device tool (or any machine whose GPU
# wgpu can see). Two halves, because that machine has no Rust toolchain:
#
#   scripts/gpu_bench.sh prepare     here: release build, the alexnet binary and the step and
#                                    engine benches stripped and packed into .gpu/bins.tar.gz,
#                                    the Vulkan loader's .deb files into .gl/
#   scripts/gpu_bench.sh run [--quick]
#                                    there (carry .gpu and .gl): unpack, find the NVIDIA driver,
#                                    print the adapters, the step table (compute only, two
#                                    columns, and the training loop with its loader on shards
#                                    ingested from synthetic 500×375 JPEGs), the kernel table
#
# Output also goes to $OUT/gpu_bench.txt when OUT is set (the device tool sends it back).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
  cargo build --release
  local json
  json=$(cargo bench --no-run --message-format=json 2>/dev/null)
  rm -rf .gpu && mkdir -p .gpu/bin
  strip -o .gpu/bin/alexnet target/release/alexnet
  for b in step engine; do
    local exe
    exe=$(jq -r "select(.reason == \"compiler-artifact\" and .target.name == \"$b\" and .executable != null) | .executable" <<<"$json" | tail -1)
    [ -n "$exe" ] || { echo "no bench binary '$b' found" >&2; exit 1; }
    strip -o ".gpu/bin/$b" "$exe"
  done
  tar -C .gpu -czf .gpu/bins.tar.gz bin && rm -rf .gpu/bin
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
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

run() {
  local quick=()
  [ "${1:-}" = "--quick" ] && quick=(--quick)
  if ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
  local bin
  bin=$(mktemp -d)
  tar -C "$bin" -xzf .gpu/bins.tar.gz
  local log=${OUT:-$bin}/gpu_bench.txt
  {
    echo "# gpu_bench $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
    "$bin/bin/alexnet" devices
    echo
    "$bin/bin/step" --bench "${quick[@]}"
    echo
    "$bin/bin/engine" --bench "${quick[@]}"
  } 2>&1 | tee "$log"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
