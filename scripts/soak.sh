#!/usr/bin/env bash
# Fault soak: a seed job and a script batch per round, each exact while, at random moments,
# consumers are SIGKILLed and restarted, their broker connections are closed from the broker
# side, the broker restarts, and Redis runs out of memory for a while.
#
#   scripts/soak.sh            SEEDQ_SOAK_ROUNDS rounds (default 20) of the long version
#   scripts/soak.sh --short    one quick round (CI)
#
# Everything runs against a private RabbitMQ node (scripts/rabbit-node.sh, its own ports and
# data) and a private redis-server, so restarts and `maxmemory` never touch the shared services.
# Each round: a clean reference run of the seed job, then the same job and a script batch under
# faults. Node A (one seed slot, no scripts) is the one SIGKILLed; node B (seed slots and the
# script consumer) has its connection closed from the broker side; the broker restart and the
# Redis out-of-memory window hit both. A round is exact when the faulty run's survivors are
# byte-identical to the clean run's with no dead letters, and every script task ran exactly once
# and was collected. The last line sums it up: rounds exact / rounds run, script runs / tasks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${SEEDQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
PRODUCER="$BIN/seedq-producer"
CONSUMER="$BIN/seedq-consumer"

SHORT=0
[ "${1:-}" = "--short" ] && SHORT=1
if [ "$SHORT" = 1 ]; then
  ROUNDS=1; BITS=21; CHUNK=8192; TASKS=4
else
  ROUNDS="${SEEDQ_SOAK_ROUNDS:-20}"; BITS=22; CHUNK=8192; TASKS=6
fi
[ -x "$PRODUCER" ] && [ -x "$CONSUMER" ] || cargo build --release -p seedq-producer -p seedq-consumer
# The soak restarts its own broker node and fills its own Redis: it needs the local servers'
# programs (not only running services). Without them the CI round says so and passes; a long run
# fails.
missing() {
  if [ "$SHORT" = 1 ]; then echo "soak: SKIPPED: $1" >&2; exit 0; fi
  echo "soak: $1" >&2; exit 1
}
command -v redis-server >/dev/null || missing "redis-server is not installed (the soak runs a private one)"
[ -x "${SEEDQ_RABBIT_BIN:-/usr/lib/rabbitmq/bin}/rabbitmq-server" ] \
  || missing "rabbitmq-server is not installed locally (the soak runs a private node; see scripts/rabbit-node.sh)"

WORK="$(mktemp -d -t seedq-soak.XXXXXX)"
export SEEDQ_RABBIT_DIR="$WORK/rabbit" SEEDQ_RABBIT_PREFIX="soak$$"
# Ports of this run's own, five in a row: below the kernel's ephemeral range (32768 up), where
# a client connection of some other test can hold any port, and free now; a second soak on the
# machine picks others.
ports_free() { # first port: the five from it can all be bound on 127.0.0.1
  python3 -c 'import socket, sys
for p in range(int(sys.argv[1]), int(sys.argv[1]) + 5):
    s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()' "$1" 2>/dev/null
}
for try in $(seq 0 49); do
  BASE=$(( 20000 + (($$ + try * 7) % 1270) * 10 ))
  ports_free "$BASE" && break
done
export SEEDQ_RABBIT_AMQP_PORT=$BASE SEEDQ_RABBIT_MGMT_PORT=$((BASE + 1)) \
  SEEDQ_RABBIT_DIST_PORT=$((BASE + 2)) SEEDQ_RABBIT_EPMD_PORT=$((BASE + 3))
REDIS_PORT=$((BASE + 4))
PIDS=()
REDIS_PID=""
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  [ -n "$REDIS_PID" ] && { kill -KILL "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }
  "$ROOT/scripts/rabbit-node.sh" clean >/dev/null 2>&1 || true
  if [ $rc -eq 0 ]; then rm -rf "$WORK"; else echo "soak: logs kept in $WORK" >&2; fi
  exit $rc
}
trap cleanup EXIT INT TERM

log() { echo "soak: $*" >&2; }
rnd() { echo $(( RANDOM % $1 )); } # 0..N-1

log "starting a private RabbitMQ node and redis-server (ports $BASE..$((BASE + 4)))"
"$ROOT/scripts/rabbit-node.sh" start 1
AMQP_URL="$("$ROOT/scripts/rabbit-node.sh" url 1)"
MGMT="http://127.0.0.1:$SEEDQ_RABBIT_MGMT_PORT"
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$WORK/redis" --daemonize no >"$WORK/redis/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export SEEDQ_AMQP_URL="$AMQP_URL" SEEDQ_REDIS_URL="$REDIS_URL"

# The cluster model: config/local.toml with node B's script root (the e2e fixture script) and
# quick retries.
mkdir -p "$WORK/root"
cp "$ROOT/e2e/fixtures/scripts/job.py" "$WORK/root/job.py"
sed -e "s|^script_root = .*|script_root = \"$WORK/root\"|" -e 's/^max_script_jobs = .*/max_script_jobs = 2/' \
  -e 's/^initial_backoff_ms = .*/initial_backoff_ms = 200/' -e 's/^max_backoff_ms = .*/max_backoff_ms = 2000/' \
  config/local.toml >"$WORK/cluster.toml"
# Node A runs seed chunks only; node B also runs the scripts, from the soak's script root.
A="soak-a-$$"; B="soak-b-$$"
cat >>"$WORK/cluster.toml" <<EOF

[[nodes]]
name = "$B"
backend = "cpu"
gpu_type = "cpu"
gpus = 0
cpu_slots = 2
cpu_threads = 1
max_script_jobs = 2
script_root = "$WORK/root"
python_env = "python3"
EOF
CONFIG="$WORK/cluster.toml"

LAST_PID=""
start_consumer() { # namespace node slots [extra args]; sets LAST_PID
  local ns=$1 node=$2 slots=$3
  shift 3
  SEEDQ_NAMESPACE="$ns" "$CONSUMER" --config "$CONFIG" --node "$node" --backend cpu --slots "$slots" \
    --cpu-threads 1 --no-calibrate "$@" >>"$WORK/$node.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

forget_pid() {
  local kept=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

stop_all() {
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

producer() { # namespace args...
  local ns=$1
  shift
  SEEDQ_NAMESPACE="$ns" "$PRODUCER" --config "$CONFIG" "$@"
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

restart_broker() {
  log "restarting the broker"
  "$ROOT/scripts/rabbit-node.sh" stop 1
  sleep "$(rnd 3)"
  "$ROOT/scripts/rabbit-node.sh" start 1 2>/dev/null
}

redis_oom() {
  local secs=$((2 + $(rnd 4)))
  log "Redis out of memory for ${secs}s"
  redis-cli -p "$REDIS_PORT" config set maxmemory-policy noeviction >/dev/null
  redis-cli -p "$REDIS_PORT" config set maxmemory 1 >/dev/null
  sleep "$secs"
  redis-cli -p "$REDIS_PORT" config set maxmemory 0 >/dev/null
}

run_job() { # namespace
  producer "$1" sieve --prng xorshift32 --draws "$WORK/draws.json" --skip-min 0 --skip-max 150 \
    --threshold 0.5 --seed-start 0 --seed-end "2^$BITS" --chunk-size "$CHUNK" --job-id soak >/dev/null
}

finished() { # namespace job
  producer "$1" status "$2" --json 2>/dev/null | python3 -c '
import json, sys; s = json.load(sys.stdin); sys.exit(0 if s.get("finished") else 1)'
}

EXACT=0
RUNS_TOTAL=0
TASKS_TOTAL=0
for round in $(seq 1 "$ROUNDS"); do
  PLANT=$(( (RANDOM * 32768 + RANDOM) % (1 << BITS) ))
  "$PRODUCER" gen-draws --prng xorshift32 --seed "$PLANT" --count 8 --skip 1 --out "$WORK/draws.json"
  CLEAN="seedq-soak-clean-$$-$round"; FAULTY="seedq-soak-faulty-$$-$round"

  log "round $round: clean reference run (planted seed $PLANT)"
  start_consumer "$CLEAN" "soak-clean-$$" 1 --no-scripts
  run_job "$CLEAN"
  producer "$CLEAN" wait soak --timeout 900 >/dev/null
  producer "$CLEAN" results soak --format csv >"$WORK/clean-$round.csv"
  grep -q "^$PLANT," "$WORK/clean-$round.csv" || { log "planted seed missing from the clean run"; exit 1; }
  stop_all

  log "round $round: the same job and a script batch under faults"
  start_consumer "$FAULTY" "$A" 1 --no-scripts; PA=$LAST_PID
  start_consumer "$FAULTY" "$B" 2
  run_job "$FAULTY"
  TIMELINE="$WORK/timeline-$round.log"
  : >"$TIMELINE"
  python3 - "$TASKS" "$TIMELINE" >"$WORK/jobs-$round.json" <<'PY'
import json, sys
n, log = int(sys.argv[1]), sys.argv[2]
print(json.dumps([{"job_id": "t%02d" % i, "script": "job.py",
                   "args": ["sleep", "out/t%02d.json" % i, "1.5", log],
                   "expected_output": "out/t%02d.json" % i, "timeout": 120} for i in range(n)]))
PY
  BATCH="$(producer "$FAULTY" scripts --jobs-file "$WORK/jobs-$round.json" --job-id "soak-scripts")"
  # Every kind of fault once in a random order, then random ones until both jobs are done.
  mapfile -t ORDER < <(printf '%s\n' kill close broker oom | shuf)
  faults=0
  while [ $faults -lt 4 ] || ! finished "$FAULTY" soak || ! finished "$FAULTY" "$BATCH"; do
    sleep "$((1 + $(rnd 3)))"
    if [ $faults -lt 4 ]; then fault="${ORDER[$faults]}"; else fault="$(printf '%s\n' kill close broker oom | shuf -n1)"; fi
    case $fault in
      kill) log "SIGKILL $A (pid $PA), restart"; kill -KILL "$PA" 2>/dev/null || true; wait "$PA" 2>/dev/null || true
            forget_pid "$PA"; start_consumer "$FAULTY" "$A" 1 --no-scripts; PA=$LAST_PID ;;
      close) close_node_connection "$B" || true ;;
      broker) restart_broker ;;
      oom) redis_oom ;;
    esac
    faults=$((faults + 1))
    [ $faults -gt 40 ] && { log "round $round: not done after $faults faults"; break; }
  done
  producer "$FAULTY" wait soak --timeout 900 >/dev/null
  producer "$FAULTY" results soak --format csv >"$WORK/faulty-$round.csv"
  producer "$FAULTY" collect "$BATCH" --output-dir "$WORK/collected-$round" >/dev/null || true
  RUNS=$(grep -c '^start ' "$TIMELINE" || true)
  COLLECTED=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["collected"])' \
    "$WORK/collected-$round/collect_summary.json" 2>/dev/null || echo 0)
  RUNS_TOTAL=$((RUNS_TOTAL + RUNS)); TASKS_TOTAL=$((TASKS_TOTAL + TASKS))
  ok=1
  if ! cmp -s "$WORK/clean-$round.csv" "$WORK/faulty-$round.csv"; then
    log "round $round: results differ after $faults faults"; diff "$WORK/clean-$round.csv" "$WORK/faulty-$round.csv" | head >&2
    ok=0
  fi
  if [ "$RUNS" -ne "$TASKS" ] || [ "$COLLECTED" -ne "$TASKS" ]; then
    log "round $round: $RUNS script runs for $TASKS tasks, $COLLECTED collected"; sort "$TIMELINE" >&2
    ok=0
  fi
  [ $ok = 1 ] && EXACT=$((EXACT + 1)) && log "round $round: exact after $faults faults ($(($(wc -l <"$WORK/faulty-$round.csv") - 1)) survivors, $RUNS runs of $TASKS tasks)"
  stop_all
  for ns in "$CLEAN" "$FAULTY"; do SEEDQ_NAMESPACE="$ns" "$PRODUCER" --config "$CONFIG" teardown --yes >/dev/null 2>&1 || true; done
done
RATIO=$(python3 -c "print('%.2f' % ($RUNS_TOTAL / max($TASKS_TOTAL, 1)))")
log "rounds exact: $EXACT/$ROUNDS; script runs / tasks: $RUNS_TOTAL/$TASKS_TOTAL = $RATIO"
[ "$EXACT" -eq "$ROUNDS" ]
