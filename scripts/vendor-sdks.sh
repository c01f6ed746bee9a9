#!/usr/bin/env bash
# The vendors' own packages, from npm, that keyward's stand-ins are checked against:
# - the content-API clients of the CMSes whose keys are made in their consoles:
#   tests/console_keys.rs runs them against the stand-in to check that it answers what the
#   vendor's own client sends and reads, and that keyward's requests are the client's;
# - DatoCMS's and Contentful's management clients (DatoCMS's resources.json and RawApiTypes,
#   Contentful's entity types) and TypeScript: tests/datocms.rs and tests/contentful.rs check
#   every exchange with the stand-ins against them.
#
#   scripts/vendor-sdks.sh install           npm-install the packages once into the tool cache;
#                                            print the dir
#   scripts/vendor-sdks.sh run SCRIPT ARGS   run SCRIPT with Node 22 (scripts/directus.sh node),
#                                            the clients on its NODE_PATH
#
# Pins: microcms-js-sdk 3.5.1; @kontent-ai/delivery-sdk 16.4.3 (the newest whose pinned
# @kontent-ai/core-sdk the registry here has); @datocms/cma-client 5.8.1; contentful-management 12.18.0; typescript 5.9.3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${KEYWARD_TOOLS:-$HOME/.cache/keyward-tools}
dir="$tools/vendor-sdks-3"

install() {
  mkdir -p "$tools"
  exec 9>"$dir.lock"
  flock 9
  if [ ! -f "$dir/.installed" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/package.json" <<JSON
{
  "name": "keyward-vendor-sdks",
  "private": true,
  "version": "0.0.0",
  "dependencies": {
    "microcms-js-sdk": "3.5.1",
    "@kontent-ai/delivery-sdk": "16.4.3",
    "@datocms/cma-client": "5.8.1",
    "contentful-management": "12.18.0",
    "typescript": "5.9.3"
  }
}
JSON
    echo "installing the vendors' packages into $dir (once)" >&2
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
    touch "$dir/.installed"
  fi
  flock -u 9
  echo "$dir"
}

case "${1:-}" in
  install) install ;;
  run)
    [ $# -ge 2 ] || { echo "usage: $0 run SCRIPT ARGS..." >&2; exit 64; }
    install >/dev/null
    node=$(bash "$root/scripts/directus.sh" node)
    shift
    NODE_PATH="$dir/node_modules" exec "$node" "$@"
    ;;
  *) sed -n '2,16p' "$0" >&2; exit 64 ;;
esac
