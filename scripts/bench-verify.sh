#!/usr/bin/env bash
# The cost of verification by redundancy (docs/verification.md), measured in one run here:
# the pipeline-shaped s128 search (lcg32, 512 draws, skips 0..20, threshold 0.01) over
# SEEDQ_BENCH_VERIFY_SEEDS seeds (default 2^22) in SEEDQ_BENCH_VERIFY_CHUNKS chunks (default
# 400), through two consumers on two node names (one slot, one CPU thread each, so every check
# has another node to run on), with `--verify-fraction 0` and with F (default 0.01; a list in
# SEEDQ_BENCH_VERIFY_FRACTIONS, e.g. "0.01 0.1"), alternating SEEDQ_BENCH_REPS times (5).
# Reports the median wall time of `sieve --wait` per fraction and its ratio to F = 0, and the
# checks each run settled. The ideal ratio is 1 + F (each verified chunk runs twice).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

cargo build --release -p seedq-producer -p seedq-consumer >&2
BIN="${SEEDQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
PRODUCER="$BIN/seedq-producer"; CONSUMER="$BIN/seedq-consumer"
"$ROOT/scripts/services.sh"

SEEDS="${SEEDQ_BENCH_VERIFY_SEEDS:-4194304}"
CHUNKS="${SEEDQ_BENCH_VERIFY_CHUNKS:-400}"
FRACTIONS="${SEEDQ_BENCH_VERIFY_FRACTIONS:-0.01}"
REPS="${SEEDQ_BENCH_REPS:-5}"
NS="seedq-bench-verify-$$"
WORK="$(mktemp -d -t seedq-bench-verify.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  SEEDQ_NAMESPACE="$NS" "$PRODUCER" teardown --yes >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
now() { date +%s.%N; }

for node in a b; do
  SEEDQ_NAMESPACE="$NS" "$CONSUMER" --config config/local.toml --node "bench-verify-$$-$node" --backend cpu \
    --slots 1 --cpu-threads 1 --no-scripts >"$WORK/consumer-$node.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 150); do
  if curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F/$NS.seeds" 2>/dev/null | grep -q '"consumers":2'; then break; fi
  sleep 0.2
done

"$PRODUCER" gen-draws --prng lcg32 --seed $((SEEDS / 3)) --count 512 --skip 10 --out "$WORK/s128.json"
CHUNK=$(( (SEEDS + CHUNKS - 1) / CHUNKS ))
RESULTS=()
for rep in $(seq 1 "$REPS"); do
  for f in 0 $FRACTIONS; do
    id="verify-$rep-$f"
    echo "bench-verify: rep $rep/$REPS, --verify-fraction $f" >&2
    t0=$(now)
    SEEDQ_NAMESPACE="$NS" "$PRODUCER" --config config/local.toml sieve --prng lcg32 --draws "$WORK/s128.json" \
      --skip-min 0 --skip-max 20 --threshold 0.01 --seed-start 0 --seed-end "$SEEDS" --chunk-size "$CHUNK" \
      --verify-fraction "$f" --job-id "$id" --wait >/dev/null 2>"$WORK/sieve.err" \
      || { cat "$WORK/sieve.err" >&2; exit 1; }
    t1=$(now)
    SEEDQ_NAMESPACE="$NS" "$PRODUCER" status "$id" --json >"$WORK/$id.json"
    RESULTS+=("$f:$(python3 -c "print($t1 - $t0)"):$WORK/$id.json")
  done
done

python3 - "${RESULTS[@]}" <<'PY'
import json, statistics, sys
by = {}
for item in sys.argv[1:]:
    f, secs, path = item.split(":", 2)
    v = json.load(open(path))["verification"]
    by.setdefault(f, []).append((float(secs), v))
base = statistics.median(s for s, _ in by["0"])
print(f"{'fraction':>9} {'median s':>9} {'ratio':>6}  checks per run (verified/mismatches/unverified)")
for f, runs in by.items():
    med = statistics.median(s for s, _ in runs)
    checks = " ".join(f"{v['verified']}/{v['mismatches']}/{v['unverified']}" for _, v in runs)
    print(f"{f:>9} {med:9.2f} {med / base:6.3f}  {checks}")
PY
