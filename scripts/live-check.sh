#!/usr/bin/env bash
# Checks a hosted CMS provider against your own account, with keyward itself: applies a policy
# with one throwaway key, proves its value answers 200 where it was granted, removes the key
# (apply --prune), proves the value now answers 401, and leaves nothing behind.
#
#   scripts/live-check.sh datocms
#
# datocms needs:
#   DATOCMS_API_TOKEN   an API token whose role may manage API tokens and roles, with access to
#                       the Content Management API (see the README's DatoCMS section)
#   DATOCMS_MODEL       optional: the API key of a model; the throwaway key may read only it
#                       (default: every model)
#   DATOCMS_CMA_URL     default https://site-api.datocms.com
#   DATOCMS_CDA_URL     default https://graphql.datocms.com
#   KEYWARD_BIN         the keyward binary (default: cargo run --release)
#
# The throwaway key's value stays in a temporary directory that is removed on exit; it is never
# printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "live-check: $*" >&2; exit 1; }

keyward() {
  if [ -n "${KEYWARD_BIN:-}" ]; then
    "$KEYWARD_BIN" "$@"
  else
    cargo run --quiet --release --manifest-path "$root/Cargo.toml" -- "$@"
  fi
}

# The status of a Content Delivery API query made with the key value in the Secret manifest $1
# (the value goes to curl in a header file, never on a command line).
cda_status() {
  local header="$work/auth-header"
  (umask 077; printf 'Authorization: Bearer %s\n' "$(sed -n 's/^  apiKey: //p' "$1" | base64 -d)" >"$header")
  curl -sS -o /dev/null -w '%{http_code}' -X POST "$cda" -H "@$header" \
    -H 'Content-Type: application/json' -d '{"query":"{ _site { locales } }"}'
}

datocms() {
  [ -n "${DATOCMS_API_TOKEN:-}" ] || die "set DATOCMS_API_TOKEN (see the header of $0)"
  local cma=${DATOCMS_CMA_URL:-https://site-api.datocms.com}
  cda=${DATOCMS_CDA_URL:-https://graphql.datocms.com}
  local rights
  work=$(mktemp -d)
  trap 'keyward apply -f "$work/empty.yaml" --secrets-dir "$work/out" --prune >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  if [ -n "${DATOCMS_MODEL:-}" ]; then
    rights="      apiPermissions: [{api: \"$DATOCMS_MODEL\", permissions: [GET]}]"
  else
    rights="      defaultPermissions: [GET]"
  fi
  local head="apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: live-check, namespace: keyward-live-check}
spec:"
  printf '%s\n  keys:\n    - name: throwaway\n      description: made by scripts/live-check.sh, removed by it\n%s\n      secret: {name: throwaway}\n' \
    "$head" "$rights" >"$work/one.yaml"
  printf '%s\n  keys: []\n' "$head" >"$work/empty.yaml"
  export KEYWARD_CMS_PROVIDER=datocms KEYWARD_CMS_URL=$cma KEYWARD_CMS_TOKEN=$DATOCMS_API_TOKEN
  unset KEYWARD_CONFIG

  keyward apply -f "$work/one.yaml" --secrets-dir "$work/out" >/dev/null
  local value="$work/out/keyward-live-check.throwaway.yaml"
  [ -s "$value" ] || die "apply wrote no Secret $value"
  local status
  # A new token may take a moment to answer everywhere.
  for _ in 1 2 3 4 5; do
    status=$(cda_status "$value")
    [ "$status" = 200 ] && break
    sleep 2
  done
  [ "$status" = 200 ] || die "the new key answered $status, not 200"
  echo "live-check: the new key answers 200"
  local plan
  plan=$(keyward plan -f "$work/one.yaml" --secrets-dir "$work/out") \
    || die "a second plan is not empty: $plan"
  echo "live-check: a second plan has nothing to do"

  keyward apply -f "$work/empty.yaml" --secrets-dir "$work/out" --prune >/dev/null
  status=$(cda_status "$value")
  [ "$status" = 401 ] || die "the removed key answered $status, not 401"
  echo "live-check: the removed key answers 401"
  echo "live-check: datocms OK against $cma"
}

case "${1:-}" in
  datocms) datocms ;;
  *) sed -n '2,19p' "$0" >&2; exit 64 ;;
esac
