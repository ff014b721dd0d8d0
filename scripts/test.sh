#!/usr/bin/env bash
# Installs what the tests need (the software Vulkan driver, Fashion-MNIST, a Python virtual
# environment in .venv with the Python package's dependencies) and runs them: cargo test, then
# the Python package's pytest suite against the binary cargo built.
#
# ALEXNET_PY_TORCH=0 leaves torch out of .venv (it is about 3 GB with the CUDA libraries PyPI's
# wheel pulls in); the tests of the PyTorch module and Dataset are then skipped, with the
# reason printed. The committed PyTorch fixture keeps `cargo test` checking the network
# against PyTorch either way.
#
# The tests build with the `mpi` feature (data-parallel training across processes,
# docs/distributed.md; Open MPI and libclang from Debian), so one build covers both: the binary
# joins an MPI job only when a launcher started it, and the replica tests then also run
# `mpirun -np 2`. ALEXNET_TEST_MPI=0 builds and tests without it. mpirun refuses to run as root
# unless told: CI containers are root.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${ALEXNET_TEST_MPI:-1}" != 0 ]; then
  for p in openmpi-bin libopenmpi-dev libclang-dev pkg-config; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
features=()
[ "${ALEXNET_TEST_MPI:-1}" = 0 ] || features=(--features mpi)
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  cargo test --all-targets "${features[@]}" "$@"

venv=.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
reqs=(-r python/requirements-test.txt)
[ "${ALEXNET_PY_TORCH:-1}" = 0 ] || reqs+=(-r python/requirements-torch.txt)
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e python
ALEXNET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/alexnet" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
  "$venv/bin/python" -m pytest -q -rs python/tests
