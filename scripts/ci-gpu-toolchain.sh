#!/usr/bin/env bash
# GPU toolchain for CI machines without a GPU, then the GPU-less kernel checks.
#
#   scripts/ci-gpu-toolchain.sh                 install what is missing, then run the checks
#   scripts/ci-gpu-toolchain.sh --install-only  only install (idempotent, quick when present)
#
# Installs (each only when missing):
#   * NVRTC: the PyPI wheel nvidia-cuda-nvrtc-cu12 into .nvrtc/site (gitignored); the loader
#     path is written to .nvrtc/env, which callers source (`. .nvrtc/env`).
#   * hipcc and libamdhip64-dev from Debian (needs root and apt; ROCM_PATH=/usr).
# Checks (the CUDA and ROCm features; the shim parity test runs in the plain workspace tests,
# which list the CUDA/HIP/NVRTC tests as ignored, with the reason, since they lack the features):
#   (a) NVRTC compiles sieve.cu to PTX for every family, no local memory   (tests/gpu_nvrtc.rs)
#   (b) the `rocm` feature builds: hipcc compiles sieve.cu for gfx1030, resource report, no
#       scratch; the CUDA/HIP backends fail cleanly with no device          (tests/gpu_*_parity.rs)
# A check whose tool could not be installed prints "skipped: ..." with the reason.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "[gpu-toolchain] $*" >&2; }

NVRTC_SITE="$ROOT/.nvrtc/site"
NVRTC_LIB="$NVRTC_SITE/nvidia/cuda_nvrtc/lib"
if [ ! -e "$NVRTC_LIB/libnvrtc.so.12" ]; then
  log "installing NVRTC (pip wheel nvidia-cuda-nvrtc-cu12) into .nvrtc/site"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$NVRTC_SITE" nvidia-cuda-nvrtc-cu12 \
    || log "could not install the NVRTC wheel: the NVRTC compile check will be skipped"
fi
mkdir -p "$ROOT/.nvrtc"
if [ -e "$NVRTC_LIB/libnvrtc.so.12" ]; then
  printf 'export LD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n' "$NVRTC_LIB" > "$ROOT/.nvrtc/env"
else
  : > "$ROOT/.nvrtc/env"
fi

have_hip() { command -v hipcc >/dev/null 2>&1 && [ -e /usr/include/hip/hip_runtime_api.h ]; }
if ! have_hip; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing hipcc and libamdhip64-dev (apt)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hipcc libamdhip64-dev >/dev/null; } \
      || log "apt could not install hipcc/libamdhip64-dev: the ROCm checks will be skipped"
  else
    log "hipcc/libamdhip64-dev missing and no root apt: the ROCm checks will be skipped"
  fi
fi

[ "${1:-}" = "--install-only" ] && exit 0

PROFILE_ARGS=(--release)
# shellcheck disable=SC1091
. "$ROOT/.nvrtc/env"
log "(a) NVRTC: CUDA kernels to PTX; CUDA backend without a driver"
cargo test -p seedq-kernels "${PROFILE_ARGS[@]}" --features cuda --test gpu_nvrtc --test gpu_cuda_parity -- --nocapture
if have_hip; then
  log "(b) ROCm: cargo build --features rocm (hipcc compiles the HIP kernels); HIP backend without a device"
  ROCM_PATH="${ROCM_PATH:-/usr}" cargo test -p seedq-kernels "${PROFILE_ARGS[@]}" --features rocm --test gpu_hip_parity -- --nocapture
else
  echo "skipped: ROCm build check (hipcc or libamdhip64-dev not installed)"
fi
