#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against the real server, doc tests, and a
# compile check of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
cargo test --doc
