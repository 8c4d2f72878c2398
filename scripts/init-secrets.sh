#!/usr/bin/env bash
# Generates the credentials of a seedq deployment: one RabbitMQ user and one Redis ACL user per
# role, each limited to one namespace, and the job key. Nothing here is committed: the output
# directory and .env are gitignored. README.md, "Security", says what each role may do.
#
#   scripts/init-secrets.sh [--out DIR] [--namespace NS] [--env-file FILE] [--force]
#
#   --out DIR        where the files go (default: secrets/ at the repository root)
#   --namespace NS   the namespace the users are confined to (default: seedq)
#   --env-file FILE  the compose variables file to write (default: .env at the repository root;
#                    `--env-file -` writes none)
#   --force          replace existing secrets (every password changes: restart everything)
#
# Env: SEEDQ_SECRETS_AMQP_HOST/PORT (rabbitmq/5672), SEEDQ_SECRETS_REDIS_HOST/PORT (redis/6379):
# the addresses written into the URL files (docker-compose's service names by default).
#
# TLS (off by default): SEEDQ_TLS=1 also makes a private CA and one server certificate for both
# services, writes amqps:// (port 5671) and rediss:// URLs instead of plain ones, and sets
# COMPOSE_FILE in FILE so that `docker compose` applies docker-compose.tls.yml (TLS-only
# listeners) with no further switch. The certificate names rabbitmq, redis, localhost, 127.0.0.1
# and the comma-separated SEEDQ_TLS_HOSTS (e.g. the coordinator's name and address as the rigs
# reach it: SEEDQ_TLS_HOSTS=zeus,192.168.1.10). Clients trust it with --tls-ca-file
# (SEEDQ_TLS_CA_FILE) pointing at DIR/tls/ca.pem.
#
# Writes, in DIR:
#   rabbitmq-definitions.json   users <ns>-admin (administrator), <ns>-producer, <ns>-consumer,
#                               <ns>-operator (monitoring), their permissions and the
#                               work-queue policy, rendered from config/definitions.json
#                               (password hashes only); RabbitMQ loads it at boot
#   redis-users.acl             the same roles as Redis ACL users (hashed passwords), rendered
#                               from config/redis-users.acl; the `default` user is off
#   <role>.password             each role's password (mode 600)
#   <role>.amqp-url, <role>.redis-url   each role's URLs (mode 600), for SEEDQ_*_URL_FILE
#   job.key                     the job-signing key (SEEDQ_JOB_KEY_FILE; mode 600)
#   tls/ca.pem, tls/ca.key      with SEEDQ_TLS=1: the CA (give ca.pem to every client; ca.key,
#                               mode 600, only signs new server certificates)
#   tls/server.pem, tls/server.key   the services' certificate and key (read by the broker and
#                               Redis inside their containers)
# and in FILE the compose variables (the namespace and the admin password for the management UI).
#
# Needs openssl, sha256sum and base64 (coreutils).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/secrets"
NS=seedq
ENV_FILE="$ROOT/.env"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --namespace) NS="$2"; shift 2 ;;
    --env-file) ENV_FILE="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "init-secrets.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
TLS="${SEEDQ_TLS:-0}"
case "$TLS" in
  0|1) ;;
  *) echo "init-secrets.sh: SEEDQ_TLS must be 0 (plain, the default) or 1 (TLS-only services), not '$TLS'" >&2; exit 2 ;;
esac
if [ "$TLS" = 1 ]; then
  AMQP_SCHEME=amqps REDIS_SCHEME=rediss DEFAULT_AMQP_PORT=5671
  # The names the server certificate is valid for, checked before anything is written.
  san="DNS:rabbitmq,DNS:redis,DNS:localhost,IP:127.0.0.1"
  IFS=',' read -r -a extra_hosts <<<"${SEEDQ_TLS_HOSTS:-}"
  for host in "${extra_hosts[@]}"; do
    host="${host// /}"
    [ -n "$host" ] || continue
    if ! [[ "$host" =~ ^[A-Za-z0-9.:-]+$ ]]; then
      echo "init-secrets.sh: SEEDQ_TLS_HOSTS entry '$host' is not a host name or an IP address" >&2
      exit 2
    fi
    if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then
      san="$san,IP:$host"
    else
      san="$san,DNS:$host"
    fi
  done
else
  AMQP_SCHEME=amqp REDIS_SCHEME=redis DEFAULT_AMQP_PORT=5672
fi
AMQP_HOST="${SEEDQ_SECRETS_AMQP_HOST:-rabbitmq}"
AMQP_PORT="${SEEDQ_SECRETS_AMQP_PORT:-$DEFAULT_AMQP_PORT}"
REDIS_HOST="${SEEDQ_SECRETS_REDIS_HOST:-redis}"
REDIS_PORT="${SEEDQ_SECRETS_REDIS_PORT:-6379}"

# Namespaces are identifiers (letters, digits, '-', '_', '.'): nothing else may reach a regex.
if ! [[ "$NS" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
  echo "init-secrets.sh: '$NS' is not a namespace (letters, digits, '-', '_', '.')" >&2
  exit 2
fi
for tool in openssl sha256sum base64; do
  command -v "$tool" >/dev/null || { echo "init-secrets.sh: $tool is needed" >&2; exit 1; }
done
if [ -e "$OUT/job.key" ] && [ "$FORCE" = 0 ]; then
  echo "init-secrets.sh: $OUT already holds secrets; --force replaces them (every password changes)" >&2
  exit 1
fi
umask 077
mkdir -p "$OUT"
chmod 700 "$OUT"

# Hex passwords: nothing to escape in a URL, JSON or an ACL line.
new_password() { openssl rand -hex 24; }

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), 4-byte salt.
rabbit_hash() {
  local salt esc
  salt="$(openssl rand -hex 4)"
  esc="$(printf '%s' "$salt" | sed 's/../\\x&/g')"
  # shellcheck disable=SC2059
  { printf "$esc"; { printf "$esc"; printf '%s' "$1"; } | openssl dgst -sha256 -binary; } | base64 -w0
}

redis_hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# The namespace as a regex (dots escaped), written inside a JSON string (backslash doubled).
NS_RE_JSON="$(printf '%s' "$NS" | sed 's/\./\\\\./g')"

declare -A PW
for role in admin producer consumer operator; do
  PW[$role]="$(new_password)"
  printf '%s\n' "${PW[$role]}" > "$OUT/$role.password"
  printf '%s://%s-%s:%s@%s:%s/%%2f\n' "$AMQP_SCHEME" "$NS" "$role" "${PW[$role]}" "$AMQP_HOST" "$AMQP_PORT" > "$OUT/$role.amqp-url"
  printf '%s://%s-%s:%s@%s:%s/\n' "$REDIS_SCHEME" "$NS" "$role" "${PW[$role]}" "$REDIS_HOST" "$REDIS_PORT" > "$OUT/$role.redis-url"
done
openssl rand -hex 32 > "$OUT/job.key"

render() { # template -> stdout
  local text
  text="$(cat "$1")"
  # Replacements quoted: bash would otherwise read backslashes and '&' in them.
  text="${text//@NS_RE@/"$NS_RE_JSON"}"
  text="${text//@NS@/"$NS"}"
  for role in admin producer consumer operator; do
    local upper="${role^^}"
    text="${text//@${upper}_RABBIT_HASH@/"$(rabbit_hash "${PW[$role]}")"}"
    text="${text//@${upper}_REDIS_HASH@/"$(redis_hash "${PW[$role]}")"}"
  done
  printf '%s\n' "$text" | grep -v '^#'
}

# Read by the broker and Redis inside their containers (other uids): hashes only, world-readable
# in a directory only the owner may enter.
render "$ROOT/config/definitions.json" > "$OUT/rabbitmq-definitions.json"
render "$ROOT/config/redis-users.acl" > "$OUT/redis-users.acl"
chmod 644 "$OUT/rabbitmq-definitions.json" "$OUT/redis-users.acl"

# A private CA and one certificate for both services (they sit behind one compose network and,
# for the rigs, one host name). ECDSA P-256: what every client and server here speaks.
if [ "$TLS" = 1 ]; then
  mkdir -p "$OUT/tls"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -days 3650 -subj "/CN=seedq CA ($NS)" -keyout "$OUT/tls/ca.key" -out "$OUT/tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -subj "/CN=seedq services" -keyout "$OUT/tls/server.key" -out "$OUT/tls/server.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" \
    > "$OUT/tls/server.ext"
  openssl x509 -req -in "$OUT/tls/server.csr" -CA "$OUT/tls/ca.pem" -CAkey "$OUT/tls/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$OUT/tls/server.ext" -out "$OUT/tls/server.pem" \
    2>/dev/null
  rm -f "$OUT/tls/server.csr" "$OUT/tls/server.ext" "$OUT/tls/ca.srl"
  # The broker and Redis run as their own uids inside their containers: the server key must be
  # readable to them, in a directory only the owner may enter (as the rendered users files).
  chmod 755 "$OUT/tls"
  chmod 644 "$OUT/tls/ca.pem" "$OUT/tls/server.pem" "$OUT/tls/server.key"
  chmod 600 "$OUT/tls/ca.key"
fi

if [ "$ENV_FILE" != "-" ]; then
  {
    echo "# Written by scripts/init-secrets.sh: never commit."
    if [ "$TLS" = 1 ]; then
      # docker compose reads this: every `docker compose` command applies the TLS override.
      echo "COMPOSE_FILE=docker-compose.yml:docker-compose.tls.yml"
    fi
    echo "SEEDQ_NAMESPACE=$NS"
    echo "RABBITMQ_ADMIN_USER=$NS-admin"
    echo "RABBITMQ_ADMIN_PASSWORD=${PW[admin]}"
    echo "REDIS_OPERATOR_USER=$NS-operator"
    echo "REDIS_OPERATOR_PASSWORD=${PW[operator]}"
  } > "$ENV_FILE"
fi
echo "init-secrets.sh: wrote the secrets of namespace '$NS' to $OUT${ENV_FILE:+ and $ENV_FILE}" >&2
if [ "$TLS" = 1 ]; then
  echo "init-secrets.sh: TLS on: clients need --tls-ca-file $OUT/tls/ca.pem (SEEDQ_TLS_CA_FILE)" >&2
fi
