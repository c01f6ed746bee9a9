#!/usr/bin/env bash
# Side by side, in one run on this machine: the reference CMS (`keyward cms serve`), a real
# Strapi 5.54.0 (scripts/strapi.sh) and a real Directus 11.17.4 (scripts/directus.sh), each with
# the same content API, measured for
#   1. authenticated GETs of one entry per second and p99 latency (wrk, with a GET-only key);
#   2. `keyward apply` of the same 50-key policy set (first apply, then a no-change apply).
# The policy set declares no expiresAfter (Directus tokens never expire): the reference CMS gives
# those keys its default year, Strapi an unlimited lifespan.
# Usage: scripts/side-by-side.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet
bash scripts/strapi.sh install >/dev/null
bash scripts/directus.sh install >/dev/null
bin=$PWD/target/release/keyward

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
json() { python3 -c "import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split('.'): d=d[k]
print(d)" "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the reference CMS -------------------------------------------------------------------------
admin="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEYWARD_CMS_ADMIN_TOKEN=$admin KEYWARD_LOG=warn \
  "$bin" cms serve --data "$dir/ref" --listen 127.0.0.1:0 --key-rate 10000000 >"$dir/ref.out" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$dir/ref.out" 2>/dev/null && break; sleep 0.1; done
ref=$(sed -n 's/^listening on //p' "$dir/ref.out")
for api in articles authors; do
  curl -fsS -X PUT -H "Authorization: Bearer $admin" "$ref/v1/apis/$api" >/dev/null
done
ref_entry=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"title":"side by side","body":"a published entry of ordinary size"}' "$ref/api/articles" | json id)
ref_key=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"load","defaultPermissions":["GET"]}' "$ref/v1/keys" | json key)

# --- Strapi ------------------------------------------------------------------------------------
bash scripts/strapi.sh project "$dir/strapi" >/dev/null
port=$(free_port)
HOST=127.0.0.1 PORT=$port ADMIN_LOGIN_RATE_MAX=1000 bash scripts/strapi.sh run "$dir/strapi" >"$dir/strapi.log" 2>&1 &
pids+=($!)
strapi=http://127.0.0.1:$port
for _ in $(seq 600); do curl -fsS -o /dev/null "$strapi/_health" 2>/dev/null && break; sleep 0.2; done
email=bench@keyward.test password=Keyward-bench-1
jwt=$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"firstname\":\"bench\",\"lastname\":\"bench\",\"email\":\"$email\",\"password\":\"$password\"}" \
  "$strapi/admin/register-admin" | json data.token)
token() { # type, permissions JSON
  curl -fsS -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench-$RANDOM$RANDOM\",\"type\":\"$1\",\"permissions\":$2,\"lifespan\":null}" \
    "$strapi/admin/api-tokens" | json data.accessKey
}
writer=$(token custom '["api::article.article.create"]')
strapi_entry=$(curl -fsS -X POST -H "Authorization: Bearer $writer" -H 'Content-Type: application/json' \
  -d '{"data":{"title":"side by side","body":"a published entry of ordinary size"}}' \
  "$strapi/api/articles" | json data.documentId)
strapi_key=$(token custom '["api::article.article.find","api::article.article.findOne"]')
# For comparison: Strapi's read-only type skips the per-request permission check of custom tokens.
strapi_ro_key=$(token read-only '[]')

# --- Directus ----------------------------------------------------------------------------------
dx_token=$(bash scripts/directus.sh project "$dir/directus")
dx_port=$(free_port)
PORT=$dx_port bash scripts/directus.sh run "$dir/directus" >"$dir/directus.log" 2>&1 &
pids+=($!)
directus=http://127.0.0.1:$dx_port
for _ in $(seq 600); do curl -fsS -o /dev/null "$directus/server/health" 2>/dev/null && break; sleep 0.2; done
bash scripts/directus.sh collections "$directus" "$dx_token"
dx_entry=$(curl -fsS -H "Authorization: Bearer $dx_token" -H 'Content-Type: application/json' \
  -d '{"title":"side by side","status":"published"}' "$directus/items/articles" | json data.id)
# A key as keyward makes it: a user with a static token and a policy of its own that reads
# published articles.
dx_key="bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
dx_read='{"collection":"articles","action":"read","fields":["*"],"permissions":{"status":{"_in":["published"]}}}'
curl -fsS -o /dev/null -H "Authorization: Bearer $dx_token" -H 'Content-Type: application/json' \
  -d "{\"first_name\":\"bench\",\"status\":\"active\",\"token\":\"$dx_key\",\"policies\":{\"create\":[{\"policy\":{\"name\":\"bench\",\"admin_access\":false,\"app_access\":false,\"permissions\":[$dx_read]}}],\"update\":[],\"delete\":[]}}" \
  "$directus/users"

# --- 1. authenticated GETs ---------------------------------------------------------------------
load() { # name url key
  echo "== wrk ${secs}s, ${conns} connections, 2 threads: $1 GET $2" >&2
  wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $3" "$2" >"$dir/wrk.$1"
  cat "$dir/wrk.$1" >&2
  local rps p99 non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/wrk.$1")
  p99=$(awk '$1=="99%" {print $2}' "$dir/wrk.$1")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.$1")
  echo "$rps $p99 ${non2xx:-0}"
}
read -r ref_rps ref_p99 ref_bad < <(load reference "$ref/api/articles/$ref_entry" "$ref_key")
read -r st_rps st_p99 st_bad < <(load strapi "$strapi/api/articles/$strapi_entry" "$strapi_key")
read -r ro_rps ro_p99 ro_bad < <(load strapi-read-only "$strapi/api/articles/$strapi_entry" "$strapi_ro_key")
read -r dx_rps dx_p99 dx_bad < <(load directus "$directus/items/articles/$dx_entry" "$dx_key")
st_timeouts=$(awk '/Socket errors/ {print $NF}' "$dir/wrk.strapi")
dx_timeouts=$(awk '/Socket errors/ {print $NF}' "$dir/wrk.directus")
if [ "$ref_bad" != 0 ] || [ "$st_bad" != 0 ] || [ "$ro_bad" != 0 ] || [ "$dx_bad" != 0 ]; then
  echo "non-2xx answers during the load (reference $ref_bad, strapi $st_bad, directus $dx_bad)" >&2
  exit 1
fi

# --- 2. keyward apply of the same 50 keys ------------------------------------------------------
mkdir -p "$dir/policies"
for p in $(seq 1 10); do
  {
    printf 'apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: app%s, namespace: bench}\nspec:\n  keys:\n' "$p"
    for k in 1 2 3 4 5; do
      case $k in
        1|2|3) perms='defaultPermissions: [GET]' ;;
        4) perms='apiPermissions: [{api: articles, permissions: [GET, POST, PUT]}]' ;;
        5) perms='apiPermissions: [{api: authors, permissions: [GET]}, {api: articles, permissions: [POST]}]' ;;
      esac
      printf '    - name: key%s\n      %s\n      secret: {name: app%s-key%s}\n' "$k" "$perms" "$p" "$k"
    done
  } >"$dir/policies/app$p.yaml"
done
timed() { # label, then the command; prints seconds
  local t0 t1
  t0=$(date +%s.%N)
  "${@:2}" >"$dir/apply.$1" 2>&1 || { cat "$dir/apply.$1" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.2f}')"
}
apply_ref() { KEYWARD_CMS_URL=$ref KEYWARD_CMS_TOKEN=$admin KEYWARD_LOG=warn "$bin" apply -f "$dir/policies" --secrets-dir "$dir/secrets-ref"; }
apply_strapi() { KEYWARD_CMS_URL=$strapi KEYWARD_CMS_TOKEN=$email:$password KEYWARD_CMS_PROVIDER=strapi KEYWARD_LOG=warn "$bin" apply -f "$dir/policies" --secrets-dir "$dir/secrets-strapi"; }
apply_directus() { KEYWARD_CMS_URL=$directus KEYWARD_CMS_TOKEN=$dx_token KEYWARD_CMS_PROVIDER=directus KEYWARD_LOG=warn "$bin" apply -f "$dir/policies" --secrets-dir "$dir/secrets-directus"; }
ref_first=$(timed ref1 apply_ref)
ref_again=$(timed ref2 apply_ref)
st_first=$(timed st1 apply_strapi)
st_again=$(timed st2 apply_strapi)
dx_first=$(timed dx1 apply_directus)
dx_again=$(timed dx2 apply_directus)
grep -q "no changes" "$dir/apply.ref2" && grep -q "no changes" "$dir/apply.st2" &&
  grep -q "no changes" "$dir/apply.dx2" || {
  echo "a second apply still had changes" >&2; exit 1; }
created_ref=$(ls "$dir/secrets-ref" | wc -l) created_st=$(ls "$dir/secrets-strapi" | wc -l)
created_dx=$(ls "$dir/secrets-directus" | wc -l)

ms() { python3 -c "import sys,re; v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v); n=float(m[1]); print(n/1000 if m[2]=='us' else n if m[2]=='ms' else n*1000)" "$1"; }
ratio() { python3 -c "import sys; r=float(sys.argv[1])/float(sys.argv[2]); print(f'{r:.2g}x' if r < 10 else f'{r:.0f}x')" "$1" "$2"; }
cat <<EOF

| same run, same 2 cores                               | reference CMS | Strapi 5.54.0 | Strapi / reference |
|------------------------------------------------------|---------------|---------------|--------------------|
| authenticated GETs/s (wrk ${secs}s, ${conns} conns)  | $ref_rps | $st_rps | $(ratio "$st_rps" "$ref_rps") |
| p99 latency of those GETs                            | $ref_p99 | $st_p99 | $(ratio "$(ms "$st_p99")" "$(ms "$ref_p99")") |
| same GETs with a Strapi read-only token              |  | $ro_rps/s, p99 $ro_p99 | $(ratio "$ro_rps" "$ref_rps") |
| keyward apply, 50 new keys ($created_ref / $created_st Secrets) | ${ref_first}s | ${st_first}s | $(ratio "$st_first" "$ref_first") |
| keyward apply, nothing to change (0 writes)          | ${ref_again}s | ${st_again}s | $(ratio "$st_again" "$ref_again") |
EOF
echo "wrk timeouts (2 s) against Strapi with the custom token: ${st_timeouts:-0}"
cat <<EOF2

| same run, same 2 cores                               | reference CMS | Directus 11.17.4 | Directus / reference |
|------------------------------------------------------|---------------|------------------|----------------------|
| authenticated GETs/s (wrk ${secs}s, ${conns} conns)  | $ref_rps | $dx_rps | $(ratio "$dx_rps" "$ref_rps") |
| p99 latency of those GETs                            | $ref_p99 | $dx_p99 | $(ratio "$(ms "$dx_p99")" "$(ms "$ref_p99")") |
| keyward apply, 50 new keys ($created_ref / $created_dx Secrets) | ${ref_first}s | ${dx_first}s | $(ratio "$dx_first" "$ref_first") |
| keyward apply, nothing to change (0 writes)          | ${ref_again}s | ${dx_again}s | $(ratio "$dx_again" "$ref_again") |
EOF2
echo "wrk timeouts (2 s) against Directus: ${dx_timeouts:-0}"
