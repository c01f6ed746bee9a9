#!/usr/bin/env bash
# Mutation testing with cargo-mutants: every mutant is built and run against the tests that
# exercise its code, one at a time. Two sets, each in its own output directory:
#
#   engine     the pure diff (src/plan/), the engine (src/engine/: observe, plan, apply), the
#              Secret contract (src/model/secret.rs) and the CLI's directory sink
#              (src/gitops/secrets_dir.rs), against the unit tests and gitops_behaviour,
#              secret_write_failures, gitops_examples
#              -> mutants.out/engine/mutants.out/
#   decisions  the shared connection resolver (src/policy/connection.rs), the operator's
#              decisions (ceilings, conditions and reasons, event reasons, offboarding, in-use
#              finalizers, the Secret ownership claim) and the providers' pure mappings
#              (Strapi, Directus: mapping, catalog, tag, capabilities; the ownership tag),
#              and what explain computes (src/model/effective.rs), against the unit tests
#              -> mutants.out/decisions/mutants.out/
#
# Each output has caught.txt, missed.txt, unviable.txt, timeout.txt; the README's "Mutation
# testing" section records the figures and why each surviving mutant is equivalent or left.
#
# Usage: scripts/mutants.sh [engine|decisions|all] [cargo-mutants arguments...]
# (default: all). cargo-mutants is installed once (cargo install --locked) if this version is
# missing. On a 2-core machine the engine set takes about an hour, the decisions set about as
# long. Extra arguments go to cargo-mutants, e.g. `--iterate` (skip mutants caught by the
# previous run) or `-F REGEX` (only matching mutants).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $VERSION"; then
  cargo install cargo-mutants --locked --version "$VERSION"
fi
mkdir -p mutants.out/engine mutants.out/decisions
set_name=${1:-all}
case "$set_name" in engine | decisions | all) shift || true ;; *) set_name=all ;; esac

engine() {
  nice -n 10 cargo mutants -j 1 -o mutants.out/engine \
    --file 'src/plan/**' --file 'src/engine/**' \
    --file src/model/secret.rs --file src/gitops/secrets_dir.rs \
    -C --lib -C --test=gitops_behaviour -C --test=secret_write_failures -C --test=gitops_examples \
    "$@"
}

# In files that also talk to the API server, only the decision functions (pure, unit-tested)
# are mutated; the rest is driven by the operator suite against the API emulator.
decisions() {
  nice -n 10 cargo mutants -j 1 -o mutants.out/decisions \
    --file src/policy/ceilings.rs --file src/policy/connection.rs \
    --file src/operator/offboarding.rs --file src/operator/status.rs \
    --file src/operator/report.rs --file src/operator/reconcile.rs \
    --file src/operator/events.rs \
    --file src/operator/dereference.rs --file src/operator/in_use.rs \
    --file src/operator/secrets.rs \
    --file src/providers/ownership_tag.rs --file src/model/effective.rs \
    --file 'src/providers/strapi/mapping.rs' --file 'src/providers/strapi/catalog.rs' \
    --file 'src/providers/strapi/tag.rs' --file 'src/providers/strapi/capabilities.rs' \
    --file 'src/providers/directus/mapping.rs' --file 'src/providers/directus/catalog.rs' \
    --file 'src/providers/directus/tag.rs' --file 'src/providers/directus/capabilities.rs' \
    -F '^src/(policy/(ceilings|connection)|operator/(offboarding|status)|providers/|model/effective)' \
    -F 'ReconcileError::reason|for Halt>::from|DereferenceError::reason' \
    -F '\b(rfc3339|EventReason::of|conditions|drift|next_look|stopped_status|merged)\b' \
    -F '\b(connections_in_use|read_secrets|finalizers_after|needs_its_secrets)\b' \
    -F '\b(owner_ref|owned_by|claim)\b' \
    -C --lib \
    "$@"
}

case "$set_name" in
  engine) engine "$@" ;;
  decisions) decisions "$@" ;;
  all) engine "$@" && decisions "$@" ;;
esac
