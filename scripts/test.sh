#!/usr/bin/env bash
# The README's second command: runs every test against the real services on this machine.
#
#   scripts/test.sh            services, GPU toolchain (if provided), fmt + clippy, build, all
#                              tests, short soak
#
# The end-to-end tests (crate `e2e`) spawn the real seedq-producer and seedq-consumer binaries,
# which they find next to their own test executable (target/release/); that is why the binaries
# are built first with the same profile. SEEDQ_BIN_DIR overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/services.sh"

# NVRTC / hipcc installs for the kernel-source tests, where the GPU engineer ships them.
if [ -x "$ROOT/scripts/ci-gpu-toolchain.sh" ]; then
  "$ROOT/scripts/ci-gpu-toolchain.sh"
fi

# Prometheus and promtool for the monitoring check (e2e operations.rs), where apt can bring them;
# without them that test says SKIP with the reason.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "test.sh: could not install prometheus: the monitoring check will be skipped"
fi

# The test-only fault-injecting backend (`seedq-consumer --inject-fault`, e2e quarantine.rs):
# every cargo command below takes the same features, so the binaries, the tests and clippy see
# one build. A release package is built without it (demo.sh, install-node.sh, the Dockerfiles).
FEATURES=(--features seedq-consumer/fault-injection)

# Format and lints first: quick, and a red run should say so before the long build.
cargo fmt --all --check
cargo clippy --workspace --all-targets --release "${FEATURES[@]}" -- -D warnings

# One profile for everything: the e2e tests sieve millions of seeds and time nothing, but the
# distribution-overhead check (scripts/bench-e2e.sh) needs release code anyway.
cargo build --workspace --bins --release "${FEATURES[@]}"
cargo test --workspace --release "${FEATURES[@]}" -- ${SEEDQ_TEST_ARGS:-}

# A short fault-injection soak (kills and broker-side disconnects during a job).
SEEDQ_SOAK_ROUNDS="${SEEDQ_SOAK_ROUNDS:-1}" "$ROOT/scripts/soak.sh" --short
