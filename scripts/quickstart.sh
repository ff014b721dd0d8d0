#!/usr/bin/env bash
# Fresh Debian machine to a trained model: installs Fashion-MNIST, builds, and runs every stage
# of pipelines/quickstart.toml. It trains on a GPU when the machine has one, else on the native
# CPU engine, which needs no Vulkan driver (lavapipe is for the WGSL tests: scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
cargo build --release
exec target/release/alexnet run pipelines/quickstart.toml "$@"
