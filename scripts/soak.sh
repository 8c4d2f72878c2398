#!/usr/bin/env bash
# Fault soak: seed jobs keep running exactly while consumers are SIGKILLed and restarted and
# their broker connections are closed from the RabbitMQ side.
#
#   scripts/soak.sh            SEEDQ_SOAK_ROUNDS rounds (default 5) of the long version
#   scripts/soak.sh --short    one quick round (CI)
#
# Each round: a clean reference run in one namespace, then the same job in a second namespace
# with 2 consumers under faults (a kill + restart and a broker-side connection close every few
# seconds). The round passes when both jobs complete with no dead letters and their survivors
# are byte-identical, and `status` shows every chunk done exactly once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${SEEDQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
PRODUCER="$BIN/seedq-producer"
CONSUMER="$BIN/seedq-consumer"
MGMT="${SEEDQ_MGMT_URL:-http://127.0.0.1:15672}"

SHORT=0
[ "${1:-}" = "--short" ] && SHORT=1
if [ "$SHORT" = 1 ]; then
  ROUNDS=1; BITS=21; CHUNK=8192; FAULT_EVERY=1
else
  ROUNDS="${SEEDQ_SOAK_ROUNDS:-5}"; BITS=23; CHUNK=16384; FAULT_EVERY=3
fi
[ -x "$PRODUCER" ] && [ -x "$CONSUMER" ] || cargo build --release -p seedq-producer -p seedq-consumer
"$ROOT/scripts/services.sh"

WORK="$(mktemp -d -t seedq-soak.XXXXXX)"
PIDS=()
NAMESPACES=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  for ns in "${NAMESPACES[@]}"; do SEEDQ_NAMESPACE="$ns" "$PRODUCER" teardown --yes >/dev/null 2>&1 || true; done
  if [ $rc -eq 0 ]; then rm -rf "$WORK"; else echo "soak: logs kept in $WORK" >&2; fi
  exit $rc
}
trap cleanup EXIT INT TERM

log() { echo "soak: $*" >&2; }

LAST_PID=""
start_consumer() { # namespace node slots; sets LAST_PID (a child of this shell, so `wait` works)
  SEEDQ_NAMESPACE="$1" "$CONSUMER" --config config/local.toml --node "$2" --backend cpu --slots "$3" --cpu-threads 1 \
    >>"$WORK/$2.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

forget_pid() { # pid: drop it from PIDS once reaped
  local kept=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

stop_all() { # TERM (drain), wait, forget: no stale pid is ever signalled later
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

close_node_connection() { # node
  local name
  name="$(curl -fsS -u guest:guest "$MGMT/api/connections" | python3 -c '
import json, sys
want = "seedq-consumer@" + sys.argv[1]
for c in json.load(sys.stdin):
    if c.get("user_provided_name") == want or c.get("client_properties", {}).get("connection_name") == want:
        print(c["name"]); break
' "$1")" || return 0
  [ -n "$name" ] || return 0
  local enc
  enc="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$name")"
  curl -fsS -u guest:guest -X DELETE "$MGMT/api/connections/$enc" >/dev/null && log "closed $1's connection from the broker"
}

run_job() { # namespace -> job id on stdout
  SEEDQ_NAMESPACE="$1" "$PRODUCER" --config config/local.toml sieve --prng xorshift32 --draws "$WORK/draws.json" \
    --skip-min 0 --skip-max 150 --threshold 0.5 --seed-start 0 --seed-end "2^$BITS" --chunk-size "$CHUNK" --job-id soak
}

for round in $(seq 1 "$ROUNDS"); do
  PLANT=$(( (RANDOM * 32768 + RANDOM) % (1 << BITS) ))
  "$PRODUCER" gen-draws --prng xorshift32 --seed "$PLANT" --count 8 --skip 1 --out "$WORK/draws.json"
  CLEAN="seedq-soak-clean-$$-$round"; FAULTY="seedq-soak-faulty-$$-$round"
  NAMESPACES+=("$CLEAN" "$FAULTY")

  log "round $round: clean reference run (planted seed $PLANT)"
  start_consumer "$CLEAN" "soak-clean-$$" 1
  run_job "$CLEAN" >/dev/null
  SEEDQ_NAMESPACE="$CLEAN" "$PRODUCER" wait soak --timeout 600
  SEEDQ_NAMESPACE="$CLEAN" "$PRODUCER" results soak --format csv >"$WORK/clean-$round.csv"
  grep -q "^$PLANT," "$WORK/clean-$round.csv" || { log "planted seed missing from the clean run"; exit 1; }

  log "round $round: the same job under faults"
  A="soak-a-$$-$round"; B="soak-b-$$-$round"
  start_consumer "$FAULTY" "$A" 1; PA=$LAST_PID
  start_consumer "$FAULTY" "$B" 2
  run_job "$FAULTY" >/dev/null
  faults=0
  while ! SEEDQ_NAMESPACE="$FAULTY" "$PRODUCER" status soak --json | python3 -c '
import json, sys; s = json.load(sys.stdin); sys.exit(0 if s.get("finished") else 1)'; do
    sleep "$FAULT_EVERY"
    case $((faults % 2)) in
      0) log "SIGKILL $A (pid $PA), restart"; kill -KILL "$PA" 2>/dev/null || true; wait "$PA" 2>/dev/null || true
         forget_pid "$PA"
         start_consumer "$FAULTY" "$A" 1; PA=$LAST_PID ;;
      1) close_node_connection "$B" || true ;;
    esac
    faults=$((faults + 1))
  done
  SEEDQ_NAMESPACE="$FAULTY" "$PRODUCER" wait soak --timeout 600
  SEEDQ_NAMESPACE="$FAULTY" "$PRODUCER" results soak --format csv >"$WORK/faulty-$round.csv"
  if ! cmp -s "$WORK/clean-$round.csv" "$WORK/faulty-$round.csv"; then
    log "round $round: results differ after $faults faults"; diff "$WORK/clean-$round.csv" "$WORK/faulty-$round.csv" | head >&2
    exit 1
  fi
  log "round $round: identical results after $faults faults ($(($(wc -l <"$WORK/faulty-$round.csv") - 1)) survivors)"
  stop_all
  for ns in "$CLEAN" "$FAULTY"; do SEEDQ_NAMESPACE="$ns" "$PRODUCER" teardown --yes >/dev/null 2>&1 || true; done
done
log "all $ROUNDS round(s) passed"
