#!/usr/bin/env bash
# Runs the broker failover tests that are too heavy for the default suite, alone: three private
# RabbitMQ nodes clustered together (scripts/rabbit-node.sh, their own ports, data, cookie and
# epmd; the shared broker is never touched), the node leading the seeds queue SIGKILLed while
# the producer publishes and the consumer works, the job checked exact against the sieve engine
# (e2e/tests/broker_failover.rs). Also runs the single-node restart test of the same file.
#
#   scripts/cluster-check.sh
#
# About 3.5 minutes on a loaded 2-core machine plus the build (measured: the restart test 75 s,
# the cluster test 65 s of which 47-55 s are the cluster booting, teardowns about 30 s).
# A test that cannot start its nodes fails here (SEEDQ_REQUIRE_PRIVATE_RABBIT=1) instead of
# skipping. Needs RabbitMQ installed (not running: the nodes are private), redis-server, and
# the shared Redis of the other e2e tests (SEEDQ_REDIS_URL, default 127.0.0.1:6379).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The e2e tests find the binaries next to their own executable: same profile, built first.
cargo build --release --bins -p seedq-producer -p seedq-consumer
started=$SECONDS
SEEDQ_REQUIRE_PRIVATE_RABBIT=1 cargo test --release -p seedq-e2e --test broker_failover -- \
  --include-ignored --test-threads 1 --nocapture
echo "cluster-check: broker failover tests passed in $((SECONDS - started))s"
