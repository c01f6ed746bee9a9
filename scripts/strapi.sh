#!/usr/bin/env bash
# A real Strapi for keyward's `strapi` provider: its tests, its benchmark, and trying it by hand.
#
#   scripts/strapi.sh install        npm-install Strapi 5.54.0 once into the tool cache; print its dir
#   scripts/strapi.sh project DIR    write a minimal headless project (two content types) into DIR
#   scripts/strapi.sh run DIR        start the project in DIR in the foreground (HOST, PORT from env)
#   scripts/strapi.sh serve [PORT]   install, write .keyward/strapi, start it, register the first
#                                    admin, and print the connection to use (for trying it by hand)
#
# Pins (found by trying it here, see ../shared/design.md): 5.55.x does not resolve, better-sqlite3
# 13.x wants node 22, and better-sqlite3 compiles from source only with npm's nodedir pointing at
# the local node headers. The install (~2.5 min, ~720 MB) is cached under ~/.cache/keyward-tools
# and shared by every project through a node_modules symlink.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${KEYWARD_TOOLS:-$HOME/.cache/keyward-tools}
version=5.54.0
install_dir="$tools/strapi-$version"

install() {
  mkdir -p "$tools"
  # Tests start several Strapis at once: one installer at a time, the others wait for it.
  exec 9>"$tools/strapi-$version.lock"
  flock 9
  if [ ! -f "$install_dir/.installed" ]; then
    rm -rf "$install_dir"
    mkdir -p "$install_dir"
    cat >"$install_dir/package.json" <<JSON
{
  "name": "keyward-strapi-runtime",
  "private": true,
  "version": "0.0.0",
  "dependencies": {
    "@strapi/strapi": "$version",
    "@strapi/plugin-users-permissions": "$version",
    "better-sqlite3": "12.9.0",
    "react": "^18.3.1",
    "react-dom": "^18.3.1",
    "react-router-dom": "^6.30.0",
    "styled-components": "^6.1.0"
  }
}
JSON
    echo "installing Strapi $version into $install_dir (once; takes a few minutes)" >&2
    (cd "$install_dir" && npm_config_nodedir=/usr npm install --no-audit --no-fund --loglevel=error >&2)
    touch "$install_dir/.installed"
  fi
  flock -u 9
  echo "$install_dir"
}

project() {
  local dir=$1
  mkdir -p "$dir/config" "$dir/public/uploads" "$dir/src/api" "$dir/database/migrations"
  ln -sfn "$install_dir/node_modules" "$dir/node_modules"
  # `strapi start` looks for @strapi/strapi among the project's dependencies.
  cat >"$dir/package.json" <<JSON
{
  "name": "keyward-strapi",
  "private": true,
  "version": "0.1.0",
  "dependencies": {
    "@strapi/strapi": "$version",
    "@strapi/plugin-users-permissions": "$version",
    "better-sqlite3": "12.9.0"
  }
}
JSON
  cat >"$dir/config/server.js" <<'JS'
module.exports = ({ env }) => ({
  host: env('HOST', '127.0.0.1'),
  port: env.int('PORT', 1337),
  app: { keys: env.array('APP_KEYS') },
});
JS
  cat >"$dir/config/admin.js" <<'JS'
// Headless: the admin REST API under /admin works without the admin panel's build.
module.exports = ({ env }) => ({
  serveAdminPanel: false,
  auth: { secret: env('ADMIN_JWT_SECRET') },
  apiToken: { salt: env('API_TOKEN_SALT') },
  transfer: { token: { salt: env('TRANSFER_TOKEN_SALT') } },
  // Sign-in stays rate-limited (Strapi's 5 per 5 minutes by default); each keyward CLI run signs in
  // once, and the tests run the CLI many times against one Strapi.
  rateLimit: { max: env.int('ADMIN_LOGIN_RATE_MAX', 5) },
});
JS
  cat >"$dir/config/database.js" <<'JS'
const path = require('path');
module.exports = () => ({
  connection: {
    client: 'sqlite',
    connection: { filename: path.join(__dirname, '..', '.tmp', 'data.db') },
    useNullAsDefault: true,
  },
});
JS
  cat >"$dir/config/middlewares.js" <<'JS'
module.exports = [
  'strapi::errors', 'strapi::security', 'strapi::cors', 'strapi::poweredBy', 'strapi::query',
  'strapi::body', 'strapi::session', 'strapi::favicon', 'strapi::public',
];
JS
  cat >"$dir/config/plugins.js" <<'JS'
module.exports = ({ env }) => ({ 'users-permissions': { config: { jwtSecret: env('JWT_SECRET') } } });
JS
  # Fresh random secrets per project, in the .env that Strapi reads at start.
  if [ ! -f "$dir/.env" ]; then
    (
      umask 077
      r() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
      printf 'APP_KEYS=%s,%s\nADMIN_JWT_SECRET=%s\nAPI_TOKEN_SALT=%s\nTRANSFER_TOKEN_SALT=%s\nJWT_SECRET=%s\n' \
        "$(r)" "$(r)" "$(r)" "$(r)" "$(r)" "$(r)" >"$dir/.env"
    )
  fi
  echo 'module.exports = { register() {}, bootstrap() {} };' >"$dir/src/index.js"
  content_type "$dir" article articles Article '"title": { "type": "string", "required": true }, "body": { "type": "text" }'
  content_type "$dir" author authors Author '"name": { "type": "string", "required": true }'
}

# content_type DIR SINGULAR PLURAL DISPLAY ATTRIBUTES: a collection type with the core controller,
# router and service, without draft & publish (every entry is visible to `find`).
content_type() {
  local dir=$1 singular=$2 plural=$3 display=$4 attributes=$5
  local api="$dir/src/api/$singular"
  mkdir -p "$api/content-types/$singular" "$api/controllers" "$api/routes" "$api/services"
  cat >"$api/content-types/$singular/schema.json" <<JSON
{
  "kind": "collectionType",
  "collectionName": "$plural",
  "info": { "singularName": "$singular", "pluralName": "$plural", "displayName": "$display" },
  "options": { "draftAndPublish": false },
  "attributes": { $attributes }
}
JSON
  local uid="api::$singular.$singular"
  echo "module.exports = require('@strapi/strapi').factories.createCoreController('$uid');" >"$api/controllers/$singular.js"
  echo "module.exports = require('@strapi/strapi').factories.createCoreRouter('$uid');" >"$api/routes/$singular.js"
  echo "module.exports = require('@strapi/strapi').factories.createCoreService('$uid');" >"$api/services/$singular.js"
}

run() {
  local dir=$1
  cd "$dir"
  export NODE_ENV=production STRAPI_TELEMETRY_DISABLED=true STRAPI_DISABLE_UPDATE_NOTIFICATION=true
  exec node "$dir/node_modules/@strapi/strapi/bin/strapi.js" start
}

serve() {
  local port=${1:-1337} dir="$root/.keyward/strapi"
  install >/dev/null
  [ -f "$dir/package.json" ] || project "$dir"
  local email=admin@keyward.test password=${STRAPI_ADMIN_PASSWORD:-Keyward-admin-1}
  (HOST=127.0.0.1 PORT=$port run "$dir") &
  local pid=$!
  trap 'kill $pid 2>/dev/null' EXIT INT TERM
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/_health" 2>/dev/null && break
    sleep 0.5
  done
  # The first admin; on later starts the project already has one and this answers 400.
  curl -sS -o /dev/null -H 'content-type: application/json' \
    -d "{\"firstname\":\"keyward\",\"lastname\":\"admin\",\"email\":\"$email\",\"password\":\"$password\"}" \
    "http://127.0.0.1:$port/admin/register-admin" || true
  cat <<EOF
Strapi $version on http://127.0.0.1:$port (project in $dir)
admin: $email / $password  (use these in the CmsConnection's credential Secret)
Ctrl-C stops it.
EOF
  wait $pid
}

case "${1:-}" in
  install) install ;;
  project) [ $# -eq 2 ] || { echo "usage: $0 project DIR" >&2; exit 64; }; install >/dev/null; project "$2" ;;
  run) [ $# -eq 2 ] || { echo "usage: $0 run DIR" >&2; exit 64; }; run "$2" ;;
  serve) serve "${2:-}" ;;
  *) sed -n '2,9p' "$0" >&2; exit 64 ;;
esac
