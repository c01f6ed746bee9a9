#!/usr/bin/env bash
# The keyward container image, assembled here without pulling a base image: the host-built
# release binary, the shared libraries it links, CA certificates, and a passwd with the nonroot
# user 65532, written as an OCI archive (target/image/keyward.oci.tar) by scripts/oci_image.py.
# Where a registry is reachable, `docker build .` (the Dockerfile) builds the equivalent image.
#
#   bash scripts/image.sh          build target/image/keyward.oci.tar
#   bash scripts/image.sh check    build it, unpack it and run it in a chroot as uid 65532 (root):
#                                  `keyward --version`, and `keyward cms serve` answering requests
#
# Push it with skopeo: skopeo copy oci-archive:target/image/keyward.oci.tar docker://REGISTRY/keyward:TAG
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/image
archive=$out/keyward.oci.tar

build() {
  cargo build --release --locked --bin keyward
  local root=$out/rootfs
  rm -rf "$root"
  mkdir -p "$root"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
  cp target/release/keyward "$root/usr/local/bin/keyward"
  # The shared libraries the binary links, as regular files at the paths the loader expects.
  for lib in $(ldd target/release/keyward | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  if [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
    apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null
  fi
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot" 2>/dev/null || true
  python3 scripts/oci_image.py build "$root" "$archive" \
    --user 65532 --entrypoint /usr/local/bin/keyward --tag "$version" \
    --label "org.opencontainers.image.title=keyward" \
    --label "org.opencontainers.image.source=https://github.com/keyward/keyward" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
}

check() {
  [ "$(id -u)" = 0 ] || { echo "image check: needs root (chroot)" >&2; exit 1; }
  build
  tmp=$(mktemp -d)
  trap 'kill "${pid:-0}" 2>/dev/null; rm -rf "${tmp:-}"' EXIT
  python3 scripts/oci_image.py unpack "$archive" "$tmp/root"
  python3 scripts/oci_image.py config "$archive" >"$tmp/config.json"
  python3 - "$tmp/config.json" "$version" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["config"]
assert c["User"] == "65532", c
assert c["Entrypoint"] == ["/usr/local/bin/keyward"], c
assert c["Labels"]["org.opencontainers.image.version"] == sys.argv[2], c
assert c["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0", c
assert c["Labels"]["org.opencontainers.image.source"], c
PY
  # An empty environment: nothing of this host's but the kernel reaches the binary.
  local run=(env -i "$(command -v chroot)" --userspec=65532:65532 "$tmp/root" /usr/local/bin/keyward)
  local v
  v=$("${run[@]}" --version)
  [ "$v" = "keyward $version" ] || { echo "image check: --version printed '$v'" >&2; exit 1; }
  "${run[@]}" cms serve --data /tmp/data --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$tmp/out" 2>/dev/null && break; sleep 0.1; done
  local url token
  url=$(sed -n 's/^listening on //p' "$tmp/out")
  [ -n "$url" ] || { echo "image check: cms serve did not start:" >&2; cat "$tmp/err" >&2; exit 1; }
  token=$(cat "$tmp/root/tmp/data/admin-token")
  curl -fsS "$url/healthz" | grep -q ok
  curl -fsS -X PUT -H "Authorization: Bearer $token" "$url/v1/apis/blog" | grep -q '"blog"'
  curl -fsS -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"reader","defaultPermissions":["GET"]}' "$url/v1/keys" | grep -q '"key":"kw_'
  [ "$(stat -c %u "$tmp/root/tmp/data/keyward-cms.db")" = 65532 ]
  # A registry tool reads the archive as an image (skopeo, from Debian).
  if ! command -v skopeo >/dev/null 2>&1; then
    apt-get install -y -qq skopeo >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq skopeo >/dev/null; }
  fi
  skopeo inspect "oci-archive:$archive" >"$tmp/inspect.json"
  grep -q '"org.opencontainers.image.title": "keyward"' "$tmp/inspect.json"
  echo "image check: $archive runs as uid 65532 in a chroot: $v, cms serve answered (healthz, an API, a key)"
}

case "${1:-build}" in
  build) build ;;
  check) check ;;
  *) echo "usage: $0 [build|check]" >&2; exit 2 ;;
esac
