#!/usr/bin/env bash
# Load run: authenticated GETs of one entry against `keyward cms serve` on loopback, with wrk.
# Usage: scripts/load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet

dir=$(mktemp -d)
out="$dir/stdout"
admin="load-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEYWARD_CMS_ADMIN_TOKEN=$admin KEYWARD_LOG=warn \
  target/release/keyward cms serve --data "$dir/data" --listen 127.0.0.1:0 --key-rate 10000000 >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do grep -q '^listening on ' "$out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$out")

json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
curl -fsS -X PUT -H "Authorization: Bearer $admin" "$url/v1/apis/blog" >/dev/null
id=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"title":"load test","body":"a published entry of ordinary size"}' "$url/api/blog" | json id)
key=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"load","defaultPermissions":["GET"]}' "$url/v1/keys" | json key)

echo "wrk: ${secs}s, ${conns} connections, 2 threads, GET $url/api/blog/$id with a content key"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $key" "$url/api/blog/$id"
