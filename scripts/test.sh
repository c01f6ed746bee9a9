#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against the real servers (the reference CMS
# in-process, a real Strapi from npm for the strapi provider), doc tests, and a compile check of
# the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
# Strapi 5.54.0 from npm, once per machine (cached in ~/.cache/keyward-tools); tests/strapi.rs
# starts a fresh project per test.
bash scripts/strapi.sh install >/dev/null
cargo test --all-targets
cargo test --doc
