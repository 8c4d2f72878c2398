#!/usr/bin/env bash
# Paper estimate of the GPU sieve kernels at the pipeline shape (mt19937-style job: window 512,
# skips 0..=20, threshold 0.01, offset 0), from the compiled code, no GPU needed:
#
#   scripts/gpu-estimate.sh [--json FILE] [--verbose]
#
# * the kernel source and NVRTC options come from the Rust code (example `gpu_source`);
# * NVIDIA: NVRTC (wheel nvidia-cuda-nvrtc-cu12) -> PTX, ptxas 12.9 (nvidia-cuda-nvcc-cu12)
#   -> cubin for sm_90 and sm_86, nvdisasm (nvidia-cuda-nvdisasm) -> SASS with line info;
# * AMD: hipcc (Debian apt, as scripts/ci-gpu-toolchain.sh installs it) -> gfx1030 ISA and
#   its resource report.
# The wheels go to .gpu-tools/ (gitignored). A tool that cannot be had turns its columns into
# "skipped: <reason>". The model (issue rate, shared/global pipe, latency) and its limits are
# described in scripts/gpu_estimate.py and kernels/gpu/README.md.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.gpu-tools"
SITE="$TOOLS/site"
log() { echo "[gpu-estimate] $*" >&2; }

mkdir -p "$TOOLS"
find_tool() { find "$SITE" -path "*/$1" -type f 2>/dev/null | head -1; }
need_wheels=()
[ -n "$(find_tool cuda_nvrtc/lib/libnvrtc.so.12)" ] || need_wheels+=("nvidia-cuda-nvrtc-cu12==12.9.*")
[ -n "$(find_tool bin/ptxas)" ] || need_wheels+=("nvidia-cuda-nvcc-cu12==12.9.*")
[ -n "$(find_tool bin/nvdisasm)" ] || need_wheels+=("nvidia-cuda-nvdisasm")
if [ "${#need_wheels[@]}" -gt 0 ]; then
  log "installing ${need_wheels[*]} into .gpu-tools/site"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$SITE" "${need_wheels[@]}" >&2 \
    || log "pip could not install every wheel"
fi
NVRTC="$(find_tool cuda_nvrtc/lib/libnvrtc.so.12)"
PTXAS="$(find_tool bin/ptxas)"
NVDISASM="$(find_tool bin/nvdisasm)"
for t in "$PTXAS" "$NVDISASM"; do [ -n "$t" ] && chmod +x "$t"; done
skip_nv=""
[ -n "$NVRTC" ] || skip_nv="NVRTC wheel unavailable"
[ -n "$PTXAS" ] || skip_nv="${skip_nv:+$skip_nv; }ptxas wheel unavailable"
[ -n "$NVDISASM" ] || skip_nv="${skip_nv:+$skip_nv; }nvdisasm wheel unavailable"

if ! command -v hipcc >/dev/null 2>&1; then
  "$ROOT/scripts/ci-gpu-toolchain.sh" --install-only >&2 || true
fi
skip_amd=""
command -v hipcc >/dev/null 2>&1 || skip_amd="hipcc not installed (apt needs root)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
log "writing the kernel source and NVRTC options (cargo run --example gpu_source)"
if ! cargo run -q -p seedq-kernels --example gpu_source -- "$WORK/src" 90 86 >&2; then
  echo "skipped: the gpu_source example did not build"; exit 1
fi
args=(--src "$WORK/src" --work "$WORK/out")
[ -n "$skip_nv" ] && args+=(--skip-nvidia "$skip_nv") || args+=(--nvrtc "$NVRTC" --ptxas "$PTXAS" --nvdisasm "$NVDISASM")
[ -n "$skip_amd" ] && args+=(--skip-amd "$skip_amd") || args+=(--hipcc hipcc)
ROCM_PATH="${ROCM_PATH:-/usr}" python3 "$ROOT/scripts/gpu_estimate.py" "${args[@]}" "$@"
