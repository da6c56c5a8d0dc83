#!/usr/bin/env bash
# What a gateway adds, against LiteLLM's proxy, in one run on this machine: a backend that
# answers at once (the example fast_backend), then the same load sent to it directly,
# through `lamina gateway` and through `litellm --config` (one worker), all on loopback.
# Prints start time, latency added at concurrency 1 (p50/p99, plain and time to first
# stream chunk), requests/s at concurrency 32, and resident memory; then the ratios.
#
#   bash bench/gateway/run.sh
#   N=500 SECONDS_LOAD=5 bash bench/gateway/run.sh    (quicker)
#
# Where redis-server is installed, a third gateway keeps its key limits in Redis
# (`state = "redis://..."`), so the table shows what the shared state adds per request.
#
# LiteLLM goes into the venv ~/.cache/lamina-ref/litellm-venv (pip install 'litellm[proxy]')
# unless VENV says otherwise; LITELLM_VERSION pins it. Env: N (2000 requests at
# concurrency 1; LiteLLM gets N/4), SECONDS_LOAD (10), CONCURRENCY (32), LAMINA (a built binary).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${VENV:-$HOME/.cache/lamina-ref/litellm-venv}"
if [ ! -x "$VENV/bin/litellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}"
fi
if [ -z "${LAMINA:-}" ]; then
  cargo build --release -q -p lamina-cli
  LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
fi
cargo build --release -q -p lamina-gateway --example fast_backend --example load
EXAMPLES="${CARGO_TARGET_DIR:-target}/release/examples"
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
exec python3 bench/gateway/compare.py --lamina "$LAMINA" --examples "$EXAMPLES" --litellm "$VENV/bin/litellm" \
  ${REDIS_SERVER:+--redis "$REDIS_SERVER"} --n "${N:-2000}" --seconds "${SECONDS_LOAD:-10}" --concurrency "${CONCURRENCY:-32}"
