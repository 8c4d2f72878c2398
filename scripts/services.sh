#!/usr/bin/env bash
# Makes sure RabbitMQ (with the management plugin, port 15672) and Redis answer on this machine.
#
# Order of preference for each service: one already running; else a local server started here
# (`rabbitmq-server -detached`, `redis-server --daemonize yes` with config/redis.conf); else
# `docker compose up -d <service>`. Idempotent: running it again changes nothing.
#
# Env: SEEDQ_AMQP_HOST/PORT (127.0.0.1/5672), SEEDQ_MGMT_PORT (15672),
#      SEEDQ_REDIS_HOST/PORT (127.0.0.1/6379), SEEDQ_SERVICES_TIMEOUT (seconds, 120),
#      SEEDQ_STATE_DIR (where a locally started Redis keeps its files; target/seedq-state).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AMQP_HOST="${SEEDQ_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${SEEDQ_AMQP_PORT:-5672}"
MGMT_PORT="${SEEDQ_MGMT_PORT:-15672}"
REDIS_HOST="${SEEDQ_REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${SEEDQ_REDIS_PORT:-6379}"
TIMEOUT="${SEEDQ_SERVICES_TIMEOUT:-120}"
STATE_DIR="${SEEDQ_STATE_DIR:-$ROOT/target/seedq-state}"

log() { echo "services: $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0 || return 1
}

rabbit_up() { port_open "$AMQP_HOST" "$AMQP_PORT"; }
mgmt_up() {
  if command -v curl >/dev/null; then
    curl -fsS -m 3 -u guest:guest "http://$AMQP_HOST:$MGMT_PORT/api/overview" >/dev/null 2>&1
  else
    port_open "$AMQP_HOST" "$MGMT_PORT"
  fi
}
redis_up() {
  if command -v redis-cli >/dev/null; then
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else
    port_open "$REDIS_HOST" "$REDIS_PORT"
  fi
}

# The development services (docker-compose.dev.yml over docker-compose.yml): guest and no Redis
# password, every port on 127.0.0.1 only. A deployment uses docker-compose.yml alone.
compose() {
  export SEEDQ_AMQP_PUBLISH=127.0.0.1:5672
  local files=(-f docker-compose.yml -f docker-compose.dev.yml)
  if docker compose version >/dev/null 2>&1; then
    (cd "$ROOT" && docker compose "${files[@]}" "$@")
  elif command -v docker-compose >/dev/null; then
    (cd "$ROOT" && docker-compose "${files[@]}" "$@")
  else
    log "no running service, no local server and no docker compose: install rabbitmq-server and redis-server, or docker"
    return 1
  fi
}

wait_for() { # description check-function
  local what=$1 check=$2 waited=0
  until "$check"; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
      log "$what did not answer within ${TIMEOUT}s"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "$what is up"
}

# --- RabbitMQ -------------------------------------------------------------------------------
started_by_compose=0
if rabbit_up; then
  log "using the running RabbitMQ on $AMQP_HOST:$AMQP_PORT"
elif command -v rabbitmq-server >/dev/null; then
  log "starting a local RabbitMQ (rabbitmq-server -detached)"
  rabbitmq-server -detached >/dev/null 2>&1 || true
else
  log "starting RabbitMQ with docker compose"
  compose up -d rabbitmq
  started_by_compose=1
fi
wait_for "RabbitMQ (AMQP $AMQP_HOST:$AMQP_PORT)" rabbit_up

# The management plugin (HTTP API on $MGMT_PORT) is needed by operators and by the tests.
if ! mgmt_up; then
  if [ "$started_by_compose" = 0 ] && command -v rabbitmq-plugins >/dev/null; then
    log "enabling rabbitmq_management"
    # The node may still be booting right after the port opens: retry briefly.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      if rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1; then break; fi
      sleep 2
    done
  fi
  wait_for "RabbitMQ management API (port $MGMT_PORT)" mgmt_up
else
  log "RabbitMQ management API is up"
fi

# --- Redis ----------------------------------------------------------------------------------
if redis_up; then
  log "using the running Redis on $REDIS_HOST:$REDIS_PORT"
elif command -v redis-server >/dev/null; then
  mkdir -p "$STATE_DIR"
  log "starting a local Redis (config/redis.conf, data in $STATE_DIR)"
  redis-server "$ROOT/config/redis.conf" --daemonize yes --port "$REDIS_PORT" \
    --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log" --pidfile "$STATE_DIR/redis.pid"
else
  log "starting Redis with docker compose"
  compose up -d redis
fi
wait_for "Redis ($REDIS_HOST:$REDIS_PORT)" redis_up
