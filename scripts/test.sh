#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against the real servers (the reference CMS
# in-process, a real Strapi and a real Directus from npm for their providers), doc tests, and a
# compile check of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
# Strapi 5.54.0 from npm, once per machine (cached in ~/.cache/keyward-tools); tests/strapi.rs
# starts a fresh project per test.
bash scripts/strapi.sh install >/dev/null
# Directus 11.17.4 and Node 22 from npm, once per machine (same cache); tests/directus.rs starts a
# fresh project per test.
bash scripts/directus.sh install >/dev/null
# The microCMS and Kontent.ai clients from npm (same cache): tests/console_keys.rs checks the
# stand-in of their content APIs with them.
bash scripts/vendor-sdks.sh install >/dev/null
cargo test --all-targets
cargo test --doc
