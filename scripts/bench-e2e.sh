#!/usr/bin/env bash
# End-to-end performance figures, measured in one run on this machine:
#
#   1. Distribution overhead: the s128 workload (lcg32, 512 draws, skips 0..20, threshold 0.01)
#      over 2^20 seeds through producer -> RabbitMQ -> one consumer (1 slot, 2 CPU threads) ->
#      Redis, against `seedq-consumer bench --workload s128 --seeds 1048576 --threads 2` on the
#      same range and the same draws (same survivors), alternating SEEDQ_BENCH_REPS times (5);
#      the end-to-end side is one `seedq-producer sieve --wait`, as a pipeline step calls it, with
#      the consumer already running (consumers are long-lived). Bar: ratio of medians <= 1.10.
#      SEEDQ_BENCH_S128_SEEDS changes the range (default 1048576): at 2^20 the kernels finish in
#      a fraction of a second, so fixed costs (process start, connections) dominate the ratio.
#   2. Dispatch rate: 1-seed chunks end to end through one consumer. Bar: >= 2,000 chunks/s.
#   3. The family matrix: `seedq-consumer bench --workload matrix --threads 2` (the pipeline's
#      shape, k = 512, skips 0..=20, threshold 0.01, on every family, the single-threaded
#      reference beside each row in the same process). SEEDQ_BENCH_MATRIX=0 skips it;
#      SEEDQ_BENCH_MATRIX_SECS sets each measurement's length (default 2).
#
# Prints a small report (and JSON lines with --json). Env: SEEDQ_BENCH_DISPATCH_CHUNKS (20000),
# SEEDQ_BENCH_DISPATCH_SLOTS (consumer slots for the dispatch run, 4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JSON=0; [ "${1:-}" = "--json" ] && JSON=1

cargo build --release -p seedq-producer -p seedq-consumer >&2
BIN="${SEEDQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
PRODUCER="$BIN/seedq-producer"; CONSUMER="$BIN/seedq-consumer"
"$ROOT/scripts/services.sh"

WORK="$(mktemp -d -t seedq-bench.XXXXXX)"
PID=""
NS_LIST=()
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  for ns in "${NS_LIST[@]}"; do SEEDQ_NAMESPACE="$ns" "$PRODUCER" teardown --yes >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
now() { date +%s.%N; }

start_consumer() { # namespace slots threads [extra consumer flags]
  local ns=$1 slots=$2 threads=$3; shift 3
  SEEDQ_NAMESPACE="$ns" "$CONSUMER" --config config/local.toml --node "bench-$$" --backend cpu --slots "$slots" --cpu-threads "$threads" "$@" \
    >"$WORK/consumer-$ns.log" 2>&1 &
  PID=$!
  # Ready when its queue has a consumer.
  for _ in $(seq 1 100); do
    if curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F/$ns.seeds" 2>/dev/null | grep -q '"consumers":[1-9]'; then return 0; fi
    sleep 0.2
  done
  echo "consumer did not start; log:" >&2; cat "$WORK/consumer-$ns.log" >&2; exit 1
}
stop_consumer() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; }

# --- 1. distribution overhead ----------------------------------------------------------------
# The same draws as the bench's s128 workload (planted seed 699050 at skip 10), so both sides do
# the same work; the survivor counts are compared below. Runs alternate (bench, end to end, ...)
# so that drift on this shared machine hits both sides alike; the ratio is of the medians.
S128_SEEDS="${SEEDQ_BENCH_S128_SEEDS:-1048576}"
REPS="${SEEDQ_BENCH_REPS:-5}"
PLANTED=$(( S128_SEEDS * 2 / 3 ))
"$PRODUCER" gen-draws --prng lcg32 --seed "$PLANTED" --count 512 --skip 10 --out "$WORK/s128.json"
NS="seedq-bench-$$-s128"; NS_LIST+=("$NS")
start_consumer "$NS" 1 2
BENCH_TIMES=(); E2E_TIMES=()
for rep in $(seq 1 "$REPS"); do
  echo "bench: rep $rep/$REPS: seedq-consumer bench --workload s128 --seeds $S128_SEEDS --threads 2" >&2
  t0=$(now)
  "$CONSUMER" bench --workload s128 --seeds "$S128_SEEDS" --threads 2 --json >"$WORK/bench.json" 2>"$WORK/bench.err"
  t1=$(now)
  BENCH_TIMES+=("$(python3 -c "print(f'{$t1 - $t0:.3f}')")")
  # A pipeline step's call: one process that enqueues, waits with events and exits.
  echo "bench: rep $rep/$REPS: the same range end to end (seedq-producer sieve --wait)" >&2
  t0=$(now)
  SEEDQ_NAMESPACE="$NS" "$PRODUCER" --config config/local.toml sieve --prng lcg32 --draws "$WORK/s128.json" \
    --skip-min 0 --skip-max 20 --threshold 0.01 --seed-start 0 --seed-end "$S128_SEEDS" --job-id "s128-$rep" --wait >/dev/null 2>"$WORK/e2e.err"
  t1=$(now)
  E2E_TIMES+=("$(python3 -c "print(f'{$t1 - $t0:.3f}')")")
done
SEEDQ_NAMESPACE="$NS" "$PRODUCER" --json status "s128-$REPS" >"$WORK/s128-status.json"
python3 - "$WORK/bench.json" "$WORK/s128-status.json" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1])); status = json.load(open(sys.argv[2]))
b = bench.get("survivors"); e = status.get("survivors")
if b != e:
    sys.exit(f"bench-e2e: the two sides did different work: bench {b} survivors, end to end {e}")
PY
CHUNKS=$(python3 -c "import json; print(json.load(open('$WORK/s128-status.json'))['chunks_total'])")
stop_consumer

# --- 2. dispatch rate ------------------------------------------------------------------------
# Twice: with the default `--prefetch auto` (bursts of up to 16 while chunks take under 2 ms) and
# with every slot held to prefetch 1.
N="${SEEDQ_BENCH_DISPATCH_CHUNKS:-20000}"
SLOTS="${SEEDQ_BENCH_DISPATCH_SLOTS:-4}"
"$PRODUCER" gen-draws --prng xorshift32 --seed 77 --count 1 --out "$WORK/tiny.json"
DISPATCH=()
for prefetch in auto 1; do
  NS="seedq-bench-$$-dispatch-$prefetch"; NS_LIST+=("$NS")
  start_consumer "$NS" "$SLOTS" 1 --prefetch "$prefetch"
  echo "bench: $N one-seed chunks through one consumer ($SLOTS slots, prefetch $prefetch)" >&2
  t0=$(now)
  SEEDQ_NAMESPACE="$NS" "$PRODUCER" --config config/local.toml sieve --prng xorshift32 --draws "$WORK/tiny.json" \
    --skip-min 0 --skip-max 0 --threshold 1 --seed-start 1 --seed-end $((N + 1)) --chunk-size 1 --job-id dispatch >/dev/null
  t_pub=$(now)
  SEEDQ_NAMESPACE="$NS" "$PRODUCER" wait dispatch --timeout 3600 2>/dev/null
  t1=$(now)
  stop_consumer
  DISPATCH+=("$prefetch:$t0:$t_pub:$t1")
done

python3 - "${BENCH_TIMES[*]}" "${E2E_TIMES[*]}" "$N" "${DISPATCH[*]}" "$JSON" "$CHUNKS" <<'PY'
import json, statistics, sys
benches = [float(x) for x in sys.argv[1].split()]; e2es = [float(x) for x in sys.argv[2].split()]
n, as_json, chunks = int(sys.argv[3]), sys.argv[5] == "1", int(sys.argv[6])
runs = {}
for item in sys.argv[4].split():
    prefetch, t0, tpub, t1 = item.split(":")
    runs[prefetch] = (float(t0), float(tpub), float(t1))
bench, e2e = statistics.median(benches), statistics.median(e2es)
ratio = e2e / bench
t0, tpub, t1 = runs["auto"]
rate = n / (t1 - t0)
# The enqueue command creates the job and publishes its first window (the consumers publish
# the rest as slots settle), so this is its latency, not a publish rate of every chunk.
enqueue_secs = tpub - t0
p1 = runs["1"]
rate_p1 = n / (p1[2] - p1[0])
report = {
    "s128_bench_secs": round(bench, 3), "s128_end_to_end_secs": round(e2e, 3), "overhead_ratio": round(ratio, 3),
    "s128_bench_runs": benches, "s128_end_to_end_runs": e2es, "s128_chunks": chunks,
    "overhead_bar": 1.10, "overhead_ok": ratio <= 1.10,
    "dispatch_chunks": n, "dispatch_secs": round(t1 - t0, 3), "dispatch_chunks_per_sec": round(rate),
    "enqueue_secs": round(enqueue_secs, 3), "dispatch_bar": 2000, "dispatch_ok": rate >= 2000,
    "dispatch_prefetch1_chunks_per_sec": round(rate_p1), "dispatch_prefetch1_ok": rate_p1 >= 2000,
}
if as_json:
    print(json.dumps(report))
else:
    print(f"distribution overhead: median of {len(benches)} alternating runs: bench {bench:.3f} s, end to end {e2e:.3f} s ({chunks} chunks), ratio {ratio:.3f} (bar <= 1.10: {'OK' if ratio <= 1.10 else 'MISSED'})")
    print(f"  bench runs {benches}; end-to-end runs {e2es}")
    print(f"dispatch: {n} one-seed chunks in {t1 - t0:.2f} s = {rate:,.0f} chunks/s with --prefetch auto (the enqueue command took {enqueue_secs:.2f} s; bar >= 2,000: {'OK' if rate >= 2000 else 'MISSED'})")
    print(f"          {rate_p1:,.0f} chunks/s with --prefetch 1 ({'OK' if rate_p1 >= 2000 else 'MISSED'})")
PY

if [ "${SEEDQ_BENCH_MATRIX:-1}" != 0 ]; then
  echo "bench: family matrix at the pipeline's shape (CPU, 2 threads, beside the reference)" >&2
  if [ "$JSON" = 1 ]; then
    "$CONSUMER" bench --workload matrix --threads 2 --seconds "${SEEDQ_BENCH_MATRIX_SECS:-2}" --json
  else
    "$CONSUMER" bench --workload matrix --threads 2 --seconds "${SEEDQ_BENCH_MATRIX_SECS:-2}"
  fi
fi
