#!/usr/bin/env bash
# Survivor storage figures on a private redis-server (nothing shared is touched):
#   * Redis memory per survivor and the slowest Redis command (SLOWLOG) for jobs whose chunks
#     keep ~1M and ~5M survivors each;
#   * `results --format jsonl` streaming rate and the producer's peak RSS for a 50M-survivor job.
# The loosest sieve there is keeps half of all seeds: lcg32, one draw mod 2, skip 0, threshold 1.
#
#   scripts/bench-survivors.sh [--total-seeds N]     (default 100M seeds: 50M survivors)
#
# Needs the release binaries (cargo build --release --bins), RabbitMQ on 127.0.0.1:5672 and
# redis-server on PATH. Prints one line per figure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOTAL=100000000
[ "${1:-}" = "--total-seeds" ] && TOTAL="$2"
PRODUCER="$ROOT/target/release/seedq-producer"
CONSUMER="$ROOT/target/release/seedq-consumer"
[ -x "$PRODUCER" ] && [ -x "$CONSUMER" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

WORK="$(mktemp -d)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --slowlog-log-slower-than 0 --slowlog-max-len 100000 >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
CONSUMER_PID=""
cleanup() {
  [ -n "$CONSUMER_PID" ] && kill "$CONSUMER_PID" 2>/dev/null || true
  kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SEEDQ_REDIS_URL="redis://127.0.0.1:$PORT/" SEEDQ_NAMESPACE="bench-surv-$$"
echo '[1]' >"$WORK/draws.json"
export RUST_LOG=warn
"$CONSUMER" --config config/local.toml --node "bench-$$" --backend cpu --slots 1 --cpu-threads 2 \
  >"$WORK/consumer.log" 2>&1 &
CONSUMER_PID=$!

# Runs one loose job of $1 seeds in chunks of $2; prints its id.
run_job() {
  "$PRODUCER" --config config/local.toml sieve --prng lcg32 --draws "$WORK/draws.json" --window 1 \
    --modulus 2 --skip-min 0 --skip-max 0 --threshold 1 --seed-start 0 --seed-end "$1" \
    --chunk-size "$2" --max-survivors "$1" --job-id "$3" >/dev/null
  "$PRODUCER" --config config/local.toml wait "$3" --timeout 3600 2>/dev/null
}
used() { redis-cli -p "$PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
slowest_us() {
  # Longest command since the last reset, excluding this script's own reads.
  redis-cli -p "$PORT" --json slowlog get 100000 | python3 -c '
import json, sys
entries = json.load(sys.stdin)
print(max((e[2] for e in entries), default=0))'

}

for per_chunk in 2000000 10000000; do
  redis-cli -p "$PORT" slowlog reset >/dev/null
  before=$(used)
  job="bench-chunk-$per_chunk"
  run_job "$per_chunk" "$per_chunk" "$job"
  after=$(used)
  survivors=$("$PRODUCER" --config config/local.toml status "$job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["survivors"])')
  slow=$(slowest_us)
  python3 - "$survivors" "$before" "$after" "$slow" <<'EOF'
import sys
n, before, after, slow = (int(x) for x in sys.argv[1:])
print(f"chunk with {n} survivors: {(after-before)/n:.2f} bytes of Redis memory per survivor, "
      f"slowest Redis command {slow/1000:.1f} ms")
EOF
done

job="bench-total-$TOTAL"
run_job "$TOTAL" 5000000 "$job"
start=$(date +%s.%N)
/usr/bin/time -v "$PRODUCER" --config config/local.toml results "$job" --format jsonl \
  2>"$WORK/time.txt" | wc -l >"$WORK/lines.txt"
end=$(date +%s.%N)
rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
python3 - "$(cat "$WORK/lines.txt")" "$start" "$end" "$rss_kb" <<'EOF'
import sys
lines, start, end, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"results --format jsonl: {lines} rows in {end-start:.1f} s ({lines/(end-start)/1e6:.2f} M rows/s), "
      f"producer peak RSS {rss/1024:.0f} MB")
EOF
