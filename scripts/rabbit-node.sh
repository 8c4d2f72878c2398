#!/usr/bin/env bash
# Private RabbitMQ nodes for failover tests: each node runs from its own directory (data, logs,
# config, pid file), on its own AMQP, management and distribution ports, with its own Erlang
# cookie and its own epmd port, so nothing here touches, or is reachable through, the shared
# broker on 5672/15672 and its epmd on 4369.
#
#   scripts/rabbit-node.sh start N       start node <prefix>-N@localhost and wait until it serves AMQP
#   scripts/rabbit-node.sh stop N        clean shutdown (rabbitmqctl shutdown); data kept
#   scripts/rabbit-node.sh kill N        SIGKILL the node's VM (a crash); data kept
#   scripts/rabbit-node.sh join N M      make node N (running) join node M's cluster (reset N first)
#   scripts/rabbit-node.sh ctl N ARGS..  rabbitmqctl ARGS against node N
#   scripts/rabbit-node.sh url N         the node's AMQP URL
#   scripts/rabbit-node.sh ports N       AMQP_PORT=.. MGMT_PORT=.. DIST_PORT=.. EPMD_PORT=..
#   scripts/rabbit-node.sh clean [--keep]  stop every node under the directory and its epmd,
#                                        then delete the directory (--keep: leave it, logs and
#                                        all, for a post-mortem)
#
# Env:
#   SEEDQ_RABBIT_DIR     where the nodes live (default ${TMPDIR:-/tmp}/seedq-rabbit); nodes under
#                        one directory share a cookie and an epmd, i.e. can form one cluster
#   SEEDQ_RABBIT_PREFIX  node name prefix (default seedq-test)
#   SEEDQ_RABBIT_AMQP_PORT, _MGMT_PORT, _DIST_PORT   ports of the node being started (default
#                        5700+N, 15700+N, 25700+N); remembered, so later commands need only N
#   SEEDQ_RABBIT_EPMD_PORT  epmd port of the directory (default 4400), fixed by its first start
#   SEEDQ_RABBIT_BIN     RabbitMQ's scripts (default /usr/lib/rabbitmq/bin: the Debian wrappers
#                        in /usr/sbin switch to the rabbitmq user and drop this environment)
#   SEEDQ_RABBIT_BOOT_TIMEOUT  seconds to wait for a start (default 120)
#   SEEDQ_RABBIT_ADVANCED  Erlang terms for the node's advanced.config, written at its start
#                        (e.g. a short dead-letter worker retry for a test); kept for restarts
#   SEEDQ_RABBIT_TLS_DIR  a directory holding ca.pem, server.pem and server.key: the node's AMQP
#                        port then speaks TLS only (amqps://, no plain listener); remembered
#                        for restarts like the ports
#
# Why a private epmd rather than none: Erlang's epmd-less mode (-erl_epmd_port) assumes every
# node listens on the same distribution port, which nodes sharing one host cannot; a private
# epmd port keeps the test nodes out of the shared broker's epmd all the same.
#
# Exit status: 0 done; 1 failed (the node's log tail is printed); 3 RabbitMQ is not installed
# (callers skip, saying so).
set -euo pipefail

BIN="${SEEDQ_RABBIT_BIN:-/usr/lib/rabbitmq/bin}"
ROOT="${SEEDQ_RABBIT_DIR:-${TMPDIR:-/tmp}/seedq-rabbit}"
PREFIX="${SEEDQ_RABBIT_PREFIX:-seedq-test}"
BOOT_TIMEOUT="${SEEDQ_RABBIT_BOOT_TIMEOUT:-120}"

die() {
  echo "rabbit-node.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_rabbit() {
  if [ ! -x "$BIN/rabbitmq-server" ] || [ ! -x "$BIN/rabbitmqctl" ]; then
    echo "rabbit-node.sh: RabbitMQ is not installed ($BIN/rabbitmq-server, $BIN/rabbitmqctl missing; set SEEDQ_RABBIT_BIN)" >&2
    exit 3
  fi
}

node_name() { echo "$PREFIX-$1@localhost"; }
node_dir() { echo "$ROOT/$PREFIX-$1"; }

# The node's environment, for the server and for rabbitmqctl alike: the CLI finds the node through
# the same epmd port and authenticates with the same cookie (read from $HOME).
node_env() {
  local n="$1" dir
  dir="$(node_dir "$n")"
  [ -f "$dir/ports" ] || die "node $n was never started under $ROOT"
  # shellcheck disable=SC1091
  . "$dir/ports"
  export HOME="$ROOT"
  export ERL_EPMD_PORT="$EPMD_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_NODENAME
  RABBITMQ_NODENAME="$(node_name "$n")"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$DIST_PORT"
  # Our own (empty) env file: the system one names the shared node and sets its ERL_FLAGS.
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/node.pid"
  # A VM that dies at boot writes its crash dump here, not into the caller's working directory.
  export ERL_CRASH_DUMP="$dir/log/erl_crash.dump"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  unset ERL_FLAGS RABBITMQ_ERLANG_COOKIE
}

ctl() {
  local n="$1"
  shift
  (node_env "$n" && exec "$BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@")
}

pid_of() {
  local pidfile
  pidfile="$(node_dir "$1")/node.pid"
  [ -s "$pidfile" ] && cat "$pidfile"
}

alive() {
  local pid
  pid="$(pid_of "$1")" || return 1
  kill -0 "$pid" 2>/dev/null && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null
}

amqp_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_tail() {
  local dir
  dir="$(node_dir "$1")"
  echo "--- $dir/log/startup.log (tail)" >&2
  tail -n 30 "$dir/log/startup.log" >&2 2>/dev/null || true
  for f in "$dir"/log/*.log; do
    [ "$f" = "$dir/log/startup.log" ] && continue
    [ -f "$f" ] || continue
    echo "--- $f (tail)" >&2
    tail -n 30 "$f" >&2
  done
}

cmd_start() {
  local n="$1" dir
  need_rabbit
  dir="$(node_dir "$n")"
  mkdir -p "$dir/log" "$dir/mnesia"
  if [ ! -f "$dir/ports" ]; then
    local epmd="${SEEDQ_RABBIT_EPMD_PORT:-4400}"
    if [ -f "$ROOT/epmd.port" ]; then
      epmd="$(cat "$ROOT/epmd.port")"
    else
      echo "$epmd" >"$ROOT/epmd.port"
    fi
    cat >"$dir/ports" <<EOF
AMQP_PORT=${SEEDQ_RABBIT_AMQP_PORT:-$((5700 + n))}
MGMT_PORT=${SEEDQ_RABBIT_MGMT_PORT:-$((15700 + n))}
DIST_PORT=${SEEDQ_RABBIT_DIST_PORT:-$((25700 + n))}
EPMD_PORT=$epmd
EOF
  fi
  if [ ! -f "$ROOT/.erlang.cookie" ]; then
    # A cookie of this directory's own: no node elsewhere on the machine can join or drive these.
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' | tr '0-9a-f' 'A-P' >"$ROOT/.erlang.cookie"
    chmod 400 "$ROOT/.erlang.cookie"
  fi
  node_env "$n"
  if alive "$n"; then
    die "node $n is already running (pid $(pid_of "$n"))"
  fi
  : >"$RABBITMQ_CONF_ENV_FILE"
  echo "[rabbitmq_management]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  local tls_dir="${SEEDQ_RABBIT_TLS_DIR:-}" listeners
  if [ -n "$tls_dir" ]; then
    echo "$tls_dir" >"$dir/tls.dir"
  elif [ -f "$dir/tls.dir" ]; then
    tls_dir="$(cat "$dir/tls.dir")"
  fi
  if [ -n "$tls_dir" ]; then
    # The environment's port would add a plain listener back beside the TLS one.
    unset RABBITMQ_NODE_IP_ADDRESS RABBITMQ_NODE_PORT
    listeners="listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$AMQP_PORT
ssl_options.cacertfile = $tls_dir/ca.pem
ssl_options.certfile = $tls_dir/server.pem
ssl_options.keyfile = $tls_dir/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false"
  else
    listeners="listeners.tcp.default = 127.0.0.1:$AMQP_PORT"
  fi
  cat >"$RABBITMQ_CONFIG_FILE" <<EOF
$listeners
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
# Light on a small shared machine: no message rate history.
management.rates_mode = none
log.console = false
log.file.level = info
EOF
  if [ -n "${SEEDQ_RABBIT_ADVANCED:-}" ]; then
    printf '%s\n' "$SEEDQ_RABBIT_ADVANCED" >"$RABBITMQ_ADVANCED_CONFIG_FILE"
  fi
  rm -f "$RABBITMQ_PID_FILE"
  # setsid: the node outlives this script and is not hit by the caller's terminal signals.
  setsid "$BIN/rabbitmq-server" </dev/null >>"$dir/log/startup.log" 2>&1 &
  local launcher=$! started=$SECONDS
  while :; do
    if alive "$n" && amqp_open "$AMQP_PORT" \
      && "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" await_startup --timeout 5 >/dev/null 2>&1; then
      break
    fi
    if [ $((SECONDS - started)) -ge "$BOOT_TIMEOUT" ]; then
      log_tail "$n"
      die "node $n did not start within ${BOOT_TIMEOUT}s"
    fi
    if ! kill -0 "$launcher" 2>/dev/null; then
      log_tail "$n"
      die "node $n exited while starting"
    fi
    sleep 0.5
  done
  echo "node $(node_name "$n") up in $((SECONDS - started))s: amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f, management http://127.0.0.1:$MGMT_PORT" >&2
}

cmd_stop() {
  local n="$1" pid
  need_rabbit
  pid="$(pid_of "$n")" || return 0
  alive "$n" || return 0
  ctl "$n" shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 300); do
    alive "$n" || return 0
    sleep 0.1
  done
  echo "rabbit-node.sh: node $n did not shut down in 30s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_kill() {
  local pid
  pid="$(pid_of "$1")" || return 0
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$1" || return 0
    sleep 0.1
  done
  die "node $1 (pid $pid) survived SIGKILL"
}

cmd_join() {
  local n="$1" m="$2"
  need_rabbit
  ctl "$n" stop_app
  ctl "$n" reset
  ctl "$n" join_cluster "$(node_name "$m")"
  ctl "$n" start_app
  ctl "$n" await_startup --timeout "$BOOT_TIMEOUT"
}

cmd_clean() {
  local keep="${1:-}"
  [ -d "$ROOT" ] || return 0
  # SIGKILL, not a clean stop: the data goes with the directory, and a clean stop of a cluster
  # node that has lost a peer can take many seconds.
  for dir in "$ROOT/$PREFIX"-*; do
    [ -d "$dir" ] || continue
    cmd_kill "${dir##*/"$PREFIX"-}"
  done
  if [ -f "$ROOT/epmd.port" ] && command -v epmd >/dev/null 2>&1; then
    # Only the epmd on this directory's port: the shared broker's (4369) is never touched. It
    # refuses to die while a node still shows as registered (a VM killed a moment ago), so ask
    # until it is gone.
    local port
    port="$(cat "$ROOT/epmd.port")"
    for _ in $(seq 1 50); do
      ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$port" -names >/dev/null 2>&1 || break
      ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$port" -kill >/dev/null 2>&1 || true
      sleep 0.2
    done
  fi
  [ "$keep" = "--keep" ] || rm -rf "$ROOT"
}

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
  start) [ $# -eq 1 ] || usage; cmd_start "$1" ;;
  stop) [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
  kill) [ $# -eq 1 ] || usage; cmd_kill "$1" ;;
  join) [ $# -eq 2 ] || usage; cmd_join "$1" "$2" ;;
  ctl) [ $# -ge 2 ] || usage; need_rabbit; ctl "$@" ;;
  url)
    [ $# -eq 1 ] || usage
    node_env "$1"
    scheme=amqp
    [ -f "$(node_dir "$1")/tls.dir" ] && scheme=amqps
    echo "$scheme://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
    ;;
  ports) [ $# -eq 1 ] || usage; cat "$(node_dir "$1")/ports" ;;
  clean) [ $# -le 1 ] || usage; cmd_clean "${1:-}" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
