#!/usr/bin/env bash
# The README's first command: the main job end to end on this machine, nothing started by hand.
#
#   1. builds the release binaries;
#   2. brings up RabbitMQ and Redis (scripts/services.sh: running ones, else local servers, else
#      docker compose);
#   3. starts a CPU consumer in the background, in a namespace of its own;
#   4. plants a seed in generated mt19937 draws;
#   5. sieves 2^24 seeds (the planted one among them) with a progress bar;
#   6. prints the survivors and checks the planted seed is among them;
#   7. stops the consumer and removes the namespace's queues and keys.
#
# Env: SEEDQ_DEMO_SEED (planted seed, default 11000007), SEEDQ_DEMO_BITS (range 2^bits, default
# 24), SEEDQ_DEMO_THREADS (consumer CPU threads, default: all cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PLANTED="${SEEDQ_DEMO_SEED:-11000007}"
BITS="${SEEDQ_DEMO_BITS:-24}"
THREADS="${SEEDQ_DEMO_THREADS:-$(nproc 2>/dev/null || echo 2)}"
WINDOW=12
SKIP=2

say() { printf '\n==> %s\n' "$*" >&2; }

say "building release binaries"
cargo build --release -p seedq-producer -p seedq-consumer
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PRODUCER="$BIN/seedq-producer"
CONSUMER="$BIN/seedq-consumer"

say "bringing up RabbitMQ and Redis"
"$ROOT/scripts/services.sh"

export SEEDQ_NAMESPACE="seedq-demo-$$-$(date +%s)"
WORK="$(mktemp -d -t seedq-demo.XXXXXX)"
CONSUMER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$CONSUMER_PID" ] && kill -0 "$CONSUMER_PID" 2>/dev/null; then
    say "stopping the consumer (pid $CONSUMER_PID)"
    kill -TERM "$CONSUMER_PID" 2>/dev/null || true
    wait "$CONSUMER_PID" 2>/dev/null || true
  fi
  "$PRODUCER" teardown --yes >/dev/null 2>&1 || echo "demo: could not remove namespace $SEEDQ_NAMESPACE" >&2
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

say "starting a consumer (namespace $SEEDQ_NAMESPACE, $THREADS CPU threads)"
"$CONSUMER" --config config/local.toml --node demo-node --backend cpu --slots 1 --cpu-threads "$THREADS" \
  >"$WORK/consumer.log" 2>&1 &
CONSUMER_PID=$!

say "planting seed $PLANTED in $WINDOW mt19937 draws (skip $SKIP, mod 1000)"
"$PRODUCER" gen-draws --prng mt19937 --seed "$PLANTED" --count "$WINDOW" --skip "$SKIP" --format daily3 \
  --out "$WORK/draws.json"

say "sieving seeds [0, 2^$BITS) of mt19937 against them"
JOB="$("$PRODUCER" --config config/local.toml sieve --prng mt19937 --draws "$WORK/draws.json" \
  --window "$WINDOW" --skip-min 0 --skip-max 3 --threshold 1 \
  --seed-start 0 --seed-end "2^$BITS" --job-id "demo-$$" --wait)"

say "survivors of job $JOB"
"$PRODUCER" results "$JOB" --format csv | tee "$WORK/survivors.csv"

if grep -q "^$PLANTED," "$WORK/survivors.csv"; then
  say "OK: the planted seed $PLANTED is among the survivors"
else
  say "FAILED: the planted seed $PLANTED is not among the survivors"
  echo "--- consumer log (tail) ---" >&2
  tail -n 40 "$WORK/consumer.log" >&2 || true
  exit 1
fi
