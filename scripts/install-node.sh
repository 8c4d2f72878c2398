#!/usr/bin/env bash
# Installs seedq-consumer as a systemd service on a node (Zeus, a rig): the binary, the cluster
# model, the unit, and the environment files it reads. Idempotent: a second run with the same
# inputs changes nothing and says so.
#
#   scripts/install-node.sh --root DIR --node NAME [--binary PATH] [--config PATH]
#                           [--user USER] [--no-start]
#
#   --root DIR     install under DIR (/ on the node itself; a temporary directory to stage or test)
#   --node NAME    the node's name in the cluster config ([[nodes]] name = "...")
#   --binary PATH  seedq-consumer to install (default: target/release/seedq-consumer; build it
#                  with --features cuda or rocm for a GPU node)
#   --config PATH  cluster model (default: config/cluster.toml)
#   --user USER    run the service as USER (a drop-in; default: the unit's `seedq`)
#   --no-start     install only; do not touch systemctl
#
# What goes where (under DIR):
#   usr/local/bin/seedq-consumer                            replaced when it differs
#   etc/seedq/cluster.toml                                  replaced when it differs
#   etc/systemd/system/seedq-consumer.service               replaced when it differs
#   etc/systemd/system/seedq-consumer.service.d/user.conf   with --user only
#   etc/seedq/node.env        SEEDQ_NODE (+ LD_LIBRARY_PATH on hip nodes); replaced when it differs
#   etc/seedq/seedq-consumer.env  credentials template, mode 600, written only if absent: the
#                             operator's file from then on, never overwritten
#
# systemctl (daemon-reload, enable, start or restart) runs only when DIR is / and systemd is
# running, and never while seedq-consumer.env still holds the template's CHANGE-ME placeholders.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT_DIR=""
NODE=""
BINARY="$REPO/target/release/seedq-consumer"
CONFIG="$REPO/config/cluster.toml"
RUN_USER=""
START=1
UNIT_SRC="$REPO/deploy/systemd/seedq-consumer.service"

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "install-node: $*" >&2; exit 1; }
say() { echo "install-node: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT_DIR="${2:?--root needs a directory}"; shift 2 ;;
    --node) NODE="${2:?--node needs a name}"; shift 2 ;;
    --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a path}"; shift 2 ;;
    --user) RUN_USER="${2:?--user needs a name}"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$ROOT_DIR" ] || { usage >&2; die "--root is required (/ on the node itself)"; }
[ -n "$NODE" ] || { usage >&2; die "--node is required"; }
# The same rule the consumer applies: node names go into queue names and Redis keys.
[[ "$NODE" =~ ^[A-Za-z0-9._-]+$ ]] || die "node name '$NODE' may only hold letters, digits, '.', '_' and '-'"
if [ -n "$RUN_USER" ]; then
  [[ "$RUN_USER" =~ ^[a-z_][a-z0-9_-]*[$]?$ ]] || die "'$RUN_USER' is not a valid user name"
fi
[ -f "$BINARY" ] || die "no binary at $BINARY (cargo build --release -p seedq-consumer [--features cuda|rocm], or --binary)"
[ -f "$CONFIG" ] || die "no cluster config at $CONFIG (--config)"
[ -f "$UNIT_SRC" ] || die "missing $UNIT_SRC"
mkdir -p "$ROOT_DIR"
ROOT_DIR="$(cd "$ROOT_DIR" && pwd -P)"
if [ "$ROOT_DIR" = "/" ]; then P=""; else P="$ROOT_DIR"; fi

# The node's block of the cluster model: its backend and, on ROCm nodes, ROCM_PATH from
# [nodes.env]. A plain scan of the TOML: it only has to find `name`, `backend` and `ROCM_PATH`
# lines between one `[[nodes]]` header and the next.
node_facts() {
  awk -v node="$NODE" '
    function val(line) { sub(/^[^=]*=[ \t]*/, "", line); sub(/[ \t]*(#.*)?$/, "", line); gsub(/^"|"$/, "", line); return line }
    /^\[\[nodes\]\]/ { block = 1; inside = 0; next }
    /^\[nodes\.env\]/ { next }
    /^\[/ { block = 0; inside = 0; next }
    block && /^[ \t]*name[ \t]*=/ { inside = (val($0) == node); if (inside) found = 1; next }
    inside && /^[ \t]*backend[ \t]*=/ { backend = val($0) }
    inside && /^[ \t]*ROCM_PATH[ \t]*=/ { rocm = val($0) }
    END { print (found ? "found" : "missing"), (backend == "" ? "cpu" : backend), (rocm == "" ? "/opt/rocm" : rocm) }
  ' "$CONFIG"
}
read -r LISTED BACKEND ROCM_PATH_VALUE < <(node_facts)
if [ "$LISTED" = "missing" ]; then
  say "warning: node '$NODE' is not listed in $CONFIG; the consumer will run it with CPU defaults"
fi

CHANGED=()   # what this run wrote
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# place SRC DEST MODE: install SRC at DEST unless DEST already has the same bytes and mode.
place() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(stat -c %a "$dest")" = "$mode" ]; then
      say "unchanged  ${dest#"$P"}"
      return
    fi
    chmod "$mode" "$dest"
    say "mode $mode   ${dest#"$P"}"
  else
    local verb=installed
    [ -e "$dest" ] && verb=updated
    install -D -m "$mode" "$src" "$dest"
    say "$verb  ${dest#"$P"}"
  fi
  CHANGED+=("${dest#"$P"}")
}

place "$BINARY" "$P/usr/local/bin/seedq-consumer" 755
place "$CONFIG" "$P/etc/seedq/cluster.toml" 644
place "$UNIT_SRC" "$P/etc/systemd/system/seedq-consumer.service" 644

{
  echo "# seedq-consumer's per-node settings (EnvironmentFile of seedq-consumer.service), written by"
  echo "# scripts/install-node.sh and rewritten by the next install: put your own settings in"
  echo "# seedq-consumer.env instead."
  echo "SEEDQ_NODE=$NODE"
  if [ "$BACKEND" = "hip" ]; then
    echo "# hip node: the HIP runtime (libamdhip64) must be on the loader path before the process"
    echo "# starts; the consumer applies cluster.toml's [nodes.env] itself."
    echo "LD_LIBRARY_PATH=$ROCM_PATH_VALUE/lib"
  fi
} >"$TMP/node.env"
place "$TMP/node.env" "$P/etc/seedq/node.env" 644

if [ -n "$RUN_USER" ]; then
  {
    echo "# Written by scripts/install-node.sh --user $RUN_USER: the user seedq-consumer runs as."
    echo "[Service]"
    echo "User=$RUN_USER"
    echo "Group="
  } >"$TMP/user.conf"
  place "$TMP/user.conf" "$P/etc/systemd/system/seedq-consumer.service.d/user.conf" 644
fi

# The credentials file: created once, then the operator's. umask first, so that it is never
# readable by others even for an instant.
ENV_FILE="$P/etc/seedq/seedq-consumer.env"
if [ -e "$ENV_FILE" ]; then
  say "kept       /etc/seedq/seedq-consumer.env (exists; never overwritten)"
  mode="$(stat -c %a "$ENV_FILE")"
  [ "$mode" = "600" ] || say "warning: /etc/seedq/seedq-consumer.env has mode $mode; it holds passwords: chmod 600 it"
else
  (
    umask 077
    mkdir -p "$(dirname "$ENV_FILE")"
    cat >"$ENV_FILE" <<'EOF'
# seedq-consumer's credentials and settings on this node (EnvironmentFile of
# seedq-consumer.service). Mode 600: it holds the broker and Redis passwords. Written once by
# scripts/install-node.sh from a template and never overwritten; edit the CHANGE-ME values,
# then `systemctl restart seedq-consumer`. The consumer never logs these passwords.
# The consumer role's URLs and the job key, from scripts/init-secrets.sh on the coordinator
# (secrets/consumer.amqp-url, consumer.redis-url, job.key; README "Security"). Or point
# SEEDQ_AMQP_URL_FILE, SEEDQ_REDIS_URL_FILE and SEEDQ_JOB_KEY_FILE at files holding them.
SEEDQ_AMQP_URL=amqp://seedq-consumer:CHANGE-ME@coordinator:5672/%2f
SEEDQ_REDIS_URL=redis://seedq-consumer:CHANGE-ME@coordinator:6379/
SEEDQ_JOB_KEY=CHANGE-ME
SEEDQ_NAMESPACE=seedq
# With TLS (SEEDQ_TLS=1 scripts/init-secrets.sh on the coordinator): amqps://...:5671 and
# rediss:// URLs above, and a copy of the coordinator's secrets/tls/ca.pem here.
#SEEDQ_TLS_CA_FILE=/etc/seedq/ca.pem
# Metrics for deploy/prometheus (targets/seedq-consumers.yml scrapes port 9477). 127.0.0.1
# keeps them on this host; put this node's LAN address here for the monitoring host to scrape.
SEEDQ_METRICS_PORT=9477
SEEDQ_METRICS_ADDR=127.0.0.1
# json for log shippers (`journalctl -u seedq-consumer -o cat | jq`), text for people.
SEEDQ_LOG_FORMAT=json
#RUST_LOG=info,lapin=warn
EOF
    chmod 600 "$ENV_FILE"
  )
  say "installed  /etc/seedq/seedq-consumer.env (template, mode 600: fill in the CHANGE-ME values)"
  CHANGED+=("/etc/seedq/seedq-consumer.env")
fi

if [ ${#CHANGED[@]} -eq 0 ]; then
  say "nothing to do: node $NODE is already installed under $ROOT_DIR"
else
  say "node $NODE: ${#CHANGED[@]} file(s) written under $ROOT_DIR"
fi

# --- systemd --------------------------------------------------------------------------------
if [ "$START" = 0 ]; then
  say "not touching systemd (--no-start)"
  exit 0
fi
if [ "$ROOT_DIR" != "/" ]; then
  say "not touching systemd: --root is $ROOT_DIR, not /"
  exit 0
fi
if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null; then
  say "not touching systemd: it is not running here"
  exit 0
fi
if grep -q 'CHANGE-ME' "$ENV_FILE"; then
  systemctl daemon-reload
  systemctl enable seedq-consumer.service >/dev/null
  say "enabled seedq-consumer but not started: fill in /etc/seedq/seedq-consumer.env, then systemctl start seedq-consumer"
  exit 0
fi
user="${RUN_USER:-seedq}"
if ! id "$user" >/dev/null 2>&1; then
  say "warning: user '$user' does not exist: create it (useradd --system $user) or pass --user"
fi
if [ ${#CHANGED[@]} -gt 0 ]; then
  systemctl daemon-reload
fi
if ! systemctl is-enabled --quiet seedq-consumer.service; then
  systemctl enable seedq-consumer.service >/dev/null
  say "enabled seedq-consumer"
fi
if ! systemctl is-active --quiet seedq-consumer.service; then
  systemctl start seedq-consumer.service
  say "started seedq-consumer"
elif [ ${#CHANGED[@]} -gt 0 ]; then
  # A restart drains: chunks in flight finish (up to 60 s) or return to the queue.
  systemctl restart seedq-consumer.service
  say "restarted seedq-consumer (drained first) to apply the change"
else
  say "seedq-consumer is running and up to date"
fi
