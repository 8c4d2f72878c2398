#!/usr/bin/env bash
# The GPU check, run on an NVIDIA machine with CUDA but no Rust, from the folder that
# scripts/gpu-build.sh prepared (binaries built elsewhere):
#
#   ./gpu-check.sh [DEVICE]           (default device 0; SEEDQ_BENCH_SCALE=N multiplies seeds)
#
# 1. parity: the CUDA backend against the CPU reference on the fixed parity suite (every family,
#    mode and direction, lists, long windows, large skips, overflowing survivor buffers);
# 2. NVRTC on this machine's CUDA: PTX per family, then `ptxas -v` registers/spills when ptxas exists;
# 3. `seedq-consumer bench --backend cuda` on s128, xs32-exact, mt-exact, java-exact (the bench
#    fails when the planted seed is not found), printed as a table against the targets, with the
#    paper prediction of the family's kernel beside it when gpu-estimate.json lies next to this
#    script (`scripts/gpu-estimate.sh --json out/gpu-check/gpu-estimate.json`; the prediction is
#    for the pipeline shape, which the bench workloads only approach).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEVICE="${1:-0}"
SCALE="${SEEDQ_BENCH_SCALE:-1}"
WORK="$(mktemp -d)"
status=0
export RUST_BACKTRACE=0

# Prefer the machine's own NVRTC (matches its driver); fall back to a wheel next to us.
for dir in "${CUDA_HOME:-/usr/local/cuda}/lib64" "${CUDA_HOME:-/usr/local/cuda}/lib" /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu "$HERE/nvrtc"; do
  if ls "$dir"/libnvrtc.so* >/dev/null 2>&1; then
    export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
PTXAS="$(command -v ptxas || ls "${CUDA_HOME:-/usr/local/cuda}/bin/ptxas" 2>/dev/null || true)"

echo "== device"
nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi unavailable"
CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i "$DEVICE" 2>/dev/null | tr -d ' .' | head -1)"
CC="${CC:-90}"

echo "== 1. parity vs reference (device $DEVICE)"
if SEEDQ_CUDA_DEVICE="$DEVICE" SEEDQ_PARITY_SCALE="${SEEDQ_PARITY_SCALE:-64}" "$HERE/gpu_cuda_parity" --nocapture --test-threads=1 >"$WORK/parity.log" 2>&1; then
  grep -E "parity cases passed|skipped|test result" "$WORK/parity.log"
  grep -q "skipped:" "$WORK/parity.log" && status=1
else
  tail -40 "$WORK/parity.log"; status=1
fi

echo "== 2. NVRTC (compute_$CC) and ptxas resource usage"
if SEEDQ_NVRTC_ARCHS="$CC" SEEDQ_PTX_DIR="$WORK/ptx" "$HERE/gpu_nvrtc" --nocapture >"$WORK/nvrtc.log" 2>&1; then
  grep -E "^nvrtc|skipped" "$WORK/nvrtc.log"
else
  tail -20 "$WORK/nvrtc.log"; status=1
fi
if [ -n "$PTXAS" ] && ls "$WORK"/ptx/*.ptx >/dev/null 2>&1; then
  for ptx in "$WORK"/ptx/*.ptx; do
    "$PTXAS" -v --gpu-name "sm_$CC" -o /dev/null "$ptx" 2>&1 \
      | awk -v f="$(basename "$ptx" .ptx)" '/Compiling entry function/ {gsub(/[\047]/,"",$7); k=$7} /spill stores/ {sp=$5" spill stores, "$9" spill loads"} /Used [0-9]+ registers/ {print f": " k ": " $0 "; " sp}'
  done
else
  echo "ptxas not found: no register/spill report (PTX local memory check above)"
fi

echo "== 3. bench (seedq-consumer bench --backend cuda --device $DEVICE)"
printf '%-11s %14s %9s %18s %18s %22s %s\n' workload seeds secs seeds/s target "predicted sm_$CC" verdict
run_bench() { # workload seeds target family
  local json
  if json="$("$HERE/seedq-consumer" bench --backend cuda --device "$DEVICE" --workload "$1" --seeds "$2" --json 2>"$WORK/bench-$1.err")"; then
    python3 - "$1" "$3" "$json" "$4" "$HERE/gpu-estimate.json" "sm_$CC" <<'PY' || echo "$json"
import json, os, sys
name, target, raw, family, est, arch = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
r = json.loads(raw.strip().splitlines()[-1])
rate = r["seeds_per_sec"]
shown = f"{target:,.0f}" if target else "-"
predicted = "-"
if os.path.exists(est):
    row = json.load(open(est)).get(f"{family}/{arch}", {})
    predicted = f'{float(row["rate"]):,.0f}' if "rate" in row else "-"
print(f'{name:<11} {r["seeds"]:>14} {r["secs"]:>9.3f} {rate:>18,.0f} {shown:>18} {predicted:>22} {"ok" if rate >= target else "BELOW TARGET"}')
PY
  else
    echo "$1: FAILED"; tail -5 "$WORK/bench-$1.err"; status=1
  fi
}
run_bench s128 $((268435456 * SCALE)) 50000000 lcg32
run_bench xs32-exact 4294967296 200000000000 xorshift32
run_bench mt-exact 4294967296 5000000000 mt19937
run_bench java-exact $((4294967296 * SCALE)) 0 java_lcg
rm -rf "$WORK"
exit $status
