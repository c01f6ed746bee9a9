#!/usr/bin/env python3
"""Writes an OCI image archive (oci-archive) from a root directory, with nothing pulled: one
layer (the directory as a reproducible tar), the image config (user, entrypoint, labels) and the
OCI layout (oci-layout, index.json, blobs/sha256/...), tarred into one file.

    oci_image.py build ROOTFS OUT.tar --user 65532 --entrypoint /usr/local/bin/keyward \
        --label org.opencontainers.image.version=0.1.0 ... --tag 0.1.0
    oci_image.py unpack OUT.tar DIR     # extracts the layers into DIR (for the check)
    oci_image.py config OUT.tar         # prints the image config JSON
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(root: str) -> bytes:
    """The directory as a tar with fixed times, in name order (reproducible)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries):
            arc = os.path.relpath(path, root)
            info = tar.gettarinfo(path, arcname=arc)
            # Owners as in the root directory (root, or the nonroot user's home), no names.
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def build(args):
    raw = layer_tar(args.rootfs)
    gz = gzip.compress(raw, mtime=0)
    labels = dict(kv.split("=", 1) for kv in args.label)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": args.user,
            "Entrypoint": [args.entrypoint],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "WorkingDir": "/home/nonroot",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
        "history": [{"created_by": "scripts/image.sh (host-built binary, its shared libraries, CA certificates, passwd)"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(gz),
                "size": len(gz),
            }
        ],
        "annotations": labels,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": args.tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
    }
    for blob in (config_bytes, manifest_bytes, gz):
        files["blobs/sha256/" + sha256(blob)[7:]] = blob
    with tarfile.open(args.out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    print(f"{args.out}: manifest {sha256(manifest_bytes)}, layer {len(gz)} bytes")


def read_image(path):
    with tarfile.open(path) as tar:
        blob = lambda digest: tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            if sha256(data) != layer["digest"]:
                sys.exit(f"layer digest mismatch: {layer['digest']}")
        layers = [blob(l["digest"]) for l in manifest["layers"]]
    return config, layers


def unpack(args):
    config, layers = read_image(args.image)
    os.makedirs(args.dir, exist_ok=True)
    for data in layers:
        raw = gzip.decompress(data)
        if sha256(raw) not in config["rootfs"]["diff_ids"]:
            sys.exit("a layer does not match the config's diff_ids")
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            # Our own image, unpacked as built: modes (the sticky /tmp) and owners kept.
            tar.extractall(args.dir, filter="fully_trusted")


def show_config(args):
    config, _ = read_image(args.image)
    print(json.dumps(config, indent=2, sort_keys=True))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("rootfs")
    b.add_argument("out")
    b.add_argument("--user", required=True)
    b.add_argument("--entrypoint", required=True)
    b.add_argument("--label", action="append", default=[])
    b.add_argument("--tag", required=True)
    u = sub.add_parser("unpack")
    u.add_argument("image")
    u.add_argument("dir")
    c = sub.add_parser("config")
    c.add_argument("image")
    args = p.parse_args()
    {"build": build, "unpack": unpack, "config": show_config}[args.cmd](args)


if __name__ == "__main__":
    main()
