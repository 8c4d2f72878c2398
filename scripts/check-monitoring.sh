#!/usr/bin/env bash
# Checks the monitoring that deploy/ ships, for real: the Prometheus config and alert rules are
# valid (promtool, including the rules' unit tests), and every PromQL expression of the Grafana
# dashboard and of the alert rules runs without error against a live Prometheus that scrapes a
# running seedq-consumer. Queries that need RabbitMQ's rabbitmq_prometheus plugin or
# redis_exporter are answered from deploy/prometheus/fixtures/rabbitmq_redis.prom, served by a
# throwaway `python3 -m http.server`, so the shared broker's plugins are never touched.
#
#   scripts/check-monitoring.sh [--target HOST:PORT] [--strict]
#
#   --target HOST:PORT  scrape this consumer's metrics instead of starting one. Without it the
#                       script starts a CPU consumer in a private namespace (needs RabbitMQ,
#                       Redis and target/release/seedq-{consumer,producer}, or SEEDQ_BIN_DIR),
#                       runs a small sieve job through it, and tears the namespace down.
#   --strict            also fail when a dashboard query returns no series (an alert rule with no
#                       series is just not firing, and is only reported)
#
# Needs promtool and prometheus (Debian: apt-get install prometheus) and python3. Everything it
# starts (Prometheus, the fixture server, the consumer) listens on 127.0.0.1 only and is stopped
# on exit. Env: SEEDQ_CHECK_SCRAPES (scrapes to wait for, default 20 at 1 s), SEEDQ_AMQP_URL,
# SEEDQ_REDIS_URL as for the binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET=""
STRICT=0
SCRAPES="${SEEDQ_CHECK_SCRAPES:-20}"
BIN="${SEEDQ_BIN_DIR:-$ROOT/target/release}"
DASHBOARD="$ROOT/deploy/grafana/dashboards/seedq.json"
DATASOURCES="$ROOT/deploy/grafana/provisioning/datasources/prometheus.yml"
FIXTURE="$ROOT/deploy/prometheus/fixtures/rabbitmq_redis.prom"

while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET="${2:?--target needs HOST:PORT}"; shift 2 ;;
    --strict) STRICT=1; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-monitoring: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "check-monitoring: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for tool in promtool prometheus python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install prometheus python3)"
done
START_NS=$(date +%s%N)

WORK="$(mktemp -d)"
PIDS=()
NS=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$NS" ]; then
    SEEDQ_NAMESPACE="$NS" "$BIN/seedq-producer" --config "$ROOT/config/local.toml" teardown --yes >/dev/null 2>&1 \
      || log "teardown of namespace $NS failed"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- (a) static checks -------------------------------------------------------------------------
log "promtool check config / rules / test rules"
promtool check config "$ROOT/deploy/prometheus/prometheus.yml" >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; die "promtool check config"; }
promtool check rules "$ROOT"/deploy/prometheus/rules/*.yml >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; die "promtool check rules"; }
promtool test rules "$ROOT"/deploy/prometheus/tests/*.yml >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; die "promtool test rules"; }
promtool check metrics <"$FIXTURE" >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; die "promtool check metrics on the fixture"; }

# The dashboard names the datasource uid that provisioning creates; a mismatch shows as "datasource
# not found" on every panel.
python3 - "$DASHBOARD" "$DATASOURCES" <<'EOF' || die "dashboard structure"
import json, re, sys
dash = json.load(open(sys.argv[1]))
uid = re.search(r"^\s*uid:\s*(\S+)", open(sys.argv[2]).read(), re.M).group(1)
bad = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        if p.get("type") == "row":
            continue
        for holder in [p] + p.get("targets", []):
            if holder.get("datasource", {}).get("uid") != uid:
                bad.append(p.get("title"))
        if not p.get("targets"):
            bad.append(f"{p.get('title')} (no query)")
walk(dash["panels"])
if bad:
    sys.exit(f"panels not on datasource {uid}: {sorted(set(bad))}")
EOF

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_ok() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' "$1" 2>/dev/null; }
wait_until() { # description seconds command...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  die "$what did not happen within ${secs}s"
}

# --- (b) a consumer to scrape ------------------------------------------------------------------
if [ -z "$TARGET" ]; then
  for b in seedq-consumer seedq-producer; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not found: cargo build --release -p seedq-consumer -p seedq-producer (or --target, or SEEDQ_BIN_DIR)"
  done
  NS="seedq-check-monitoring-$$-$RANDOM"
  MPORT=$(free_port)
  log "starting seedq-consumer (namespace $NS, metrics 127.0.0.1:$MPORT)"
  SEEDQ_NAMESPACE="$NS" RUST_LOG="${RUST_LOG:-warn}" "$BIN/seedq-consumer" --config "$ROOT/config/local.toml" \
    --node "check-monitoring-$$" --backend cpu --slots 1 --cpu-threads 1 --no-calibrate \
    --metrics-port "$MPORT" --metrics-addr 127.0.0.1 >"$WORK/consumer.log" 2>&1 &
  PIDS+=($!)
  TARGET="127.0.0.1:$MPORT"
  wait_until "the consumer's metrics endpoint" 60 http_ok "http://$TARGET/metrics" \
    || { cat "$WORK/consumer.log" >&2; exit 1; }
  echo '[3, 1, 4, 1, 5, 9, 2, 6]' >"$WORK/draws.json"
  log "running a small sieve job through it"
  SEEDQ_NAMESPACE="$NS" RUST_LOG=warn "$BIN/seedq-producer" --config "$ROOT/config/local.toml" sieve \
    --prng xorshift32 --draws "$WORK/draws.json" --threshold 0.5 --modulus 10 --skip-max 3 \
    --seed-start 1 --seed-end 200001 --chunk-size 20000 --wait --timeout 120 >"$WORK/job.log" 2>&1 \
    || { cat "$WORK/job.log" "$WORK/consumer.log" >&2; die "the sieve job"; }
fi
http_ok "http://$TARGET/metrics" || die "nothing answers on http://$TARGET/metrics"
# The exposition itself must parse (a malformed line makes Prometheus drop the whole scrape).
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
  "http://$TARGET/metrics" >"$WORK/consumer.prom"
promtool check metrics <"$WORK/consumer.prom" >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; die "promtool check metrics on the consumer's /metrics"; }

# --- a private Prometheus ----------------------------------------------------------------------
mkdir -p "$WORK/fixture"
cp "$FIXTURE" "$WORK/fixture/metrics"
FPORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/fixture" "$FPORT" >"$WORK/fixture.log" 2>&1 &
PIDS+=($!)
wait_until "the fixture server" 20 http_ok "http://127.0.0.1:$FPORT/metrics"

PPORT=$(free_port)
cat >"$WORK/prometheus.yml" <<EOF
# Temporary config of scripts/check-monitoring.sh: the real rules, fast scrapes of the consumer
# under the real job name, and the fixture standing in for rabbitmq_prometheus and redis_exporter.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/rules/*.yml
scrape_configs:
  - job_name: seedq-consumer
    static_configs: [{targets: ["$TARGET"]}]
  - job_name: fixtures
    static_configs: [{targets: ["127.0.0.1:$FPORT"]}]
EOF
log "starting a private Prometheus on 127.0.0.1:$PPORT"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PPORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PPORT"
wait_until "Prometheus to be ready" 60 http_ok "$API/-/ready" || { cat "$WORK/prometheus.log" >&2; exit 1; }

enough_scrapes() {
  python3 - "$API" "$SCRAPES" <<'EOF'
import json, sys, urllib.parse, urllib.request
api, want = sys.argv[1], int(sys.argv[2])
q = urllib.parse.urlencode({"query": "min(count_over_time(up[5m])) and min(up) == 1"})
res = json.load(urllib.request.urlopen(f"{api}/api/v1/query?{q}", timeout=5))["data"]["result"]
sys.exit(0 if res and float(res[0]["value"][1]) >= want else 1)
EOF
}
log "waiting for $SCRAPES scrapes of every target"
wait_until "$SCRAPES successful scrapes of the consumer and the fixture" $((SCRAPES * 3 + 30)) enough_scrapes

# --- every query -------------------------------------------------------------------------------
python3 - "$API" "$DASHBOARD" "$STRICT" <<'EOF'
import json, re, sys, time, urllib.parse, urllib.request
api, dashboard, strict = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def get(path, **params):
    url = f"{api}{path}?{urllib.parse.urlencode(params)}"
    try:
        return json.load(urllib.request.urlopen(url, timeout=30))
    except urllib.error.HTTPError as e:  # 400/422: the query's error is in the body
        return json.load(e)

# Grafana's built-in variables, as Grafana would fill them in for a short range.
GRAFANA = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
def expand(expr):
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    unknown = re.findall(r"\$\w+", expr)
    if unknown:
        raise ValueError(f"dashboard variable(s) {unknown} not defined for the check")
    return expr

queries = []  # (kind, name, expr)
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            queries.append(("panel", f'{p["title"]} [{t["refId"]}]', t["expr"]))
walk(json.load(open(dashboard))["panels"])

errors, empty = [], []
# Rules: Prometheus has evaluated them by now; their own health first, then the same expression
# as a query (which also tells whether the alert would be firing).
rules = get("/api/v1/rules")["data"]["groups"]
n_rules = 0
for group in rules:
    for rule in group["rules"]:
        n_rules += 1
        name = f'{group["name"]}/{rule["name"]}'
        if rule.get("health") == "err" or rule.get("lastError"):
            errors.append((name, rule.get("lastError", "unhealthy")))
        queries.append(("rule", name, rule["query"]))
if n_rules == 0:
    errors.append(("rules", "Prometheus loaded no rules from deploy/prometheus/rules"))

counts = {"panel": [0, 0], "rule": [0, 0]}
for kind, name, expr in queries:
    try:
        # Only the dashboard's queries pass through Grafana's variable expansion ($1 in a rule
        # is label_replace's capture group).
        query = expand(expr) if kind == "panel" else expr
    except ValueError as e:
        errors.append((name, str(e)))
        print(f"ERROR  {kind:5} {name}: {e}")
        continue
    reply = get("/api/v1/query", query=query)
    if reply.get("status") != "success":
        errors.append((name, reply.get("error", reply)))
        print(f"ERROR  {kind:5} {name}: {reply.get('error')}\n       {query}")
        continue
    n = len(reply["data"]["result"])
    counts[kind][0 if n else 1] += 1
    if n:
        print(f"ok     {kind:5} {name}: {n} series")
    else:
        note = "not firing" if kind == "rule" else "NO SERIES"
        print(f"empty  {kind:5} {name}: {note}")
        if kind == "panel":
            empty.append(name)

p, r = counts["panel"], counts["rule"]
print(f"dashboard: {p[0] + p[1]} queries, {p[0]} with series, {p[1]} empty; "
      f"rules: {r[0] + r[1]} expressions, {r[0]} firing or pending, {r[1]} not firing; "
      f"{len(errors)} error(s)")
if errors:
    for name, err in errors:
        print(f"  error: {name}: {err}", file=sys.stderr)
    sys.exit(1)
if strict and empty:
    print(f"  --strict: dashboard queries without series: {empty}", file=sys.stderr)
    sys.exit(1)
EOF
log "passed in $(( ($(date +%s%N) - START_NS) / 1000000 )) ms"
