#!/usr/bin/env bash
# Prepares the folder scripts/gpu-check.sh runs from on an NVIDIA machine that has CUDA but no
# Rust toolchain: release binaries built here with the `cuda` feature, plus the check script.
#
#   scripts/gpu-build.sh [OUT_DIR]     (default out/gpu-check; out/ is gitignored)
#
# Contents: seedq-consumer (bench --backend cuda), gpu_cuda_parity (the GPU-vs-reference test
# binary), gpu_nvrtc (NVRTC compile check; writes PTX for ptxas), gpu-check.sh. Binaries are
# stripped; they need glibc >= this machine's and libstdc++ on the GPU machine, and load
# libcuda/libnvrtc at run time (nothing CUDA is linked).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-out/gpu-check}"
mkdir -p "$OUT"

cargo build --release -p seedq-consumer --features cuda
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/seedq-consumer" "$OUT/seedq-consumer"

# The test executables' paths come from cargo's JSON messages.
cargo test --release -p seedq-kernels --features cuda --no-run --test gpu_cuda_parity --test gpu_nvrtc \
  --message-format=json 2>/dev/null \
  | python3 -c '
import json, shutil, sys
out = sys.argv[1]
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] in ("gpu_cuda_parity", "gpu_nvrtc"):
        shutil.copy(msg["executable"], f"{out}/{msg['"'"'target'"'"']['"'"'name'"'"']}")
        print("copied", msg["target"]["name"], file=sys.stderr)
' "$OUT"

cp scripts/gpu-check.sh "$OUT/gpu-check.sh"
for bin in seedq-consumer gpu_cuda_parity gpu_nvrtc; do
  [ -x "$OUT/$bin" ] || { echo "missing $OUT/$bin" >&2; exit 1; }
  strip "$OUT/$bin" 2>/dev/null || true
done
chmod +x "$OUT/gpu-check.sh"
# The paper predictions gpu-check.sh prints beside the measured rates (best effort: without the
# tools gpu-check.sh prints "-" in that column).
scripts/gpu-estimate.sh --json "$OUT/gpu-estimate.json" >&2 || echo "no gpu-estimate.json: scripts/gpu-estimate.sh failed" >&2
du -sh "$OUT"/* >&2
echo "$OUT"
