//! `keyward apply --secrets-to kubernetes`, through the binary against the API emulator served
//! over HTTP: Secrets in the operator's format under the CLI's own field manager, nothing on
//! disk, no Secret taken that the CLI did not write (unless adopted), one apply per namespace
//! at a time through a Lease, and revoked keys' Secrets deleted.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::kube_emulator::Emulator;
use support::process::keyward;

use support::SITE_POLICY as POLICY;

/// An emulated cluster with namespace `shop`, served over HTTP, and a work directory holding
/// its kubeconfig (`kubeconfig`, context `emu`) and the policy (`p.yaml`).
async fn cluster() -> (Emulator, tempfile::TempDir) {
    let emu = Emulator::new();
    emu.add_namespace("shop");
    let url = emu.serve_http().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("kubeconfig"), Emulator::kubeconfig(&url)).unwrap();
    std::fs::write(work.path().join("p.yaml"), POLICY).unwrap();
    (emu, work)
}

/// `keyward ARGS` in `dir` with `env`, off the runtime that serves the emulator: (exit code,
/// all it printed).
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, out, err, _) = keyward(&dir, &args, &env);
        (code, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// `keyward ARGS --secrets-to kubernetes --kubeconfig kubeconfig` in `dir`.
async fn to_cluster(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.extend(["--secrets-to", "kubernetes", "--kubeconfig", "kubeconfig"]);
    run(dir, &all, &[]).await
}

fn secret(emu: &Emulator, name: &str) -> Option<Value> {
    emu.get("api/v1/secrets", "shop", name)
}

fn lease_holder(emu: &Emulator) -> Option<String> {
    emu.get("apis/coordination.k8s.io/v1/leases", "shop", "keyward-cli")?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(str::to_owned)
}

fn labels_and_annotation_names(s: &Value) -> (Value, Vec<String>) {
    let mut ann: Vec<String> = s["metadata"]["annotations"]
        .as_object()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    ann.sort();
    (s["metadata"]["labels"].clone(), ann)
}

/// The Secret goes to the cluster in the format of the secrets directory's files (and the
/// operator's), written by `keyward-cli`; no Secret file is written; the Lease is given back;
/// a second apply changes nothing and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_writes_secrets_to_the_cluster_in_the_operators_format_and_nothing_to_disk() {
    let (emu, work) = cluster().await;
    let w = work.path();
    let (code, said) = to_cluster(w, &["plan", "-f", "p.yaml"]).await;
    assert_eq!(code, 2, "a key to create: {said}");
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Secrets written: 1"), "{said}");
    let s = secret(&emu, "reader").expect("the Secret is in the cluster");
    let value = s["data"]["apiKey"].as_str().and_then(keyward::gitops::b64);
    let value = value.expect("the key's value");
    assert!(!said.contains(&value), "the value is never printed: {said}");
    assert!(
        s["metadata"]["ownerReferences"].is_null(),
        "no owner: {s:#}"
    );
    assert_eq!(
        emu.managers_of("api/v1/secrets", "shop", "reader"),
        ["keyward-cli".to_owned()].into(),
    );
    assert!(!w.join(".keyward/secrets").exists(), "no Secret file");
    assert_eq!(lease_holder(&emu), None, "the Lease is given back");

    // The same Secret as a file, for comparison: same labels, same annotations.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("p.yaml"), POLICY).unwrap();
    let (code, said) = run(files.path(), &["apply", "-f", "p.yaml"], &[]).await;
    assert_eq!(code, 0, "{said}");
    let file = std::fs::read_to_string(files.path().join(".keyward/secrets/shop.reader.yaml"));
    let file: Value = serde_yaml_ng::from_str(&file.unwrap()).unwrap();
    let (file_labels, file_ann) = labels_and_annotation_names(&file);
    let (labels, ann) = labels_and_annotation_names(&s);
    assert_eq!(labels, file_labels);
    assert_eq!(ann, file_ann);

    // Unchanged: plan says nothing to do, apply writes nothing to the cluster but its Lease.
    let (code, said) = to_cluster(w, &["plan", "-f", "p.yaml"]).await;
    assert_eq!(code, 0, "nothing to do: {said}");
    let writes = emu.counters.writes_to("secrets");
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 0, "{said}");
    assert_eq!(emu.counters.writes_to("secrets"), writes, "{said}");
    assert_eq!(secret(&emu, "reader").unwrap()["data"], s["data"]);
}

/// A Secret the CLI did not write is left alone (exit 1, saying why), also one an operator's
/// policy owns; with `secret.adopt: true` it is replaced whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_cli_did_not_write_is_never_overwritten_unless_adopted() {
    let (emu, work) = cluster().await;
    let w = work.path();
    let theirs = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "reader", "namespace": "shop", "labels": {"app": "theirs"}},
        "data": {"password": support::b64("hunter2")}});
    emu.store_as_is("api/v1/namespaces/shop/secrets", theirs.clone());
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("shop/reader"), "{said}");
    assert!(said.contains("is not this policy's"), "{said}");
    let kept = secret(&emu, "reader").unwrap();
    assert_eq!(kept["data"], theirs["data"], "left alone");

    // An operator's Secret (owned by its policy) is not the CLI's either, labels or not.
    let policy: Value = serde_yaml_ng::from_str(POLICY).unwrap();
    emu.store_as_is(
        "apis/keyward.dev/v1alpha1/namespaces/shop/apikeypolicies",
        policy,
    );
    let uid = emu
        .get("apis/keyward.dev/v1alpha1/apikeypolicies", "shop", "site")
        .unwrap()["metadata"]["uid"]
        .clone();
    let operators = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "reader", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "keyward", "keyward.dev/policy": "site"},
            "ownerReferences": [{"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
                "name": "site", "uid": uid, "controller": true}]},
        "data": {"apiKey": support::b64("the-operators-value")}});
    emu.store_as_is("api/v1/namespaces/shop/secrets", operators.clone());
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("owned by ApiKeyPolicy site"), "{said}");
    assert_eq!(secret(&emu, "reader").unwrap()["data"], operators["data"]);

    let adopt = POLICY.replace("{name: reader}", "{name: reader, adopt: true}");
    std::fs::write(w.join("p.yaml"), adopt).unwrap();
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 0, "{said}");
    let s = secret(&emu, "reader").unwrap();
    assert!(s["data"]["apiKey"].is_string(), "{s:#}");
    assert_ne!(s["data"], operators["data"], "replaced whole");
    assert!(s["metadata"]["ownerReferences"].is_null(), "{s:#}");
}

/// Another apply holding the namespace's Lease makes this one wait, then fail (exit 1, naming
/// the holder) without changing anything; a Lease that ran out is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_per_namespace_at_a_time_across_machines() {
    let (emu, work) = cluster().await;
    let w = work.path();
    let now = jiff::Timestamp::now();
    let held = |renewed: jiff::Timestamp| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "keyward-cli", "namespace": "shop"},
            "spec": {"holderIdentity": "keyward-cli build-7 pid 42", "leaseDurationSeconds": 30,
                "acquireTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}})
    };
    emu.store_as_is(
        "apis/coordination.k8s.io/v1/namespaces/shop/leases",
        held(now),
    );
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml", "--lock-timeout", "2s"]).await;
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("keyward-cli build-7 pid 42"), "{said}");
    assert!(said.contains("namespace shop"), "{said}");
    assert!(secret(&emu, "reader").is_none(), "nothing written: {said}");
    assert_eq!(
        lease_holder(&emu).as_deref(),
        Some("keyward-cli build-7 pid 42")
    );

    // The other apply was killed an hour ago: its Lease ran out, and this one goes ahead,
    // even told not to wait at all.
    emu.store_as_is(
        "apis/coordination.k8s.io/v1/namespaces/shop/leases",
        held(now - jiff::SignedDuration::from_hours(1)),
    );
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml", "--lock-timeout", "0s"]).await;
    assert_eq!(code, 0, "{said}");
    assert!(secret(&emu, "reader").is_some());
    assert_eq!(lease_holder(&emu), None, "given back");
}

/// `--prune` revokes the keys of a policy gone from the manifests and deletes their Secrets
/// from the cluster; a cluster that holds none of the Secrets of keys the CMS has makes apply
/// refuse (they would all get new values) unless told to regenerate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_keys_lose_their_secrets_and_a_wrong_cluster_is_refused() {
    let (emu, work) = cluster().await;
    let w = work.path();
    // The pruned policy is in a namespace of its own: the run takes that namespace's Lease
    // before it deletes anything there.
    emu.add_namespace("news");
    let second = POLICY
        .replace("name: site, namespace: shop", "name: blog, namespace: news")
        .replace("{name: reader}", "{name: blog-reader}");
    std::fs::write(w.join("blog.yaml"), second).unwrap();
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml", "-f", "blog.yaml"]).await;
    assert_eq!(code, 0, "{said}");
    let in_news = |name: &str| emu.get("api/v1/secrets", "news", name);
    assert!(in_news("blog-reader").is_some());
    emu.store_as_is(
        "apis/coordination.k8s.io/v1/namespaces/news/leases",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "keyward-cli", "namespace": "news"},
            "spec": {"holderIdentity": "keyward-cli ci-3 pid 7", "leaseDurationSeconds": 30,
                "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}}),
    );
    let (code, said) = to_cluster(
        w,
        &["apply", "-f", "p.yaml", "--prune", "--lock-timeout", "1s"],
    )
    .await;
    assert_eq!(code, 1, "another apply holds news: {said}");
    assert!(said.contains("keyward-cli ci-3 pid 7"), "{said}");
    assert!(
        in_news("blog-reader").is_some(),
        "not deleted without the Lease: {said}"
    );
    emu.store_as_is(
        "apis/coordination.k8s.io/v1/namespaces/news/leases",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "keyward-cli", "namespace": "news"}, "spec": {}}),
    );
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml", "--prune"]).await;
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("news/blog-reader (in the cluster)"), "{said}");
    assert!(in_news("blog-reader").is_none(), "deleted: {said}");
    assert!(secret(&emu, "reader").is_some(), "kept: {said}");
    let news_lease = emu.get("apis/coordination.k8s.io/v1/leases", "news", "keyward-cli");
    assert!(
        news_lease.is_some_and(|l| l.pointer("/spec/holderIdentity").is_none_or(Value::is_null)),
        "taken for the deletion, then given back"
    );

    // Another, empty cluster: every existing key would get a new value.
    let (other, _) = cluster().await;
    let url = other.serve_http().await;
    std::fs::write(w.join("kubeconfig"), Emulator::kubeconfig(&url)).unwrap();
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("holds none of these policies' Secrets"),
        "{said}"
    );
    assert!(said.contains("--context"), "{said}");
    assert!(other.get("api/v1/secrets", "shop", "reader").is_none());
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml", "--regenerate-missing"]).await;
    assert_eq!(code, 0, "{said}");
    assert!(other.get("api/v1/secrets", "shop", "reader").is_some());
}

/// A team that applied the secrets directory's files with `kubectl apply` moves to
/// `--secrets-to kubernetes` without new values: those Secrets are the CLI's already. The copy
/// of the file (value included) that kubectl keeps in an annotation goes at the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_applied_from_the_files_are_taken_over_as_they_are() {
    let (emu, work) = cluster().await;
    let w = work.path();
    let (code, said) = run(w, &["apply", "-f", "p.yaml"], &[]).await;
    assert_eq!(code, 0, "{said}");
    // What `kubectl apply -f .keyward/secrets/` leaves: the file, and its copy in an
    // annotation.
    let text = std::fs::read_to_string(w.join(".keyward/secrets/shop.reader.yaml")).unwrap();
    let mut file: Value = serde_yaml_ng::from_str(&text).unwrap();
    let copy = serde_json::to_string(&file).unwrap();
    file["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(copy);
    emu.store_as_is("api/v1/namespaces/shop/secrets", file.clone());
    let before = secret(&emu, "reader").unwrap();

    let (code, said) = to_cluster(w, &["plan", "-f", "p.yaml"]).await;
    assert_eq!(
        code, 0,
        "nothing to do: the Secret is the CLI's and holds the value: {said}"
    );
    // A change of the Secret's labels rewrites it: same value, kubectl's copy gone.
    let labelled = POLICY.replace("{name: reader}", "{name: reader, labels: {team: web}}");
    std::fs::write(w.join("p.yaml"), labelled).unwrap();
    let (code, said) = to_cluster(w, &["apply", "-f", "p.yaml"]).await;
    assert_eq!(code, 0, "{said}");
    let after = secret(&emu, "reader").unwrap();
    assert_eq!(after["data"], before["data"], "the same value");
    assert_eq!(after["metadata"]["labels"]["team"], "web");
    assert!(
        after["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_null(),
        "{:#}",
        after["metadata"]
    );
}

/// The cluster is found as kubectl finds it: `KUBECONFIG` and `--context`; flags of the other
/// mode are usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_is_found_as_kubectl_finds_it() {
    let (emu, work) = cluster().await;
    let w = work.path();
    let kubeconfig = w.join("kubeconfig").display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let with_context = |c: &'static str| {
        [
            "apply",
            "-f",
            "p.yaml",
            "--secrets-to",
            "kubernetes",
            "--context",
            c,
        ]
    };
    let (code, said) = run(w, &with_context("nope"), &env).await;
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("nope"), "{said}");
    let (code, said) = run(w, &with_context("emu"), &env).await;
    assert_eq!(code, 0, "{said}");
    assert!(secret(&emu, "reader").is_some());
    for usage in [
        &["apply", "-f", "p.yaml", "--context", "emu"][..],
        &[
            "apply",
            "-f",
            "p.yaml",
            "--secrets-to",
            "kubernetes",
            "--secrets-dir",
            "s",
        ],
        &["apply", "-f", "p.yaml", "--secrets-to", "vault"],
    ] {
        let (code, said) = run(w, usage, &[]).await;
        assert_eq!(code, 1, "{usage:?}: {said}");
    }
}
