#!/usr/bin/env bash
# Soak run of `keyward cms serve` (release build, loopback only) under mixed load.
# Usage: scripts/soak.sh [seconds]   (default 600)
# Prints requests, unexpected answers (must be 0), p50/p99 latency and RSS at start, after
# warm-up and at the end (growth after warm-up must stay under 20 %); exits 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYWARD_SOAK_SECS=${1:-600} cargo bench --bench soak
