#!/usr/bin/env bash
# Checks a hosted CMS provider against your own account, with keyward itself: applies a policy
# with one throwaway key, proves its value answers 200 where it was granted, removes the key
# (apply --prune), proves the value now answers 401, and leaves nothing behind.
#
#   scripts/live-check.sh datocms | contentful
#
# datocms needs:
#   DATOCMS_API_TOKEN   an API token whose role may manage API tokens and roles, with access to
#                       the Content Management API (see the README's DatoCMS section)
#   DATOCMS_MODEL       optional: the API key of a model; the throwaway key may read only it
#   DATOCMS_CMA_URL     default https://site-api.datocms.com
#   DATOCMS_CDA_URL     default https://graphql.datocms.com
# contentful needs:
#   CONTENTFUL_MANAGEMENT_TOKEN  a management token of a member who may manage the space's API
#                                keys (see the README's Contentful section)
#   CONTENTFUL_SPACE_ID          the space
#   CONTENTFUL_ENVIRONMENT       default master: the environment the throwaway key reads
#   CONTENTFUL_CMA_URL           default https://api.contentful.com
#   CONTENTFUL_CDA_URL           default https://cdn.contentful.com
# both:
#   KEYWARD_BIN         the keyward binary (default: cargo run --release)
#
# The throwaway key's value stays in a temporary directory that is removed on exit; it is never
# printed (it reaches curl in a header file, not on a command line).
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

# Writes the bearer header of the key value in Secret manifest $1 to a private file; prints it.
auth_header() {
  local header="$work/auth-header"
  (umask 077; printf 'Authorization: Bearer %s\n' "$(sed -n 's/^  apiKey: //p' "$1" | base64 -d)" >"$header")
  echo "$header"
}

# DatoCMS: the project through the Content Delivery API.
datocms_status() {
  curl -sS -o /dev/null -w '%{http_code}' -X POST "$cda" -H "@$(auth_header "$1")" \
    -H 'Content-Type: application/json' -d '{"query":"{ _site { locales } }"}'
}

# Contentful: the environment's content types through the Content Delivery API.
contentful_status() {
  curl -sS -o /dev/null -w '%{http_code}' -H "@$(auth_header "$1")" \
    "$cda/environments/$environment/content_types?limit=1"
}

# Waits up to 30 s for the value in Secret $2 to answer $3 through `$1_status`.
expect_status() {
  local status
  for _ in $(seq 15); do
    status=$("$1_status" "$2")
    [ "$status" = "$3" ] && return 0
    sleep 2
  done
  die "the key answered $status, not $3"
}

# The check itself, for provider $1 with a key declaring rights $2 (YAML lines).
check() {
  local provider=$1 rights=$2
  work=$(mktemp -d)
  trap 'keyward apply -f "$work/empty.yaml" --secrets-dir "$work/out" --prune >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  local head="apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: live-check, namespace: keyward-live-check}
spec:"
  printf '%s\n  keys:\n    - name: throwaway\n      description: made by scripts/live-check.sh, removed by it\n%s\n      secret: {name: throwaway}\n' \
    "$head" "$rights" >"$work/one.yaml"
  printf '%s\n  keys: []\n' "$head" >"$work/empty.yaml"
  export KEYWARD_CMS_PROVIDER=$provider
  unset KEYWARD_CONFIG

  keyward apply -f "$work/one.yaml" --secrets-dir "$work/out" >/dev/null
  local value="$work/out/keyward-live-check.throwaway.yaml"
  [ -s "$value" ] || die "apply wrote no Secret $value"
  expect_status "$provider" "$value" 200
  echo "live-check: the new key answers 200"
  local plan
  plan=$(keyward plan -f "$work/one.yaml" --secrets-dir "$work/out") \
    || die "a second plan is not empty: $plan"
  echo "live-check: a second plan has nothing to do"

  keyward apply -f "$work/empty.yaml" --secrets-dir "$work/out" --prune >/dev/null
  expect_status "$provider" "$value" 401
  echo "live-check: the removed key answers 401"
  echo "live-check: $provider OK against $KEYWARD_CMS_URL"
}

case "${1:-}" in
  datocms)
    [ -n "${DATOCMS_API_TOKEN:-}" ] || die "set DATOCMS_API_TOKEN (see the header of $0)"
    export KEYWARD_CMS_URL=${DATOCMS_CMA_URL:-https://site-api.datocms.com}
    export KEYWARD_CMS_TOKEN=$DATOCMS_API_TOKEN
    cda=${DATOCMS_CDA_URL:-https://graphql.datocms.com}
    if [ -n "${DATOCMS_MODEL:-}" ]; then
      check datocms "      apiPermissions: [{api: \"$DATOCMS_MODEL\", permissions: [GET]}]"
    else
      check datocms "      defaultPermissions: [GET]"
    fi
    ;;
  contentful)
    [ -n "${CONTENTFUL_MANAGEMENT_TOKEN:-}" ] && [ -n "${CONTENTFUL_SPACE_ID:-}" ] \
      || die "set CONTENTFUL_MANAGEMENT_TOKEN and CONTENTFUL_SPACE_ID (see the header of $0)"
    environment=${CONTENTFUL_ENVIRONMENT:-master}
    export KEYWARD_CMS_URL="${CONTENTFUL_CMA_URL:-https://api.contentful.com}/spaces/$CONTENTFUL_SPACE_ID"
    export KEYWARD_CMS_TOKEN=$CONTENTFUL_MANAGEMENT_TOKEN
    cda="${CONTENTFUL_CDA_URL:-https://cdn.contentful.com}/spaces/$CONTENTFUL_SPACE_ID"
    check contentful "      defaultPermissions: [GET]
      environments: [\"$environment\"]"
    ;;
  *) sed -n '2,25p' "$0" >&2; exit 64 ;;
esac
