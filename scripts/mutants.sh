#!/usr/bin/env bash
# Mutation testing of the pure diff (src/plan/) and the engine (src/engine/) with cargo-mutants:
# every mutant is built and run against the test targets that exercise those modules (the unit
# tests, gitops_behaviour, secret_write_failures, gitops_examples), one at a time. Results go to
# mutants.out/ (caught.txt, missed.txt, unviable.txt, timeout.txt); the README's "Mutation
# testing" section records the figures and why each surviving mutant is equivalent.
#
# cargo-mutants is installed once (cargo install --locked) if this version is missing. A full
# run takes about an hour on a 2-core machine. Extra arguments go to cargo-mutants, e.g.
# `--iterate` (skip mutants caught by the previous run) or `-F REGEX` (only matching mutants).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $VERSION"; then
  cargo install cargo-mutants --locked --version "$VERSION"
fi
exec nice -n 10 cargo mutants -j 1 \
  --file 'src/plan/**' --file 'src/engine/**' \
  -C --lib -C --test=gitops_behaviour -C --test=secret_write_failures -C --test=gitops_examples \
  "$@"
