//! The operator end to end: the real kube-runtime Controller against the API emulator and the
//! real reference CMS over HTTP.

mod support;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use keyward::operator::metrics::Metrics;
use keyward::operator::{Context, OperatorConfig};
use keyward::policy::ApiKeyPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::kube_emulator::Emulator;
use support::{b64, create, eventually, Answers, Cms, ADMIN};

/// Deadline for work of a few reconciles (CMS calls, Argon2id hashes of new keys, Kubernetes
/// writes) on a busy machine; drift checks run every second in these tests.
const RECONCILES: Duration = Duration::from_secs(30);

struct Cluster {
    emu: Emulator,
    /// A cluster admin's client, for the tests' own setup and checks.
    client: Client,
    /// The operator's: its service account, held to the chart's RBAC.
    operator: Client,
    cms: Cms,
}

/// Whatever a test checks, the operator made no request the chart's RBAC refused (a refusal
/// it logged and went past would otherwise go unseen).
impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                self.emu.denied(),
                Vec::<String>::new(),
                "the chart's RBAC refused the operator"
            );
        }
    }
}

/// The chart's RBAC (cluster-wide) enforced on the operator's service account; its client.
fn operator_client(emu: &Emulator) -> Client {
    emu.enforce_rbac(support::kube_rbac::Grants::chart(None));
    emu.operator_client()
}

async fn cluster() -> Cluster {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    let emu = Emulator::new();
    // Where leader election keeps its Lease, as the chart's namespace.
    emu.add_namespace("keyward-system");
    let client = emu.client();
    create(&client, "api/v1", "namespaces", None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "shop"}}})).await;
    create(&client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin", "labels": {"keyward.dev/credential": "true"}}, "stringData": {}, "data": {"token": b64(ADMIN)}})).await;
    create(
        &client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "main"},
        "spec": {"endpoint": cms.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    Cluster {
        operator: operator_client(&emu),
        emu,
        client,
        cms,
    }
}

fn config() -> OperatorConfig {
    OperatorConfig {
        drift_interval: Duration::from_secs(1),
        ..Default::default()
    }
}

fn start(c: &Cluster, config: OperatorConfig) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let ctx = Arc::new(Context::new(
        c.operator.clone(),
        config,
        Arc::new(Metrics::new()),
    ));
    let handle = tokio::spawn(keyward::operator::run_controller(ctx.clone()));
    (ctx, handle)
}

fn policy(keys: Value, extra: Value) -> ApiKeyPolicy {
    let mut spec = json!({"connectionRef": {"name": "main"}, "keys": keys});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})).unwrap()
}

fn reader() -> Value {
    json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"}}])
}

async fn secret_value(c: &Cluster, name: &str) -> Option<String> {
    let s = Api::<Secret>::namespaced(c.client.clone(), "shop")
        .get_opt(name)
        .await
        .ok()??;
    String::from_utf8(s.data?.get("KEY")?.0.clone()).ok()
}

async fn ready(c: &Cluster) -> Option<Value> {
    let p = Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .get_opt("web")
        .await
        .ok()??;
    let st = serde_json::to_value(p.status?).ok()?;
    Some(st)
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether the policy's condition `type_` has `reason` (and the status that reason implies).
async fn has_reason(c: &Cluster, type_: &str, reason: &str) -> bool {
    ready(c)
        .await
        .is_some_and(|s| condition(&s, type_).is_some_and(|r| r["reason"] == reason))
}

async fn wait_ready(c: &Cluster) {
    eventually("Ready=True", RECONCILES, || async {
        ready(c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
}

/// Creates the policy `shop/web` with `keys` and `extra` (spec fields).
async fn create_policy(c: &Cluster, keys: Value, extra: Value) -> Api<ApiKeyPolicy> {
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(keys, extra))
        .await
        .unwrap();
    policies
}

/// Sets `annotations` on the policy `shop/web` (a merge patch, as `kubectl annotate`).
async fn annotate(policies: &Api<ApiKeyPolicy>, annotations: Value) {
    let patch = json!({"metadata": {"annotations": annotations}});
    policies
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Creates the policy `shop/web` with the reader key on `extra` (spec fields) and waits for it.
async fn create_reader(c: &Cluster, extra: Value) -> Api<ApiKeyPolicy> {
    let policies = create_policy(c, reader(), extra).await;
    wait_ready(c).await;
    policies
}

/// The operator with a five-minute drift interval (so only what a test asks for makes it look
/// again) and the reader policy, ready.
async fn reader_with_slow_drift(
    c: &Cluster,
) -> (Arc<Context>, tokio::task::JoinHandle<()>, Api<ApiKeyPolicy>) {
    let config = OperatorConfig {
        drift_interval: Duration::from_secs(300),
        ..config()
    };
    let (ctx, op) = start(c, config);
    let policies = create_reader(c, json!({})).await;
    (ctx, op, policies)
}

/// A Deployment `shop/web`, to restart.
async fn create_web_deployment(c: &Cluster) {
    create(&c.client, "apis/apps/v1", "deployments", Some("shop"), json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})).await;
}

/// A ClusterCmsConnection `shared` to the test CMS, with the credential in `shop`, and `spec`
/// (namespaces, allow) over that.
async fn shared_connection(c: &Cluster, spec: Value) {
    let mut full = json!({"endpoint": c.cms.url, "credentialsSecretRef": {"name": "cms-admin", "namespace": "shop"}});
    if let (Some(a), Some(b)) = (full.as_object_mut(), spec.as_object()) {
        a.extend(b.clone());
    }
    create(&c.client, "apis/keyward.dev/v1alpha1", "clustercmsconnections", None, json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterCmsConnection", "metadata": {"name": "shared"},
        "spec": full})).await;
}

/// Who holds the operator's Lease.
fn lease_holder(c: &Cluster) -> Option<String> {
    c.emu
        .get(
            "apis/coordination.k8s.io/v1/leases",
            "keyward-system",
            "keyward-operator",
        )
        .and_then(|l| {
            l.pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// Reconciles that finished without error so far.
/// Reconciles of the policy `shop/<name>` that ended well.
fn reconciles_of(ctx: &Context, name: &str) -> u64 {
    ctx.reconciled("shop", name)
}

/// Waits until `n` more reconciles of the policy `shop/<name>` have finished: proof that its
/// loop ran (drift checks come every second), instead of a sleep that hopes it did, or a total
/// that other policies' reconciles also move.
async fn more_reconciles(ctx: &Context, name: &str, n: u64) {
    let start = reconciles_of(ctx, name);
    eventually(
        &format!("{n} more reconciles of {name}"),
        RECONCILES,
        || async { reconciles_of(ctx, name) >= start + n },
    )
    .await;
}

async fn cms_keys(c: &Cluster) -> Vec<Value> {
    c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
        .as_array()
        .unwrap()
        .clone()
}

/// PATCHes a key in the CMS behind keyward's back and checks the answer shows the change.
async fn drift(c: &Cluster, id: &str, permissions: Value) {
    let r = c
        .cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({ "defaultPermissions": permissions })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["defaultPermissions"], permissions,
        "the drift took effect"
    );
}

/// Events recorded for the policies: (reason, note).
fn events(c: &Cluster) -> Vec<(String, String)> {
    c.emu
        .list("apis/events.k8s.io/v1/events")
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until an event with `reason` whose note starts with `note` is recorded (events are
/// published after the work they report, so the work being visible does not mean the event is).
async fn assert_event(c: &Cluster, reason: &str, note: &str) {
    let found = || {
        events(c)
            .iter()
            .any(|(r, n)| r == reason && n.starts_with(note))
    };
    let started = std::time::Instant::now();
    while !found() && started.elapsed() < RECONCILES {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        found(),
        "no {reason} event starting {note:?} in {:?}",
        events(c)
    );
}

/// The hash keyward keeps of a Secret's data, computed here from the data itself: SHA-256 over
/// each field's name and value (each followed by a zero byte), in field order, first 12 bytes.
fn content_hash_of(data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(&v.0);
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_to_working_key_and_back() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("the Secret", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some()
    })
    .await;
    let key = secret_value(&c, "reader").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    assert_eq!(
        c.cms.status(Method::POST, "/api/blog", &key).await,
        StatusCode::FORBIDDEN,
        "exactly the declared rights"
    );
    let secret = Api::<Secret>::namespaced(c.client.clone(), "shop")
        .get("reader")
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].kind,
        "ApiKeyPolicy"
    );
    assert_eq!(secret.metadata.name.as_deref(), Some("reader"));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    wait_ready(&c).await;
    let st = ready(&c).await.unwrap();
    assert_eq!(st["keys"][0]["name"], "reader");
    assert!(st["keys"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!st.to_string().contains(&key), "no key value in status");

    // Edit the spec: the key's rights change, same value.
    policies
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"keys": [{"name": "reader", "defaultPermissions": ["GET", "POST"], "secret": {"name": "reader", "keyField": "KEY"}}]}})))
        .await
        .unwrap();
    eventually("POST allowed", RECONCILES, || async {
        c.cms.status(Method::POST, "/api/blog", &key).await == StatusCode::CREATED
    })
    .await;

    // Edit the key in the CMS behind keyward's back (the answer shows the change took effect):
    // repaired, so a later read shows the declared rights again.
    let id = cms_keys(&c).await[0]["id"].as_str().unwrap().to_owned();
    drift(&c, &id, json!(["GET", "POST", "DELETE"])).await;
    eventually("drift repaired", RECONCILES, || async {
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .body["defaultPermissions"]
            == json!(["GET", "POST"])
    })
    .await;

    // Delete the Secret: a new value, a new Secret; the old value keeps working for the default
    // rotationOverlap (15m) while workloads pick up the new one.
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new Secret", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some_and(|v| v != key)
    })
    .await;
    let new = secret_value(&c, "reader").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    assert_eq!(
        c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no duplicate key"
    );

    // Delete the policy: key revoked, finalizer removed, Secret collected.
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy is gone", RECONCILES, || async {
        policies.get_opt("web").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::UNAUTHORIZED,
        "a revoked key's old value in its overlap ends too"
    );
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(cms_keys(&c).await.is_empty(), "revoked with its policy");
    assert!(Api::<Secret>::namespaced(c.client.clone(), "shop")
        .get_opt("reader")
        .await
        .unwrap()
        .is_none());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_policy_makes_zero_writes() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    create_reader(&c, json!({})).await;
    // Settled: a whole reconcile has run after the one that wrote Ready.
    more_reconciles(&ctx, "web", 2).await;
    let writes = || {
        [
            "secrets",
            "apikeypolicies",
            "roles",
            "rolebindings",
            "events",
        ]
        .iter()
        .map(|r| c.emu.counters.writes_to(r))
        .collect::<Vec<u64>>()
    };
    let before = writes();
    let cms_writes = provider_of(&ctx, &c.cms.url).stats().writes();
    let cms_reads = provider_of(&ctx, &c.cms.url).stats().reads();
    more_reconciles(&ctx, "web", 3).await; // three drift checks
    assert_eq!(writes(), before, "no Kubernetes writes, no events");
    assert_eq!(
        provider_of(&ctx, &c.cms.url).stats().writes(),
        cms_writes,
        "no CMS writes"
    );
    assert!(
        provider_of(&ctx, &c.cms.url).stats().reads() >= cms_reads + 3,
        "but each drift check read the CMS"
    );
    op.abort();
}

/// The operator stops at a chosen point, not wherever luck puts it: every key made in the CMS,
/// the Secrets of `a` and `c` written, `b`'s value not yet in its Secret (the API server
/// refuses that write). A new operator loses and duplicates nothing: `a` and `c` keep their
/// values, `b` gets a working key, and no second key of `b` is left beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_operator_loses_and_duplicates_nothing() {
    let c = cluster().await;
    c.emu.fail_writes_to("secrets", "b", 503, usize::MAX);
    let (_, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let keys = json!([
        {"name": "a", "defaultPermissions": ["GET"], "secret": {"name": "a", "keyField": "KEY"}},
        {"name": "b", "defaultPermissions": ["GET"], "secret": {"name": "b", "keyField": "KEY"}},
        {"name": "c", "defaultPermissions": ["GET"], "secret": {"name": "c", "keyField": "KEY"}}
    ]);
    policies
        .create(&PostParams::default(), &policy(keys, json!({})))
        .await
        .unwrap();
    let key_names = || async {
        let mut names: Vec<String> = cms_keys(&c)
            .await
            .iter()
            .map(|k| k["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    eventually(
        "three keys made, the Secrets of a and c written",
        RECONCILES,
        || async {
            key_names().await.len() == 3
                && secret_value(&c, "a").await.is_some()
                && secret_value(&c, "c").await.is_some()
        },
    )
    .await;
    op.abort();
    let _ = op.await;
    // The cut, as stated: b's key is in the CMS, its value in no Secret.
    assert_eq!(
        key_names().await,
        ["shop.web.a", "shop.web.b", "shop.web.c"]
    );
    assert_eq!(secret_value(&c, "b").await, None);
    let lost = cms_keys(&c)
        .await
        .into_iter()
        .find(|k| k["name"] == "shop.web.b")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = [
        secret_value(&c, "a").await.unwrap(),
        secret_value(&c, "c").await.unwrap(),
    ];

    c.emu.heal("secrets");
    let (ctx, op) = start(&c, config());
    eventually("b's Secret", RECONCILES, || async {
        secret_value(&c, "b").await.is_some()
    })
    .await;
    wait_ready(&c).await;
    // Two whole reconciles after that: any duplicate would have been made by now.
    more_reconciles(&ctx, "web", 2).await;
    let ids: Vec<String> = cms_keys(&c)
        .await
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        key_names().await,
        ["shop.web.a", "shop.web.b", "shop.web.c"],
        "no duplicates"
    );
    // b's one key is the one its Secret names: the lost key revoked, or given a new value.
    let b = Api::<Secret>::namespaced(c.client.clone(), "shop")
        .get("b")
        .await
        .unwrap();
    let named =
        b.metadata.annotations.unwrap_or_default()[keyward::model::secret::ANN_KEY_ID].clone();
    let b_ids: Vec<&String> = ids
        .iter()
        .filter(|id| **id == named || **id == lost)
        .collect();
    assert_eq!(b_ids, [&named], "lost {lost}, now {named}: {ids:?}");
    assert_eq!(
        [
            secret_value(&c, "a").await.unwrap(),
            secret_value(&c, "c").await.unwrap(),
        ],
        kept,
        "a and c keep their values"
    );
    for n in ["a", "b", "c"] {
        let v = secret_value(&c, n).await.unwrap();
        assert_eq!(
            c.cms.status(Method::GET, "/api/blog", &v).await,
            StatusCode::OK,
            "{n} works"
        );
    }
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cms_outage_shows_in_conditions_and_recovers() {
    let mut c = cluster().await;
    let (_, op) = start(&c, config());
    create_reader(&c, json!({})).await;
    let addr = c.cms.running.as_ref().unwrap().addr;
    c.cms.running.take().unwrap().stop().await;
    // The CMS client retries a refused connection with backoff (~6 s) before the reconcile
    // reports it.
    eventually("CmsUnavailable", RECONCILES, || async {
        has_reason(&c, "Ready", "CmsUnavailable").await
    })
    .await;
    let st = ready(&c).await.unwrap();
    let msg = condition(&st, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains(&format!("cannot reach {}", c.cms.url))
            && msg.ends_with("; retrying with backoff"),
        "{msg}"
    );
    let mut cfg = support::config(c.cms.dir.path());
    cfg.listen = addr;
    c.cms.running = Some(keyward::cms::start(cfg).await.unwrap());
    // Backoff after failures: 1 s, 2 s, 4 s ... so recovery may take a while.
    eventually("Ready again", RECONCILES, || async {
        has_reason(&c, "Ready", "Ready").await
    })
    .await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_rbac_and_lose_it_when_removed() {
    let c = cluster().await;
    let (_, op) = start(&c, config());
    let with_readers = |readers: Value| {
        json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
            "readers": readers}])
    };
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(
            &PostParams::default(),
            &policy(with_readers(json!({"serviceAccounts": ["web"]})), json!({})),
        )
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(c.client.clone(), "shop");
    let bindings: Api<RoleBinding> = Api::namespaced(c.client.clone(), "shop");
    eventually("the RoleBinding", RECONCILES, || async {
        bindings
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let role = roles.get("keyward-read-reader").await.unwrap();
    let rule = &role.rules.unwrap()[0];
    assert_eq!(rule.resources.as_deref(), Some(&["secrets".to_owned()][..]));
    assert_eq!(rule.resource_names.as_ref().unwrap(), &["reader"]);
    assert_eq!(rule.verbs, ["get"]);
    let binding = bindings.get("keyward-read-reader").await.unwrap();
    let subjects = binding.subjects.unwrap();
    assert_eq!(
        subjects
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
            .collect::<Vec<_>>(),
        [("ServiceAccount", "web", Some("shop"))]
    );
    assert_eq!(binding.role_ref.name, "keyward-read-reader");

    // Another reader: the binding follows.
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keys": with_readers(json!({"serviceAccounts": ["web", "worker"]}))}})),
        )
        .await
        .unwrap();
    eventually("two readers", RECONCILES, || async {
        bindings
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .and_then(|b| b.subjects)
            .is_some_and(|s| s.len() == 2)
    })
    .await;

    // Readers removed from the spec lose access: Role and RoleBinding are deleted. While the
    // binding cannot be deleted the policy is not Ready, and says why (before, the error was
    // dropped and a former reader kept access under a Ready status).
    c.emu.fail_writes("rolebindings", 403, usize::MAX);
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keys": with_readers(json!(null))}})),
        )
        .await
        .unwrap();
    let status = wait_reason(&c, "web", "PublishFailed").await;
    assert!(
        condition(&status, "Ready").unwrap()["message"]
            .to_string()
            .contains("403"),
        "{status}"
    );
    assert!(
        bindings
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_some()
            && roles
                .get_opt("keyward-read-reader")
                .await
                .unwrap()
                .is_some(),
        "the binding goes first; nothing went"
    );
    c.emu.heal("rolebindings");
    eventually("the Role and RoleBinding deleted", RECONCILES, || async {
        roles
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_none()
            && bindings
                .get_opt("keyward-read-reader")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    assert!(
        secret_value(&c, "reader").await.is_some(),
        "the Secret itself stays"
    );
    wait_ready(&c).await;

    // A binding of that name that is not the policy's is never deleted with the policy's Role.
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"keys": with_readers(json!({"serviceAccounts": ["web"]}))}}),
            ),
        )
        .await
        .unwrap();
    eventually("the RoleBinding is back", RECONCILES, || async {
        bindings
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // Someone takes the binding over: it no longer carries the policy's ownerReference.
    bindings
        .patch(
            "keyward-read-reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null},
                "subjects": [{"kind": "ServiceAccount", "name": "someone", "namespace": "shop"}]})),
        )
        .await
        .unwrap();
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keys": with_readers(json!(null))}})),
        )
        .await
        .unwrap();
    eventually("the policy's Role is deleted", RECONCILES, || async {
        roles
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let kept = bindings.get_opt("keyward-read-reader").await.unwrap();
    assert!(
        kept.is_some_and(|b| b.subjects.is_some_and(|s| s[0].name == "someone")),
        "someone else's binding stays"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_targets_roll_once_per_secret_content() {
    let c = cluster().await;
    create_web_deployment(&c).await;
    let (ctx, op) = start(&c, config());
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
        "restartTargets": [{"kind": "Deployment", "name": "web"}]}]);
    create_policy(&c, keys, json!({})).await;
    let deployment = || {
        c.emu
            .get("apis/apps/v1/deployments", "shop", "web")
            .unwrap()
    };
    let annotation = || {
        deployment()
            .pointer("/spec/template/metadata/annotations/keyward.dev~1secret-reader")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "shop");
    // The annotation is the hash of the Secret's data, computed here from the data.
    let content_hash = || async {
        let s = secrets.get("reader").await.unwrap();
        let hash = content_hash_of(&s.data.unwrap());
        assert_eq!(
            s.metadata.annotations.unwrap()["keyward.dev/content-hash"],
            hash
        );
        hash
    };
    eventually("the pod template annotation", RECONCILES, || async {
        annotation().is_some()
    })
    .await;
    let first = annotation().unwrap();
    assert_eq!(first, content_hash().await);
    let generation = deployment()["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(generation, 2, "one roll: the annotation was added once");
    more_reconciles(&ctx, "web", 2).await;
    assert_eq!(annotation().as_deref(), Some(first.as_str()));
    assert_eq!(
        deployment()["metadata"]["generation"].as_i64(),
        Some(generation),
        "rolled once, not in a loop"
    );

    // A new value (the Secret was deleted): the workload rolls again, once.
    let old = secret_value(&c, "reader").await.unwrap();
    secrets
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new annotation", RECONCILES, || async {
        annotation().is_some_and(|a| a != first)
    })
    .await;
    let second = annotation().unwrap();
    assert_ne!(secret_value(&c, "reader").await.unwrap(), old);
    assert_eq!(second, content_hash().await);
    more_reconciles(&ctx, "web", 2).await;
    assert_eq!(annotation().as_deref(), Some(second.as_str()));
    assert_eq!(
        deployment()["metadata"]["generation"].as_i64(),
        Some(generation + 1),
        "one more roll for the new value"
    );
    let restarts = events(&c)
        .into_iter()
        .filter(|(reason, _)| reason == "Restarted")
        .count();
    assert!(restarts >= 1, "{:?}", events(&c));
    op.abort();
}

/// A lifetime whose end lies past the last instant a time can hold (each part under the
/// per-part cap, the sum far over it) is refused with its field's path, and it stops nobody:
/// before, its reconcile panicked and took the controller, and every tenant's policies, down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_past_the_end_of_time_is_refused_and_stops_nobody() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut p = policy(
        json!([{"name": "reader", "defaultPermissions": ["GET"], "expiresAfter": "99y".repeat(81),
                "secret": {"name": "forever", "keyField": "KEY"}}]),
        json!({}),
    );
    p.metadata.name = Some("forever".into());
    // The CRD's schema refuses a lifetime this long (maxLength); one stored before that
    // schema is served as it is.
    let e = policies
        .create(&PostParams::default(), &p)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("spec.keys[0].expiresAfter: Too long: may not be more than 32 bytes"),
        "{e}"
    );
    c.emu.store_as_is(
        "/apis/keyward.dev/v1alpha1/namespaces/shop/apikeypolicies",
        serde_json::to_value(&p).unwrap(),
    );
    eventually("the endless lifetime is refused", RECONCILES, || async {
        let Some(st) = policies.get("forever").await.ok().and_then(|p| p.status) else {
            return false;
        };
        let st = serde_json::to_value(st).unwrap();
        condition(&st, "Ready").is_some_and(|r| {
            r["reason"] == "InvalidSpec"
                && r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("spec.keys[0].expiresAfter"))
        })
    })
    .await;
    // The controller still runs: a policy created after it gets its key.
    create_reader(&c, json!({})).await;
    let value = secret_value(&c, "reader").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    assert!(!op.is_finished(), "the controller is still running");
    assert!(
        cms_keys(&c).await.len() == 1,
        "the refused policy made no key"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_foreign_namespaces_and_observe_only_write_nothing_to_the_cms() {
    let c = cluster().await;
    shared_connection(&c, json!({"namespaces": ["other"]})).await;
    let (ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut p = policy(
        json!([{"name": "x", "defaultPermissions": ["GET_ALL_DRAFTS"], "secret": {"name": "x"}}]),
        json!({}),
    );
    p.metadata.name = Some("invalid".into());
    // The CRD's rules refuse it now (422); one stored before they existed is still judged.
    let refused = policies.create(&PostParams::default(), &p).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("GET_ALL_DRAFTS")),
        "{refused:?}"
    );
    c.emu.store_as_is(
        "apis/keyward.dev/v1alpha1/namespaces/shop/apikeypolicies",
        serde_json::to_value(&p).unwrap(),
    );
    let mut p = policy(
        reader(),
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}}),
    );
    p.metadata.name = Some("foreign".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
    let mut p = policy(reader(), json!({"managementPolicy": "ObserveOnly"}));
    p.metadata.name = Some("observer".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
    let reason = |name: &'static str| {
        let policies = policies.clone();
        async move {
            let p = policies.get(name).await.ok()?;
            let st = serde_json::to_value(p.status?).ok()?;
            condition(&st, "Ready").map(|r| {
                (
                    r["reason"].as_str().unwrap_or("").to_owned(),
                    r["message"].as_str().unwrap_or("").to_owned(),
                    st.clone(),
                )
            })
        }
    };
    eventually("InvalidSpec", RECONCILES, || async {
        reason("invalid")
            .await
            .is_some_and(|r| r.0 == "InvalidSpec" && r.1.contains("GET_ALL_DRAFTS requires GET"))
    })
    .await;
    eventually("ConnectionNotAllowed", RECONCILES, || async {
        reason("foreign")
            .await
            .is_some_and(|r| r.0 == "ConnectionNotAllowed")
    })
    .await;
    eventually("ChangesPending", RECONCILES, || async {
        reason("observer")
            .await
            .is_some_and(|r| r.0 == "ChangesPending")
    })
    .await;
    // GitOps tools read these: a spec only a change can fix is Stalled (Flux stops waiting);
    // ObserveOnly changes leave the policy Ready, with ChangesPending saying what waits.
    let invalid = reason("invalid").await.unwrap().2;
    let stalled = condition(&invalid, "Stalled").unwrap();
    assert_eq!(
        (&stalled["status"], &stalled["reason"]),
        (&json!("True"), &json!("InvalidSpec"))
    );
    let foreign = reason("foreign").await.unwrap().2;
    assert_eq!(condition(&foreign, "Stalled").unwrap()["status"], "True");
    let pending = reason("observer").await.unwrap().2;
    assert_eq!(condition(&pending, "Ready").unwrap()["status"], "True");
    let waits = condition(&pending, "ChangesPending").unwrap();
    assert_eq!(
        (&waits["status"], &waits["reason"]),
        (&json!("True"), &json!("ObserveOnly"))
    );
    assert_eq!(condition(&pending, "Stalled").unwrap()["status"], "False");
    assert_eq!(
        pending["pendingChanges"],
        json!([
            "+ create   shop/observer/reader  -> Secret shop/reader  (ObserveOnly: not applied)",
            "nothing to apply; 1 ObserveOnly changes left for a person."
        ]),
        "{pending}"
    );
    assert_eq!(
        condition(&pending, "Synced").unwrap()["reason"],
        "ObserveOnly"
    );
    assert_eq!(
        provider_of(&ctx, &c.cms.url).stats().writes(),
        0,
        "nothing was written to the CMS"
    );
    assert!(
        c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    op.abort();
}

/// A leader that loses its Lease while alive (another holder took it) stops reconciling at
/// once and takes over again when the Lease is free: nothing is reconciled while it does not
/// lead (`keyward_leader` says which).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_until_it_leads_again() {
    let c = cluster().await;
    let config = OperatorConfig {
        leader_election: Some(keyward::operator::LeaderElection {
            namespace: "keyward-system".into(),
            lease_name: "keyward-operator".into(),
            identity: "a".into(),
            lease_seconds: 3,
        }),
        ..config()
    };
    let metrics = Arc::new(Metrics::new());
    let task = {
        let (client, metrics) = (c.operator.clone(), metrics.clone());
        tokio::spawn(async move {
            keyward::operator::run(
                client,
                config,
                metrics,
                keyward::operator::Shutdown::new().1,
            )
            .await
        })
    };
    let leading = || metrics.leader.get() == 1;
    eventually("a leads", RECONCILES, || async { leading() }).await;
    create_reader(&c, json!({})).await;
    // Someone else takes the Lease: a notices at its next renewal and stops.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client.clone(), "keyward-system");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    leases
        .patch(
            "keyward-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "thief", "renewTime": now, "leaseDurationSeconds": 3}})),
        )
        .await
        .unwrap();
    eventually("a stops leading", RECONCILES, || async { !leading() }).await;
    // A policy made while a does not lead gets nothing from it.
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut late = policy(
        json!([{"name": "late", "defaultPermissions": ["GET"], "secret": {"name": "late", "keyField": "KEY"}}]),
        json!({}),
    );
    late.metadata.name = Some("late".into());
    policies
        .create(&PostParams::default(), &late)
        .await
        .unwrap();
    // The thief does not renew: once its Lease runs out, a takes over again. Until then (the
    // whole time, not a sample of it) a reconciles nothing: neither `web`'s drift checks, every
    // second, nor the new policy.
    let reconciles = || {
        ["ok", "error"]
            .iter()
            .map(|r| {
                metrics
                    .reconciles
                    .get_or_create(&keyward::operator::metrics::ResultLabels {
                        result: (*r).into(),
                    })
                    .get()
            })
            .sum::<u64>()
    };
    let frozen = reconciles();
    let not_leading = std::time::Instant::now();
    let mut out_for = Duration::ZERO;
    while !leading() {
        // Read in this order: the gauge goes to 1 before the controller starts.
        let now = reconciles();
        if leading() {
            break;
        }
        assert_eq!(now, frozen, "reconciled while a did not lead");
        out_for = not_leading.elapsed();
        assert!(out_for < RECONCILES, "a never leads again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        out_for >= Duration::from_secs(1),
        "out for {out_for:?}: at least a drift interval, or the check proves little"
    );
    wait_reason(&c, "late", "Ready").await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_writes() {
    let c = cluster().await;
    // Long enough that a busy machine renews in time (the leader renews a third before the
    // end); the takeover below waits for the lease to run out.
    const LEASE_SECONDS: u64 = 8;
    let replica = |name: &str| {
        let config = OperatorConfig {
            field_manager: format!("keyward-{name}"),
            leader_election: Some(keyward::operator::LeaderElection {
                namespace: "keyward-system".into(),
                lease_name: "keyward-operator".into(),
                identity: name.into(),
                lease_seconds: LEASE_SECONDS,
            }),
            ..config()
        };
        let client = c.operator.clone();
        let metrics = Arc::new(Metrics::new());
        let task = {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                keyward::operator::run(
                    client,
                    config,
                    metrics,
                    keyward::operator::Shutdown::new().1,
                )
                .await
            })
        };
        (task, metrics)
    };
    let holder = || lease_holder(&c);
    let (a, a_metrics) = replica("a");
    eventually("a holds the lease", RECONCILES, || async {
        holder().as_deref() == Some("a")
    })
    .await;
    let (b, b_metrics) = replica("b");
    // b is up (standing by: ready) before anything is asked of the operator.
    eventually("b stands by", RECONCILES, || async {
        b_metrics.ready.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let policies = create_reader(&c, json!({})).await;
    let reconciled = |m: &Metrics| {
        m.reconciles
            .get_or_create(&keyward::operator::metrics::ResultLabels {
                result: "ok".into(),
            })
            .get()
    };
    // Two more drift checks by the leader; the standby replica reconciled nothing.
    let seen = reconciled(&a_metrics);
    eventually("two more reconciles by the leader", RECONCILES, || async {
        reconciled(&a_metrics) >= seen + 2
    })
    .await;
    assert_eq!(
        reconciled(&b_metrics),
        0,
        "the standby replica reconciles nothing"
    );
    assert_eq!(
        c.emu.managers_of("api/v1/secrets", "shop", "reader"),
        ["keyward-a".to_owned()].into(),
        "one writer"
    );
    assert_eq!(
        c.emu
            .managers_of("apis/keyward.dev/v1alpha1/apikeypolicies", "shop", "web"),
        ["keyward-a".to_owned()].into(),
        "status by the leader only"
    );

    // The leader goes away: the other replica takes over after the lease runs out.
    a.abort();
    let mut second = policy(
        json!([{"name": "two", "defaultPermissions": ["GET"], "secret": {"name": "two", "keyField": "KEY"}}]),
        json!({}),
    );
    second.metadata.name = Some("second".into());
    policies
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    eventually(
        "the standby replica takes over",
        Duration::from_secs(LEASE_SECONDS) + RECONCILES,
        || async { secret_value(&c, "two").await.is_some() },
    )
    .await;
    assert_eq!(holder().as_deref(), Some("b"));
    assert_eq!(
        c.emu.managers_of("api/v1/secrets", "shop", "two"),
        ["keyward-b".to_owned()].into(),
        "written by the new leader"
    );
    assert!(reconciled(&b_metrics) > 0);
    b.abort();
}

/// The value of one sample line (`name{labels} value`) of a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = keyward::operator::metrics::router(ctx.metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |path: &'static str| {
        let url = url.clone();
        async move {
            let r = reqwest::get(format!("{url}{path}")).await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    // Before any reconcile: the histogram is there, with nothing counted.
    let (_, text) = get("/metrics").await;
    assert_eq!(
        sample(&text, "keyward_reconcile_duration_seconds_count"),
        Some(0.0),
        "{text}"
    );
    create_policy(&c, reader(), json!({})).await;
    wait_ready(&c).await;
    more_reconciles(&ctx, "web", 1).await;
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (_, text) = get("/metrics").await;
    let ok = sample(&text, "keyward_reconciles_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(ok >= 2.0, "{text}");
    let observed = sample(&text, "keyward_reconcile_duration_seconds_count").unwrap();
    assert!(observed >= 2.0, "every reconcile is timed: {text}");
    assert!(
        sample(&text, "keyward_reconcile_duration_seconds_sum").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "keyward_keys{state=\"ready\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "keyward_keys{state=\"missing\"}"),
        Some(0.0),
        "{text}"
    );
    // A content key lives a year by default: its expiry, as a Unix time (not seconds left,
    // which would be stale between reconciles), is the one its status shows.
    let at = sample(
        &text,
        "keyward_key_expiry_timestamp_seconds{namespace=\"shop\",policy=\"web\",key=\"reader\"}",
    )
    .unwrap();
    let status = ready(&c).await.unwrap();
    let expires: jiff::Timestamp = status["keys"][0]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(at, expires.as_second() as f64, "{text}");
    let year = 365.0 * 86400.0;
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(at > now + year - 3600.0 && at <= now + year, "{at}");
    assert_eq!(
        sample(
            &text,
            "keyward_policy_ready{namespace=\"shop\",policy=\"web\"}"
        ),
        Some(1.0),
        "{text}"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_sync_annotation_repairs_drift_at_once() {
    let c = cluster().await;
    // No drift check for an hour: only the annotation can bring the repair.
    let (_, op) = start(
        &c,
        OperatorConfig {
            drift_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let policies = create_reader(&c, json!({})).await;
    let id = cms_keys(&c).await[0]["id"].as_str().unwrap().to_owned();
    drift(&c, &id, json!(["GET", "DELETE"])).await;
    annotate(
        &policies,
        json!({"keyward.dev/force-sync": "2026-11-23T06:00:00Z"}),
    )
    .await;
    eventually("repaired", RECONCILES, || async {
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .body["defaultPermissions"]
            == json!(["GET"])
    })
    .await;
    let st = ready(&c).await.unwrap();
    assert_eq!(
        condition(&st, "Drifted").unwrap()["reason"],
        "DriftRepaired",
        "{st}"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_secret_that_appears_later_is_picked_up() {
    let c = cluster().await;
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .delete("cms-admin", &DeleteParams::default())
        .await
        .unwrap();
    let (_, op) = start(
        &c,
        OperatorConfig {
            drift_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    create_policy(&c, reader(), json!({})).await;
    eventually("NoCredentials", RECONCILES, || async {
        ready(&c).await.is_some_and(|s| {
            condition(&s, "Ready").is_some_and(|r| {
                r["reason"] == "NoCredentials"
                    && r["message"].as_str().unwrap().contains("shop/cms-admin")
            })
        })
    })
    .await;
    // No drift check for an hour: only the watch on credential Secrets can wake the policy.
    create(&c.client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin", "labels": {"keyward.dev/credential": "true"}}, "data": {"token": b64(ADMIN)}})).await;
    wait_ready(&c).await;
    assert!(secret_value(&c, "reader").await.is_some());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_secret_labelled_as_a_credential_is_used_as_one() {
    let c = cluster().await;
    // A connection naming a Secret of its namespace that is not a credential (a database
    // password, say): the operator never reads it, let alone sends it to the endpoint.
    let secrets = Api::<Secret>::namespaced(c.client.clone(), "shop");
    secrets
        .delete("cms-admin", &DeleteParams::default())
        .await
        .unwrap();
    create(&c.client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin"}, "data": {"token": b64(ADMIN)}})).await;
    let (_, op) = start(&c, config());
    create_policy(&c, reader(), json!({})).await;
    eventually("NoCredentials naming the label", RECONCILES, || async {
        ready(&c).await.is_some_and(|s| {
            condition(&s, "Ready").is_some_and(|r| {
                r["reason"] == "NoCredentials"
                    && r["message"]
                        .as_str()
                        .unwrap()
                        .contains("keyward.dev/credential")
            })
        })
    })
    .await;
    assert_eq!(
        c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"],
        json!([])
    );
    // Labelled, it is used (the label change wakes the policy).
    let patch = json!({"metadata": {"labels": {"keyward.dev/credential": "true"}}});
    secrets
        .patch("cms-admin", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_ready(&c).await;
    assert!(secret_value(&c, "reader").await.is_some());
    // The label taken off again: the watch says it left (DELETED for a selector that no longer
    // matches), so the operator stops using it. Before, the emulator never said so and the
    // operator's store kept the Secret as a credential.
    let patch = json!({"metadata": {"labels": {"keyward.dev/credential": null}}});
    secrets
        .patch("cms-admin", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let policies = Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop");
    annotate(&policies, json!({"keyward.dev/force-sync": "unlabelled"})).await;
    wait_reason(&c, "web", "NoCredentials").await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_orphan_or_observe_only_policy_leaves_its_keys() {
    let c = cluster().await;
    let (_, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut orphan = policy(reader(), json!({"deletionPolicy": "Orphan"}));
    orphan.metadata.name = Some("orphan".into());
    let mut observer = policy(
        json!([{"name": "watched", "defaultPermissions": ["GET"], "secret": {"name": "watched", "keyField": "KEY"}}]),
        json!({}),
    );
    observer.metadata.name = Some("observer".into());
    policies
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    policies
        .create(&PostParams::default(), &observer)
        .await
        .unwrap();
    eventually("both Secrets", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some() && secret_value(&c, "watched").await.is_some()
    })
    .await;
    let (kept, watched) = (
        secret_value(&c, "reader").await.unwrap(),
        secret_value(&c, "watched").await.unwrap(),
    );
    // The second policy is now only observed.
    policies
        .patch(
            "observer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"managementPolicy": "ObserveOnly"}})),
        )
        .await
        .unwrap();
    eventually("Synced=ObserveOnly", RECONCILES, || async {
        policies
            .get("observer")
            .await
            .ok()
            .and_then(|p| serde_json::to_value(p.status?).ok())
            .is_some_and(|st| {
                condition(&st, "Synced").is_some_and(|s| s["reason"] == "ObserveOnly")
            })
    })
    .await;
    for name in ["orphan", "observer"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually("both policies gone", RECONCILES, || async {
        policies.get_opt("orphan").await.unwrap().is_none()
            && policies.get_opt("observer").await.unwrap().is_none()
    })
    .await;
    // The finalizer ran (the policies are gone) and revoked nothing.
    assert_eq!(cms_keys(&c).await.len(), 2);
    for v in [&kept, &watched] {
        assert_eq!(
            c.cms.status(Method::GET, "/api/blog", v).await,
            StatusCode::OK
        );
    }
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observe_only_policy_reports_drift_and_writes_nothing() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let key = secret_value(&c, "reader").await.unwrap();
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"managementPolicy": "ObserveOnly"}})),
        )
        .await
        .unwrap();
    eventually("Synced=ObserveOnly", RECONCILES, || async {
        has_reason(&c, "Synced", "ObserveOnly").await
    })
    .await;
    let cms_writes = provider_of(&ctx, &c.cms.url).stats().writes();
    let secret_writes = c.emu.counters.writes_to("secrets");
    let id = cms_keys(&c).await[0]["id"].as_str().unwrap().to_owned();
    drift(&c, &id, json!(["GET", "DELETE"])).await;
    eventually("DriftFound", RECONCILES, || async {
        has_reason(&c, "Drifted", "DriftFound").await
    })
    .await;
    let st = ready(&c).await.unwrap();
    assert_eq!(condition(&st, "Drifted").unwrap()["status"], "True");
    assert_eq!(condition(&st, "Ready").unwrap()["reason"], "ChangesPending");
    let pending = st["pendingChanges"].as_array().unwrap();
    assert_eq!(
        pending[0].as_str().unwrap(),
        format!("~ update   shop/web/reader (id {id})  (ObserveOnly: not applied)"),
        "{st}"
    );
    more_reconciles(&ctx, "web", 2).await;
    assert_eq!(
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .body["defaultPermissions"],
        json!(["GET", "DELETE"]),
        "the drift stays"
    );
    assert_eq!(provider_of(&ctx, &c.cms.url).stats().writes(), cms_writes);
    assert_eq!(c.emu.counters.writes_to("secrets"), secret_writes);
    assert_eq!(
        c.cms.status(Method::DELETE, "/api/blog/x", &key).await,
        StatusCode::NOT_FOUND,
        "the drifted right works: nothing was repaired"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_flagged_before_expiry_and_rotated_within_renew_before() {
    let c = cluster().await;
    // The operator's clock, moved instead of waiting weeks.
    let clock = keyward::engine::Clock::system();
    let (ctx, op) = start(
        &c,
        OperatorConfig {
            clock: clock.clone(),
            ..config()
        },
    );
    // 30 days: Kontent.ai's reminder comes a week ahead; the rotation a day ahead.
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "expiresAfter": "30d",
        "renewBefore": "1d", "rotationOverlap": "10m", "secret": {"name": "reader", "keyField": "KEY"}}]);
    create_policy(&c, keys, json!({})).await;
    wait_ready(&c).await;
    let st = ready(&c).await.unwrap();
    assert_eq!(
        condition(&st, "KeyExpiringSoon").unwrap()["reason"],
        "NotExpiring"
    );
    let first = secret_value(&c, "reader").await.unwrap();
    let expires = st["keys"][0]["expiresAt"].as_str().unwrap().to_owned();
    let expiring = || {
        ctx.metrics
            .keys
            .get_or_create(&keyward::operator::metrics::StateLabels {
                state: "expiring".into(),
            })
            .get()
    };
    assert_eq!(expiring(), 0);

    // 23 days later: within a week of expiry, not yet within renewBefore.
    clock.advance(keyward::model::days(23) + SignedDuration::from_hours(1));
    eventually("KeyExpiringSoon", RECONCILES, || async {
        has_reason(&c, "KeyExpiringSoon", "ExpiringSoon").await
    })
    .await;
    let st = ready(&c).await.unwrap();
    let cond = condition(&st, "KeyExpiringSoon").unwrap();
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["message"], format!("reader expires at {expires}"));
    assert_eq!(expiring(), 1);
    assert_eq!(
        secret_value(&c, "reader").await.as_deref(),
        Some(first.as_str()),
        "not rotated yet"
    );
    assert!(st["keys"][0].get("rotatedAt").is_none(), "{st}");

    // Within a day of expiry: a new value, a fresh lifetime, the old value kept for the overlap.
    clock.advance(keyward::model::days(6));
    eventually("a rotated value", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some_and(|v| v != first)
    })
    .await;
    let second = secret_value(&c, "reader").await.unwrap();
    for v in [&first, &second] {
        assert_eq!(
            c.cms.status(Method::GET, "/api/blog", v).await,
            StatusCode::OK
        );
    }
    eventually("NotExpiring again", RECONCILES, || async {
        has_reason(&c, "KeyExpiringSoon", "NotExpiring").await
    })
    .await;
    let st = ready(&c).await.unwrap();
    assert!(st["keys"][0]["rotatedAt"].is_string(), "{st}");
    let renewed: jiff::Timestamp = st["keys"][0]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = renewed.duration_since(clock.now());
    assert!(
        left > keyward::model::days(30) - SignedDuration::from_hours(1),
        "a fresh 30 days from the operator's clock: {left}"
    );
    assert_eq!(expiring(), 0);
    assert_eq!(cms_keys(&c).await.len(), 1, "the same key, a new value");
    assert_event(&c, "KeyRotated", "rotated key shop/web/reader").await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_write_that_fails_revokes_the_new_key() {
    let c = cluster().await;
    // Every Secret write fails (RBAC, admission, an outage) until healed.
    c.emu.fail_writes("secrets", 500, usize::MAX);
    let (_, op) = start(&c, config());
    create_policy(&c, reader(), json!({})).await;
    eventually("ApplyFailed", RECONCILES, || async {
        has_reason(&c, "Ready", "ApplyFailed").await
    })
    .await;
    let st = ready(&c).await.unwrap();
    let msg = condition(&st, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    // "create key shop/web/reader: created key ID but could not write its Secret (...)"
    let id = msg
        .split("created key ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{msg}"))
        .to_owned();
    assert!(
        msg.contains("could not write its Secret")
            && msg.contains("the new key was revoked; the next run creates it again"),
        "{msg}"
    );
    assert_eq!(
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "the key nobody has is gone"
    );
    assert!(secret_value(&c, "reader").await.is_none());

    c.emu.heal("secrets");
    eventually("the Secret after healing", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some()
    })
    .await;
    wait_ready(&c).await;
    let keys = cms_keys(&c).await;
    assert_eq!(keys.len(), 1, "one key in the end: {keys:?}");
    assert_eq!(
        c.cms
            .status(
                Method::GET,
                "/api/blog",
                &secret_value(&c, "reader").await.unwrap()
            )
            .await,
        StatusCode::OK
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reads_secrets_as_metadata_only() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    create_policy(&c, reader(), json!({})).await;
    wait_ready(&c).await;
    more_reconciles(&ctx, "web", 1).await;
    // Key values stay out of the operator's watches: the Secrets it owns are listed and watched
    // metadata-only; only Secrets labelled as credentials are read with their data.
    let secrets: Vec<(String, bool, String)> = c
        .emu
        .collection_reads()
        .into_iter()
        .filter(|(r, _, _)| r == "api/v1/secrets")
        .collect();
    assert!(secrets
        .iter()
        .any(|(_, meta, sel)| *meta && sel == "app.kubernetes.io/managed-by=keyward"));
    assert!(
        secrets.iter().all(|(_, meta_only, _)| *meta_only),
        "credential Secrets too are watched metadata-only: {secrets:?}"
    );
    op.abort();
}

/// The provider the controller used for the test CMS (its call counts).
fn provider_of(
    ctx: &keyward::operator::Context,
    url: &str,
) -> std::sync::Arc<dyn keyward::providers::CmsProvider> {
    ctx.used_provider(url)
        .expect("the controller has used the CMS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_trusts_its_private_ca_and_an_untrusted_certificate_is_a_tls_error() {
    let ca = support::tls::TestCa::new("cluster");
    let cms = Cms::start_with(|c| c.tls = Some(ca.server("cms", &["127.0.0.1"], false))).await;
    let emu = Emulator::new();
    let client = emu.client();
    create(
        &client,
        "api/v1",
        "namespaces",
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    )
    .await;
    let labels = json!({"keyward.dev/credential": "true"});
    create(&client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin", "labels": labels}, "data": {"token": b64(ADMIN)}})).await;
    let ca_pem = String::from_utf8(ca.ca_bytes()).unwrap();
    create(&client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-ca", "labels": labels}, "data": {"ca.crt": b64(&ca_pem)}})).await;
    create(&client, "apis/keyward.dev/v1alpha1", "cmsconnections", Some("shop"), json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "main"},
        "spec": {"endpoint": cms.url, "credentialsSecretRef": {"name": "cms-admin"}, "tls": {"caSecretRef": {"name": "cms-ca"}}}})).await;
    let c = Cluster {
        operator: operator_client(&emu),
        emu,
        client,
        cms,
    };
    let (_, op) = start(&c, config());
    create_policy(&c, reader(), json!({})).await;
    wait_ready(&c).await;
    assert!(secret_value(&c, "reader").await.is_some());
    // Without the CA, the endpoint's certificate has an unknown issuer: TlsError, named.
    let patch = json!({"spec": {"tls": null}});
    Api::<keyward::policy::CmsConnection>::namespaced(c.client.clone(), "shop")
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("Ready=False, TlsError", RECONCILES, || async {
        ready(&c).await.is_some_and(|s| {
            condition(&s, "Ready").is_some_and(|r| {
                r["status"] == "False"
                    && r["reason"] == "TlsError"
                    && r["message"]
                        .as_str()
                        .unwrap()
                        .contains("unknown issuer for 127.0.0.1")
            })
        })
    })
    .await;
    op.abort();
}

/// The operator binary, as in a pod, against the emulator: its log goes to `log`.
struct OperatorProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    async fn start(c: &Cluster, args: &[&str]) -> OperatorProcess {
        let base = c.emu.serve_http().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, Emulator::kubeconfig(&base)).unwrap();
        let log = dir.path().join("operator.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["operator", "--metrics-addr", "127.0.0.1:0"])
            .args(["--leader-election", "--lease-namespace", "keyward-system"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KEYWARD_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        OperatorProcess {
            child,
            log,
            _dir: dir,
        }
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let kill = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// Its exit status. Waits on the exit itself; the 30 s only keeps a hung operator from
    /// hanging the suite.
    async fn exit(&mut self) -> std::process::ExitStatus {
        let sent = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("still running 30 s after the signal:\n{}", self.logged());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Kubernetes stops a pod with SIGTERM: the operator (the binary, as in a pod) stops taking
/// work, releases its Lease (so nobody waits for it to run out) and exits 0 within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_releases_the_lease_and_exits_0() {
    let c = cluster().await;
    let mut op = OperatorProcess::start(
        &c,
        &[
            "--drift-interval",
            "1s",
            "--identity",
            "pod-a",
            "--shutdown-grace",
            "5s",
        ],
    )
    .await;
    let holder = || lease_holder(&c);
    eventually("pod-a holds the lease", RECONCILES, || async {
        holder().as_deref() == Some("pod-a")
    })
    .await;
    create_policy(&c, reader(), json!({})).await;
    wait_ready(&c).await;

    op.signal("TERM");
    let status = op.exit().await;
    let logged = op.logged();
    assert_eq!(status.code(), Some(0), "{status:?}\n{logged}");
    assert_eq!(holder(), None, "the lease is released\n{logged}");
    assert!(logged.contains("lease released"), "{logged}");
    assert!(
        !logged.contains("abandoned"),
        "nothing was running: nothing abandoned\n{logged}"
    );
    assert!(
        secret_value(&c, "reader").await.is_some(),
        "the workload keeps its key"
    );
}

/// A policy whose CMS hangs, with the operator (the binary) reconciling it: the proxy has the
/// reconcile's call in hand when this returns.
async fn a_reconcile_that_hangs(
    c: &Cluster,
    args: &[&str],
) -> (OperatorProcess, support::proxy::Proxy) {
    use support::proxy::{Fault, Proxy};
    let hung = Proxy::start(&c.cms.url, |_| Some(Fault::Stall)).await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "hung"},
            "spec": {"endpoint": hung.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    create_policy(c, reader(), json!({"connectionRef": {"name": "hung"}})).await;
    let op = OperatorProcess::start(c, args).await;
    eventually(
        "a reconcile waits on the CMS that hangs",
        RECONCILES,
        // Not the connection's own status check (GET /v1/apis): a reconcile's call.
        || async { hung.seen().iter().any(|s| s.path != "/v1/apis") },
    )
    .await;
    (op, hung)
}

/// SIGTERM while a reconcile waits on a CMS that hangs: the operator waits the shutdown grace,
/// abandons that reconcile (saying so), still releases its Lease and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_reconcile_that_outlasts_the_grace_abandons_it_and_exits_0() {
    let c = cluster().await;
    let (mut op, _hung) =
        a_reconcile_that_hangs(&c, &["--identity", "pod-a", "--shutdown-grace", "1s"]).await;
    assert_eq!(lease_holder(&c).as_deref(), Some("pod-a"));

    op.signal("TERM");
    let status = op.exit().await;
    let logged = op.logged();
    assert_eq!(status.code(), Some(0), "{status:?}\n{logged}");
    assert!(
        logged.contains("running reconciles did not finish in time: abandoned"),
        "{logged}"
    );
    assert_eq!(lease_holder(&c), None, "the lease is released\n{logged}");
}

/// A second SIGTERM (or Ctrl-C) during the drain stops at once, exit 1: a person who presses
/// Ctrl-C twice does not wait out the grace. The Lease is not released; it runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_stops_at_once_with_exit_1() {
    let c = cluster().await;
    let (mut op, _hung) =
        a_reconcile_that_hangs(&c, &["--identity", "pod-a", "--shutdown-grace", "10m"]).await;

    op.signal("TERM");
    eventually("the drain begins", RECONCILES, || async {
        op.logged().contains("waiting for running ones")
    })
    .await;
    op.signal("INT");
    let status = op.exit().await;
    let logged = op.logged();
    assert_eq!(status.code(), Some(1), "{status:?}\n{logged}");
    assert!(
        logged.contains("second signal: stopping at once"),
        "{logged}"
    );
    assert!(!logged.contains("abandoned"), "{logged}");
    assert_eq!(
        lease_holder(&c).as_deref(),
        Some("pod-a"),
        "not released: it runs out\n{logged}"
    );
}

/// A CMS that is down (503 with `Retry-After: 60`) holds no worker for long: each reconcile of
/// its policies stops retrying at the budget, reports `CmsUnavailable` and backs off, and a
/// policy on another connection, created while every worker waits on that CMS, gets its key
/// within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cms_that_is_down_does_not_hold_the_workers_other_connections_need() {
    use support::proxy::{Fault, Proxy};
    let c = cluster().await;
    let down = Proxy::start(&c.cms.url, |_| Some(Fault::Answer(503, Some(60)))).await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "down"},
            "spec": {"endpoint": down.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    for i in 0..10 {
        let keys = json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": format!("down-{i}"), "keyField": "KEY"}}]);
        let mut p = policy(keys, json!({"connectionRef": {"name": "down"}}));
        p.metadata.name = Some(format!("down-{i}"));
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    let (_ctx, op) = start(&c, config());
    // The CMS that is down gets calls (two reconciles at a time: its share of the workers).
    eventually(
        "reconciles call the CMS that is down",
        RECONCILES,
        || async { down.seen().len() >= 8 },
    )
    .await;
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually(
        "the policy on the working CMS gets its key",
        RECONCILES,
        || async { secret_value(&c, "reader").await.is_some() },
    )
    .await;
    eventually(
        "the policies on the CMS that is down say so",
        RECONCILES,
        || async {
            let mut said = false;
            for i in 0..10 {
                let Ok(p) = policies.get(&format!("down-{i}")).await else {
                    continue;
                };
                let status = serde_json::to_value(p.status).unwrap_or_default();
                said |= condition(&status, "Ready")
                    .is_some_and(|r| r["status"] == "False" && r["reason"] == "CmsUnavailable");
            }
            said
        },
    )
    .await;
    op.abort();
}

fn finalizers_of(c: &Cluster, path: &str, name: &str) -> Vec<String> {
    c.emu
        .get(path, "shop", name)
        .and_then(|o| o.pointer("/metadata/finalizers").cloned())
        .and_then(|f| serde_json::from_value(f).ok())
        .unwrap_or_default()
}

const CONNECTIONS: &str = "apis/keyward.dev/v1alpha1/cmsconnections";
const SECRETS: &str = "api/v1/secrets";
const POLICIES: &str = "apis/keyward.dev/v1alpha1/apikeypolicies";
const ROLES: &str = "apis/rbac.authorization.k8s.io/v1/roles";

/// Deleting a namespace deletes its policies, connections and credential Secrets at once. The
/// in-use finalizers keep the connection and its Secret until the policy's keys are revoked;
/// then everything goes, nothing is left `Terminating`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_everything_at_once_still_revokes_the_keys_and_then_lets_go() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let value = secret_value(&c, "reader").await.unwrap();
    let in_use = "keyward.dev/in-use".to_owned();
    eventually(
        "the connection and its Secret are marked in use",
        RECONCILES,
        || async {
            finalizers_of(&c, CONNECTIONS, "main").contains(&in_use)
                && finalizers_of(&c, SECRETS, "cms-admin").contains(&in_use)
        },
    )
    .await;

    // As a namespace deletion may: the Secret and the connection first, then the policy.
    let dp = DeleteParams::default();
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .delete("cms-admin", &dp)
        .await
        .unwrap();
    Api::<keyward::policy::CmsConnection>::namespaced(c.client.clone(), "shop")
        .delete("main", &dp)
        .await
        .unwrap();
    assert!(
        c.emu.get(CONNECTIONS, "shop", "main").is_some(),
        "kept while in use"
    );
    policies.delete("web", &dp).await.unwrap();
    eventually(
        "the policy, the connection and the Secret are gone",
        RECONCILES,
        || async {
            c.emu.get(POLICIES, "shop", "web").is_none()
                && c.emu.get(CONNECTIONS, "shop", "main").is_none()
                && c.emu.get(SECRETS, "shop", "cms-admin").is_none()
        },
    )
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::UNAUTHORIZED,
        "the key was revoked before its connection went"
    );
    op.abort();
}

/// A second reconcile of a deletion, from a cached copy taken before the first one let the
/// policy go (what a watch that lags behind hands the controller), finds the policy gone: that
/// is the deletion done, not a failure to log and retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reconciled_again_after_the_policy_is_gone_is_done() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let mut stale = policies.get("web").await.unwrap();
    assert!(stale
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| !f.is_empty()));
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the policy is gone, and its Secret collected",
        RECONCILES,
        || async {
            c.emu.get(POLICIES, "shop", "web").is_none()
                && c.emu.get(SECRETS, "shop", "reader").is_none()
        },
    )
    .await;
    op.abort();
    let _ = op.await;
    stale.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let writes = c
        .emu
        .counters
        .writes
        .load(std::sync::atomic::Ordering::Relaxed);
    let cms_writes = provider_of(&ctx, &c.cms.url).stats().writes();
    let again = keyward::operator::reconcile::reconcile(Arc::new(stale), ctx.clone()).await;
    // Done: nothing to wait for, and nothing made or revoked on the way. Its one CMS write
    // drops the policy's settings entry again (already gone: the CMS answers it as done); its
    // one Kubernetes write is the finalizer removal, answered 404.
    assert_eq!(
        again.ok(),
        Some(kube::runtime::controller::Action::await_change())
    );
    assert_eq!(
        provider_of(&ctx, &c.cms.url).stats().writes(),
        cms_writes + 1
    );
    assert_eq!(
        c.emu
            .counters
            .writes
            .load(std::sync::atomic::Ordering::Relaxed),
        writes + 1
    );
    assert!(cms_keys(&c).await.is_empty());
    assert!(c.emu.get(SECRETS, "shop", "reader").is_none());
}

/// A connection that is gone for good (here: removed without keyward running) leaves the
/// policy's deletion stuck, saying how to get out; the annotation lets it go and leaves the
/// key in the CMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_keys_lets_a_policy_go_when_its_keys_cannot_be_revoked() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let value = secret_value(&c, "reader").await.unwrap();
    op.abort();
    let _ = op.await;
    drop(ctx);
    // Without the operator, nothing protects the connection: it goes.
    let connections = Api::<keyward::policy::CmsConnection>::namespaced(c.client.clone(), "shop");
    connections
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    connections
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    assert!(c.emu.get(CONNECTIONS, "shop", "main").is_none());

    let (_ctx, op) = start(&c, config());
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    // Stuck, and saying so where `kubectl describe` shows it, with the way out.
    let st = wait_reason(&c, "web", "DeletionBlocked").await;
    let message = condition(&st, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("CmsConnection shop/main")
            && message.contains("annotate it keyward.dev/abandon-keys=true"),
        "{message}"
    );
    assert_event(&c, "DeletionBlocked", "cannot revoke the keys: ").await;
    assert!(
        c.emu.get(POLICIES, "shop", "web").is_some(),
        "cannot revoke: kept"
    );
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK,
        "nothing revoked"
    );
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"keyward.dev/abandon-keys": "true"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("the policy is gone", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
    })
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK,
        "the key stays, unmanaged"
    );
    op.abort();
}

fn secret_data(c: &Cluster, name: &str) -> Vec<String> {
    c.emu
        .get(SECRETS, "shop", name)
        .and_then(|s| s.get("data").cloned())
        .and_then(|d| d.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default()
}

async fn wait_reason(c: &Cluster, policy: &str, reason: &str) -> Value {
    let api = Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop");
    let status = || async {
        api.get_opt(policy)
            .await
            .ok()
            .flatten()
            .and_then(|p| serde_json::to_value(p.status).ok())
            .unwrap_or_default()
    };
    eventually(
        &format!("{policy}: Ready=False {reason}"),
        RECONCILES,
        || async { condition(&status().await, "Ready").is_some_and(|r| r["reason"] == reason) },
    )
    .await;
    status().await
}

/// A policy naming a Secret that exists and is not its own (another app's, another policy's)
/// leaves it alone and reports SecretConflict; `secret.adopt: true` replaces it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_keyward_did_not_write_are_never_taken_over_unless_adopted() {
    let c = cluster().await;
    create(&c.client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-credentials"}, "type": "Opaque", "data": {"password": b64("hunter2")}})).await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let db_key = |adopt: bool| {
        json!([{"name": "reader", "defaultPermissions": ["GET"],
            "secret": {"name": "db-credentials", "keyField": "KEY", "adopt": adopt}}])
    };
    policies
        .create(&PostParams::default(), &policy(db_key(false), json!({})))
        .await
        .unwrap();
    let status = wait_reason(&c, "web", "SecretConflict").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("db-credentials") && message.contains("secret.adopt"),
        "{message}"
    );
    assert_eq!(secret_data(&c, "db-credentials"), ["password"], "untouched");
    let stored = c.emu.get(SECRETS, "shop", "db-credentials").unwrap();
    assert!(
        stored.pointer("/metadata/ownerReferences").is_none(),
        "{stored}"
    );
    let keys = c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"].clone();
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(0),
        "no key was made: {keys}"
    );

    // Adopted: replaced whole, with the key and nothing of what it held. The first PUT meets
    // a 409 (someone changed the Secret meanwhile): it is read again and replaced, one key made.
    let writes = c.emu.counters.writes_to("secrets");
    c.emu.fail_writes("secrets", 409, 1);
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keys": db_key(true)}})),
        )
        .await
        .unwrap();
    eventually("the Secret is adopted", RECONCILES, || async {
        secret_data(&c, "db-credentials").contains(&"KEY".to_owned())
    })
    .await;
    assert_eq!(secret_data(&c, "db-credentials"), ["KEY"]);
    // The replace that adopted it names the operator's field manager: its later applies own
    // the fields they find.
    assert!(
        c.emu
            .managers_of("api/v1/secrets", "shop", "db-credentials")
            .contains("keyward"),
        "{:?}",
        c.emu
            .managers_of("api/v1/secrets", "shop", "db-credentials")
    );
    let value = secret_value(&c, "db-credentials").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    assert_eq!(cms_keys(&c).await.len(), 1, "one key, not one per attempt");
    assert_eq!(
        c.emu.counters.writes_to("secrets") - writes,
        2,
        "the PUT that met the 409, then the one that took"
    );

    // A second policy naming the first one's Secret gets a conflict; the first keeps it.
    let mut other = policy(
        json!([{"name": "two", "defaultPermissions": ["GET"], "secret": {"name": "db-credentials", "keyField": "KEY"}}]),
        json!({}),
    );
    other.metadata.name = Some("other".into());
    policies
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let status = wait_reason(&c, "other", "SecretConflict").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(message.contains("ApiKeyPolicy web"), "{message}");
    assert_eq!(secret_value(&c, "db-credentials").await.unwrap(), value);
    op.abort();
}

/// A tenant admitted to a shared connection cannot use its admin credential for more than the
/// connection allows: a management key, a `*` key, public endpoints and CORS are refused by
/// default, and an `allow` ceiling bounds APIs and the keys of a namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_connection_gives_tenants_only_what_it_allows() {
    let c = cluster().await;
    shared_connection(&c, json!({"namespaces": ["shop"]})).await;
    let (ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let shared = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"},
        "publicEndpoints": [{"api": "blog", "operations": ["create"]}]});
    let mut p = policy(
        json!([
            {"name": "admin", "kind": "management", "managementPermissions": ["keys:manage"], "secret": {"name": "admin"}},
            {"name": "star", "scopes": ["*"], "secret": {"name": "star"}},
            {"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"}}
        ]),
        shared.clone(),
    );
    p.metadata.name = Some("greedy".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
    let status = wait_reason(&c, "greedy", "NotAllowed").await;
    let message = condition(&status, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    for expected in [
        "spec.keys[0].kind: ClusterCmsConnection shared does not allow management keys (spec.allow.kinds: [content])",
        "spec.keys[0].managementPermissions[0]: ClusterCmsConnection shared does not allow management permission 'keys:manage'",
        "spec.keys[1].scopes[0]: ClusterCmsConnection shared does not allow scope '*'",
        "spec.publicEndpoints: ClusterCmsConnection shared does not allow public endpoints (spec.allow.publicEndpoints: false)",
    ] {
        assert!(message.contains(expected), "{expected}\n in {message}");
    }
    let keys = c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"].clone();
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(0),
        "refused whole: {keys}"
    );

    // A ceiling on APIs and on keys per namespace: the policy within it is served.
    Api::<keyward::policy::ClusterCmsConnection>::all(c.client.clone())
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allow": {"apis": ["blo*"], "maxKeysPerNamespace": 1}}})),
        )
        .await
        .unwrap();
    let mut ok = policy(
        json!([{"name": "reader", "apiPermissions": [{"api": "blog", "permissions": ["GET"]}], "secret": {"name": "reader", "keyField": "KEY"}}]),
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}}),
    );
    ok.metadata.name = Some("fits".into());
    policies.create(&PostParams::default(), &ok).await.unwrap();
    eventually(
        "the policy within the ceilings gets its key",
        RECONCILES,
        || async { secret_value(&c, "reader").await.is_some() },
    )
    .await;
    let mut more = policy(
        json!([{"name": "contact", "apiPermissions": [{"api": "contact", "permissions": ["POST"]}], "secret": {"name": "contact"}}]),
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}}),
    );
    more.metadata.name = Some("more".into());
    policies
        .create(&PostParams::default(), &more)
        .await
        .unwrap();
    let status = wait_reason(&c, "more", "NotAllowed").await;
    let message = condition(&status, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("spec.keys[0].apiPermissions[0].api: ClusterCmsConnection shared does not allow API 'contact' (spec.allow.apis: [blo*])"), "{message}");
    assert!(message.contains("spec.keys: ClusterCmsConnection shared does not allow 2 keys in this namespace (spec.allow.maxKeysPerNamespace: 1)"), "{message}");
    // The policy that was there first keeps working, checked again under the new ceilings.
    more_reconciles(&ctx, "fits", 3).await;
    let fits = policies.get("fits").await.unwrap();
    let st = serde_json::to_value(fits.status).unwrap();
    assert_eq!(condition(&st, "Ready").unwrap()["status"], "True", "{st}");
    op.abort();
}

/// Every right a policy can cause in the CMS is inside a shared connection's ceilings: under
/// an `apis` ceiling, public endpoints of other APIs, scopes that reach every API (export) and
/// management permissions that do are refused, and so is a personal key of a member the
/// platform did not list (it would hold that member's role). Nothing is made or opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_that_reach_past_a_shared_connections_ceilings_are_refused() {
    let c = cluster().await;
    let r = c
        .cms
        .admin(
            Method::PUT,
            "/v1/roles/admin",
            Some(json!({"contentPermissions": ["GET", "POST", "DELETE"], "managementPermissions": ["keys:manage"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = c
        .cms
        .admin(
            Method::POST,
            "/v1/members",
            Some(json!({"name": "root", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    shared_connection(
        &c,
        json!({"namespaces": ["shop"], "allow": {"apis": ["blog"], "publicEndpoints": true,
            "kinds": ["content", "management", "personal"],
            "scopes": ["export:write", "content:read"],
            "managementPermissions": ["content:read", "settings:manage"]}}),
    )
    .await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut p = policy(
        json!([
            {"name": "export", "apiPermissions": [{"api": "blog", "permissions": ["GET"]}], "scopes": ["export:write"], "secret": {"name": "export"}},
            {"name": "mgmt", "kind": "management", "managementPermissions": ["content:read", "settings:manage"], "secret": {"name": "mgmt"}},
            {"name": "me", "kind": "personal", "owner": "root", "secret": {"name": "me"}}
        ]),
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"},
               "publicEndpoints": [{"api": "contact", "operations": ["create", "delete"]}]}),
    );
    p.metadata.name = Some("reach".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
    let status = wait_reason(&c, "reach", "NotAllowed").await;
    let message = condition(&status, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    for expected in [
        "spec.keys[0].scopes[0]: ClusterCmsConnection shared does not allow scope 'export:write', which reaches every API",
        "spec.keys[1].managementPermissions[0]: ClusterCmsConnection shared does not allow management permission 'content:read', which reaches every API",
        "spec.keys[1].managementPermissions[1]: ClusterCmsConnection shared does not allow management permission 'settings:manage', which reaches every API",
        "spec.keys[2].owner: ClusterCmsConnection shared does not allow a personal key of member 'root'",
        "spec.publicEndpoints[0].api: ClusterCmsConnection shared does not allow API 'contact' (spec.allow.apis: [blog])",
    ] {
        assert!(message.contains(expected), "{expected}\n in {message}");
    }
    assert!(cms_keys(&c).await.is_empty(), "nothing was made");
    let public = c
        .cms
        .admin(Method::GET, "/v1/apis/contact/public", None)
        .await;
    assert_eq!(public.body["effective"], json!([]), "{}", public.text);
    op.abort();
}

/// Any tenant can label a Secret as a credential: the operator watches them metadata-only and
/// reads the data of the ones a connection names (one GET, again only when it changed), so
/// labelled Secrets nobody names cost it no memory; a credential over 16 KiB is refused with
/// the reason; and what is kept for a policy or a connection (backoff, force-sync state,
/// metric series, providers) goes when it goes. Before, every labelled Secret in the cluster
/// was cached with its data (300 of 1 MiB outgrew the chart's 256Mi limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_secrets_nobody_names_cost_no_memory_and_nothing_outlives_its_policy() {
    let c = cluster().await;
    let junk = "j".repeat(200 * 1024);
    for i in 0..30 {
        create(
            &c.client,
            "api/v1",
            "secrets",
            Some("shop"),
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("junk-{i}"), "labels": {"keyward.dev/credential": "true"}},
            "data": {"token": b64(&junk)}}),
        )
        .await;
    }
    let (ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    assert_eq!(
        ctx.secret_bytes_held(),
        ADMIN.len(),
        "only the named credential is held"
    );
    let metrics = || ctx.metrics.encode();
    assert!(metrics()
        .contains("keyward_key_expiry_timestamp_seconds{namespace=\"shop\",policy=\"web\""));
    assert!(metrics().contains("keyward_policy_ready{namespace=\"shop\",policy=\"web\"} 1"));

    // An oversized credential is refused, with how large it is and may be.
    let big = "t".repeat(20 * 1024);
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .patch(
            "cms-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": b64(&big)}})),
        )
        .await
        .unwrap();
    let status = wait_reason(&c, "web", "NoCredentials").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("holds 20480 bytes; a credential holds at most 16384"),
        "{message}"
    );
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .patch(
            "cms-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": b64(ADMIN)}})),
        )
        .await
        .unwrap();
    wait_ready(&c).await;

    // A force-sync, then the policy and its connection go: nothing of them is kept.
    annotate(&policies, json!({"keyward.dev/force-sync": "1"})).await;
    more_reconciles(&ctx, "web", 1).await;
    assert!(ctx.policies_tracked() > 0);
    assert_eq!(ctx.providers_kept(), 1);
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy is gone", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
    })
    .await;
    Api::<keyward::policy::CmsConnection>::namespaced(c.client.clone(), "shop")
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the connection is gone", RECONCILES, || async {
        c.emu.get(CONNECTIONS, "shop", "main").is_none()
    })
    .await;
    let stores = ctx.stores().unwrap();
    eventually("the stores saw them go", RECONCILES, || async {
        stores.policies.state().is_empty() && stores.connections.state().is_empty()
    })
    .await;
    ctx.forget_gone(&stores);
    assert_eq!(
        ctx.policies_tracked(),
        0,
        "per-policy state of a deleted policy"
    );
    assert_eq!(
        ctx.providers_kept(),
        0,
        "the provider of a deleted connection"
    );
    assert!(
        !metrics().contains("policy=\"web\""),
        "the deleted policy's series: {}",
        metrics()
    );
    op.abort();
}

/// An endpoint that accepts connections and never answers cannot starve everyone: each
/// reconcile's calls end at `--reconcile-timeout`, and one connection holds at most
/// `--workers-per-connection` workers, so a policy on another connection gets its key while
/// the hung calls are still open. Before, eight policies on such an endpoint held all eight
/// workers for 30 s a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cms_that_never_answers_holds_its_share_of_the_workers_only() {
    let c = cluster().await;
    // Accepts, reads nothing, answers nothing; counts what is open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}", listener.local_addr().unwrap());
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (o, m) = (open.clone(), most.clone());
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            let (o, m) = (o.clone(), m.clone());
            held.push(tokio::spawn(async move {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                    .await
                    .unwrap_or(0);
                // The connection's own status check (one call, not a worker's) is not counted.
                let counted = !buf[..n].starts_with(b"GET /v1/apis ");
                if counted {
                    let now = o.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    m.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                }
                // Until the client gives up and closes.
                while tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
                if counted {
                    o.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
        }
    });
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "hung"},
        "spec": {"endpoint": hang_url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    let config = OperatorConfig {
        reconcile_timeout: Duration::from_secs(3),
        ..config()
    };
    let (_ctx, op) = start(&c, config);
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    for i in 0..12 {
        let mut p = policy(
            json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": format!("hung-{i}")}}]),
            json!({"connectionRef": {"name": "hung"}}),
        );
        p.metadata.name = Some(format!("hung-{i}"));
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    eventually("the hung endpoint holds calls", RECONCILES, || async {
        open.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    create_reader(&c, json!({})).await;
    assert!(
        open.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the policy elsewhere got its key while calls to the hung endpoint were open"
    );
    assert!(
        most.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "at most two workers on one connection: {} calls open at once",
        most.load(std::sync::atomic::Ordering::SeqCst)
    );
    // The hung calls end at the reconcile's deadline, and the policies say so.
    eventually(
        "a policy on the hung endpoint says its time ran out",
        RECONCILES,
        || async {
            let mut said = false;
            for i in 0..12 {
                let Ok(p) = policies.get(&format!("hung-{i}")).await else {
                    continue;
                };
                let status = serde_json::to_value(p.status).unwrap_or_default();
                said |= condition(&status, "Ready").is_some_and(|r| {
                    r["reason"] == "CmsUnavailable"
                        && r["message"].as_str().is_some_and(|m| {
                            m.contains("--reconcile-timeout") || m.contains("timed out")
                        })
                });
            }
            said
        },
    )
    .await;
    op.abort();
    hang.abort();
}

/// Every policy on a connection holds its own entry in the CMS's CORS origins and public
/// endpoints, but only an admitted one within the ceilings writes it: a namespace the shared
/// connection does not admit cannot open an API or add an origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admitted_policies_shape_a_shared_connections_settings() {
    let c = cluster().await;
    create(
        &c.client,
        "api/v1",
        "namespaces",
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "evil"}}),
    )
    .await;
    create(&c.client, "apis/keyward.dev/v1alpha1", "clustercmsconnections", None, json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterCmsConnection", "metadata": {"name": "shared"},
        "spec": {"endpoint": c.cms.url, "credentialsSecretRef": {"name": "cms-admin", "namespace": "shop"},
            "namespaces": ["shop"], "allow": {"cors": true, "publicEndpoints": true}}})).await;
    let shared = |extra: Value| {
        let mut e = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}});
        if let (Some(a), Some(b)) = (e.as_object_mut(), extra.as_object()) {
            a.extend(b.clone());
        }
        e
    };
    // Not admitted: wants the blog writable without a key and its own origin.
    let mut grab = policy(
        json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": "k"}}]),
        shared(
            json!({"publicEndpoints": [{"api": "blog", "operations": ["create"]}],
            "cors": {"origins": ["https://evil.example"]}}),
        ),
    );
    grab.metadata.name = Some("grab".into());
    grab.metadata.namespace = Some("evil".into());
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "evil")
        .create(&PostParams::default(), &grab)
        .await
        .unwrap();
    let (ctx, op) = start(&c, config());
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(
            &PostParams::default(),
            &policy(
                reader(),
                shared(json!({"cors": {"origins": ["https://shop.example.com"]}})),
            ),
        )
        .await
        .unwrap();
    wait_ready(&c).await;
    // The refused policy is proven judged before the CMS's settings are read, and the admitted
    // one reconciled after that: a CORS list read earlier could miss what `grab` would add.
    let grabs = Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "evil");
    eventually("grab is refused", RECONCILES, || async {
        let st = grabs
            .get_opt("grab")
            .await
            .ok()
            .flatten()
            .and_then(|p| serde_json::to_value(p.status).ok())
            .unwrap_or_default();
        condition(&st, "Ready").is_some_and(|r| r["reason"] == "ConnectionNotAllowed")
    })
    .await;
    more_reconciles(&ctx, "web", 1).await;
    let cors = c.cms.admin(Method::GET, "/v1/cors", None).await.body;
    assert_eq!(
        cors["effective"],
        json!(["https://shop.example.com"]),
        "{cors}"
    );
    let public = c
        .cms
        .admin(Method::GET, "/v1/apis/blog/public", None)
        .await
        .body;
    assert_eq!(public["effective"], json!([]), "{public}");
    op.abort();
}

/// The operator's `--default-connection CmsConnection/NS/NAME` serves namespace NS only: a
/// policy elsewhere without a connectionRef is refused, as a cluster connection that does not
/// admit its namespace would refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_default_connection_serves_its_own_namespace_only() {
    let c = cluster().await;
    create(
        &c.client,
        "api/v1",
        "namespaces",
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
    )
    .await;
    let config = OperatorConfig {
        default_connection: Some("CmsConnection/shop/main".parse().unwrap()),
        ..config()
    };
    let (_ctx, op) = start(&c, config);
    let no_ref = |ns: &str, secret: &str| {
        let mut p: ApiKeyPolicy = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"keys": [{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": secret, "keyField": "KEY"}}]}}))
        .unwrap();
        p.metadata.namespace = Some(ns.into());
        p
    };
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(&PostParams::default(), &no_ref("shop", "reader"))
        .await
        .unwrap();
    wait_ready(&c).await;
    let other: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "other");
    other
        .create(&PostParams::default(), &no_ref("other", "stolen"))
        .await
        .unwrap();
    let status = || async {
        other
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .and_then(|p| serde_json::to_value(p.status).ok())
            .unwrap_or_default()
    };
    eventually("other/web: ConnectionNotAllowed", RECONCILES, || async {
        condition(&status().await, "Ready").is_some_and(|r| r["reason"] == "ConnectionNotAllowed")
    })
    .await;
    let message = condition(&status().await, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("serves policies of namespace 'shop' only"),
        "{message}"
    );
    let keys = c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"].clone();
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(1),
        "only shop's key: {keys}"
    );
    op.abort();
}

/// Each new `keyward.dev/force-sync` value asks for a CMS listing; a tenant writing it in a
/// loop gets one reconcile per 10 s, not one per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_sync_is_acted_on_at_most_once_per_ten_seconds() {
    let c = cluster().await;
    let (ctx, op, policies) = reader_with_slow_drift(&c).await;
    let force = |v: String| annotate(&policies, json!({"keyward.dev/force-sync": v}));
    let acted = || ctx.force_sync_acted_on("shop", "web");
    force("0".into()).await;
    eventually(
        "the first force-sync is acted on at once",
        RECONCILES,
        || async { acted().as_deref() == Some("0") },
    )
    .await;
    let started = std::time::Instant::now();
    for i in 1..=20 {
        force(i.to_string()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Watched the whole time: the value acted on goes from the first straight to the last,
    // once its turn comes; none of the 19 between is acted on.
    let values = std::cell::RefCell::new(vec![acted()]);
    eventually(
        "the last value is acted on, once its turn comes",
        RECONCILES,
        || {
            let now = acted();
            if values.borrow().last() != Some(&now) {
                values.borrow_mut().push(now.clone());
            }
            async move { now.as_deref() == Some("20") }
        },
    )
    .await;
    assert_eq!(
        values.into_inner(),
        [Some("0".to_owned()), Some("20".to_owned())]
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "not before the 10 s since the first: {:?}",
        started.elapsed()
    );
    op.abort();
}

/// A namespace taken off a shared connection loses its keys after the offboarding grace (with a
/// KeysRevoked event), not when they expire; and a policy that never made a key is deleted even
/// though its connection refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_no_longer_admitted_loses_its_keys_and_refused_policies_can_be_deleted() {
    let c = cluster().await;
    create(
        &c.client,
        "api/v1",
        "namespaces",
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "evil"}}),
    )
    .await;
    shared_connection(&c, json!({"namespaces": ["shop"]})).await;
    let config = OperatorConfig {
        offboarding_grace: Duration::from_secs(1),
        ..config()
    };
    let (_ctx, op) = start(&c, config);
    let shared = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}});
    create_policy(&c, reader(), shared.clone()).await;
    wait_ready(&c).await;
    let value = secret_value(&c, "reader").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );

    // Not admitted from the start: refused, never made a key, and can be deleted.
    let evil: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "evil");
    let mut p = policy(reader(), shared.clone());
    p.metadata.namespace = Some("evil".into());
    evil.create(&PostParams::default(), &p).await.unwrap();
    eventually("evil/web is refused", RECONCILES, || async {
        evil.get_opt("web")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason == "ConnectionNotAllowed")
            })
    })
    .await;
    evil.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("evil/web is gone", RECONCILES, || async {
        c.emu.get(POLICIES, "evil", "web").is_none()
    })
    .await;

    // shop is taken off the connection: after the grace its key is revoked.
    Api::<keyward::policy::ClusterCmsConnection>::all(c.client.clone())
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["other"]}})),
        )
        .await
        .unwrap();
    eventually(
        "the key of a namespace no longer admitted is revoked",
        RECONCILES,
        || async {
            c.cms.status(Method::GET, "/api/blog", &value).await == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert_event(
        &c,
        "KeysRevoked",
        "1 keys revoked: ClusterCmsConnection shared does not admit namespace 'shop'",
    )
    .await;
    op.abort();
}

/// The status of policy `name` in `shop`, as JSON (Null when there is none).
async fn status_of(c: &Cluster, name: &str) -> Value {
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| serde_json::to_value(p.status).ok())
        .unwrap_or_default()
}

/// Takes namespace `shop` off the shared connection.
async fn unadmit_shop(c: &Cluster) {
    Api::<keyward::policy::ClusterCmsConnection>::all(c.client.clone())
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["other"]}})),
        )
        .await
        .unwrap();
}

/// The offboarding grace counts from when the refusal began, on the operator's own clock.
/// Before, it counted from Ready's last transition (so a policy already Ready=False for any
/// other reason lost its keys at once) and that time came from the wall clock while the check
/// read the operator's. A policy that holds only settings (no keys) is offboarded too, and a
/// namespace the connection does not admit pins nothing of it (its in-use finalizer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_counts_its_grace_from_the_refusal_on_the_operators_clock() {
    let c = cluster().await;
    shared_connection(&c, json!({"namespaces": ["shop"], "allow": {"cors": true}})).await;
    let clock = keyward::engine::Clock::system();
    let config = OperatorConfig {
        offboarding_grace: Duration::from_secs(3600),
        clock: clock.clone(),
        ..config()
    };
    let (ctx, op) = start(&c, config);
    let shared = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}});
    create_reader(&c, shared.clone()).await;
    let value = secret_value(&c, "reader").await.unwrap();
    // A second policy holds settings only: a CORS origin.
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut settings = policy(json!([]), shared.clone());
    settings.metadata.name = Some("origins".into());
    settings.spec.cors =
        serde_json::from_value(json!({"origins": ["https://shop.example"]})).unwrap();
    policies
        .create(&PostParams::default(), &settings)
        .await
        .unwrap();
    let cors =
        || async { c.cms.admin(Method::GET, "/v1/cors", None).await.body["effective"].clone() };
    eventually(
        "the settings-only policy's origin is set",
        RECONCILES,
        || async { cors().await == json!(["https://shop.example"]) },
    )
    .await;
    // Hours on the operator's clock pass before the namespace is taken off.
    clock.advance(SignedDuration::from_hours(2));
    more_reconciles(&ctx, "web", 2).await;
    unadmit_shop(&c).await;
    eventually(
        "the refusal is recorded with its start",
        RECONCILES,
        || async {
            let st = status_of(&c, "web").await;
            st["refusedSince"].is_string()
                && condition(&st, "Ready").is_some_and(|r| r["reason"] == "ConnectionNotAllowed")
        },
    )
    .await;
    more_reconciles(&ctx, "web", 4).await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK,
        "inside the grace the key works"
    );
    assert_eq!(cors().await, json!(["https://shop.example"]));
    assert!(status_of(&c, "web").await["keys"]
        .as_array()
        .is_some_and(|k| !k.is_empty()));

    // The grace ends on the operator's clock: the key goes, and the settings-only policy's
    // origin with it.
    clock.advance(SignedDuration::from_hours(1) + SignedDuration::from_secs(1));
    eventually("the key is revoked after the grace", RECONCILES, || async {
        c.cms.status(Method::GET, "/api/blog", &value).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_event(
        &c,
        "KeysRevoked",
        "1 keys revoked: ClusterCmsConnection shared does not admit namespace 'shop'",
    )
    .await;
    eventually(
        "the settings-only policy's origin is taken back",
        RECONCILES,
        || async { cors().await == json!([]) },
    )
    .await;

    // Not admitted and holding nothing: the shared connection is not pinned by it.
    eventually(
        "the shared connection is not in use",
        RECONCILES,
        || async {
            c.emu
                .get(
                    "apis/keyward.dev/v1alpha1/clustercmsconnections",
                    "",
                    "shared",
                )
                .and_then(|o| o.pointer("/metadata/finalizers").cloned())
                .is_none_or(|f| !f.to_string().contains("keyward.dev/in-use"))
        },
    )
    .await;
    op.abort();
}

/// Tightened ceilings take back what is beyond them once the grace is over: the key for an
/// API the connection no longer allows is revoked (with a Warning event), the others keep
/// working. Before, narrowing `apis` or turning off `publicEndpoints` took nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tightened_ceilings_take_back_what_is_beyond_them_after_the_grace() {
    let c = cluster().await;
    shared_connection(
        &c,
        json!({"namespaces": ["shop"], "allow": {"apis": ["blog", "contact"]}}),
    )
    .await;
    let clock = keyward::engine::Clock::system();
    let config = OperatorConfig {
        offboarding_grace: Duration::from_secs(600),
        clock: clock.clone(),
        ..config()
    };
    let (ctx, op) = start(&c, config);
    let keys = json!([
        {"name": "reader", "apiPermissions": [{"api": "blog", "permissions": ["GET"]}], "secret": {"name": "reader", "keyField": "KEY"}},
        {"name": "writer", "apiPermissions": [{"api": "contact", "permissions": ["GET"]}], "secret": {"name": "writer", "keyField": "KEY"}}
    ]);
    create_policy(
        &c,
        keys,
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}}),
    )
    .await;
    wait_ready(&c).await;
    let (reader, writer) = (
        secret_value(&c, "reader").await.unwrap(),
        secret_value(&c, "writer").await.unwrap(),
    );
    Api::<keyward::policy::ClusterCmsConnection>::all(c.client.clone())
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allow": {"apis": ["blog"]}}})),
        )
        .await
        .unwrap();
    wait_reason(&c, "web", "NotAllowed").await;
    more_reconciles(&ctx, "web", 2).await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/contact", &writer).await,
        StatusCode::OK,
        "inside the grace"
    );
    clock.advance(SignedDuration::from_mins(11));
    eventually(
        "the key beyond the new ceiling is revoked",
        RECONCILES,
        || async {
            c.cms.status(Method::GET, "/api/contact", &writer).await == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert_event(
        &c,
        "KeysRevoked",
        "1 keys revoked: spec.keys[1].apiPermissions[0].api",
    )
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &reader).await,
        StatusCode::OK,
        "what is within the ceilings keeps working"
    );
    op.abort();
}

/// `maxKeysPerNamespace` counts what the CMS holds for the namespace: keys that
/// `deletionPolicy: Orphan` left behind when a key was renamed count, and policies created
/// together cannot all see room for one more. Before, only declared keys were counted, from
/// the status of policies reconciled earlier (0 for all of them at first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_quota_counts_what_the_cms_holds_and_policies_made_together() {
    let c = cluster().await;
    shared_connection(
        &c,
        json!({"namespaces": ["shop"], "allow": {"maxKeysPerNamespace": 2}}),
    )
    .await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let shared = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}});
    for i in 0..4 {
        let mut p = policy(
            json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": format!("s{i}")}}]),
            shared.clone(),
        );
        p.metadata.name = Some(format!("p{i}"));
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    eventually(
        "two policies got keys and two were refused",
        RECONCILES,
        || async {
            let mut refused = 0;
            for i in 0..4 {
                let st = status_of(&c, &format!("p{i}")).await;
                refused += usize::from(
                    condition(&st, "Ready").is_some_and(|r| r["reason"] == "NotAllowed"),
                );
            }
            refused == 2
        },
    )
    .await;
    assert_eq!(cms_keys(&c).await.len(), 2, "never more than the quota");
    for i in 0..4 {
        policies
            .delete(&format!("p{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually("the policies are gone", RECONCILES, || async {
        cms_keys(&c).await.is_empty()
    })
    .await;

    // Orphaned keys count: renaming a key under deletionPolicy Orphan leaves the old one.
    let orphan = json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}, "deletionPolicy": "Orphan"});
    let api = create_policy(
        &c,
        json!([{"name": "a", "defaultPermissions": ["GET"], "secret": {"name": "a"}}]),
        orphan.clone(),
    )
    .await;
    wait_ready(&c).await;
    let rename = |to: &str| json!({"spec": {"keys": [{"name": to, "defaultPermissions": ["GET"], "secret": {"name": to}}]}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(rename("b")))
        .await
        .unwrap();
    eventually(
        "the renamed key is made, the old one kept",
        RECONCILES,
        || async { cms_keys(&c).await.len() == 2 },
    )
    .await;
    api.patch("web", &PatchParams::default(), &Patch::Merge(rename("c")))
        .await
        .unwrap();
    let st = wait_reason(&c, "web", "NotAllowed").await;
    let message = condition(&st, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("does not allow 3 keys in this namespace"),
        "{message}"
    );
    assert_eq!(cms_keys(&c).await.len(), 2, "the quota held");
    op.abort();
}

/// A policy moved to a connection that does not exist keeps its keys on the one it left only
/// for the grace: that connection stays in use (its finalizer) while they are there, and they
/// are revoked when the grace is over. Before, the keys stayed, uncounted and never offboarded,
/// and the connection lost its in-use finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_parked_on_a_missing_connection_loses_its_keys_after_the_grace() {
    let c = cluster().await;
    shared_connection(&c, json!({"namespaces": ["shop"]})).await;
    let clock = keyward::engine::Clock::system();
    let config = OperatorConfig {
        offboarding_grace: Duration::from_secs(600),
        clock: clock.clone(),
        ..config()
    };
    let (_ctx, op) = start(&c, config);
    let policies = create_reader(
        &c,
        json!({"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}}),
    )
    .await;
    let value = secret_value(&c, "reader").await.unwrap();
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"connectionRef": {"kind": "CmsConnection", "name": "nowhere"}}}),
            ),
        )
        .await
        .unwrap();
    eventually(
        "the move is refused with its start recorded",
        RECONCILES,
        || async { status_of(&c, "web").await["refusedSince"].is_string() },
    )
    .await;
    let pinned = || {
        c.emu
            .get(
                "apis/keyward.dev/v1alpha1/clustercmsconnections",
                "",
                "shared",
            )
            .and_then(|o| o.pointer("/metadata/finalizers").cloned())
            .is_some_and(|f| f.to_string().contains("keyward.dev/in-use"))
    };
    eventually(
        "the connection holding its keys stays in use",
        RECONCILES,
        || async { pinned() },
    )
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    clock.advance(SignedDuration::from_mins(11));
    eventually("the keys left behind are revoked", RECONCILES, || async {
        c.cms.status(Method::GET, "/api/blog", &value).await == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually("then the connection is let go", RECONCILES, || async {
        !pinned()
    })
    .await;
    op.abort();
}

/// A Role or RoleBinding named as keyward would name a reader's, but not made by this policy,
/// is never taken over: the readers are not granted, with a Warning event, and it stays as it
/// was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_keyward_did_not_make_is_never_taken_over() {
    let c = cluster().await;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "keyward-read-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]});
    create(
        &c.client,
        "apis/rbac.authorization.k8s.io/v1",
        "roles",
        Some("shop"),
        role,
    )
    .await;
    let (_, op) = start(&c, config());
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
        "readers": {"serviceAccounts": ["web"]}}]);
    create_policy(&c, keys, json!({})).await;
    eventually("a ReaderConflict event", RECONCILES, || async {
        events(&c).iter().any(|(reason, note)| {
            reason == "ReaderConflict" && note.contains("keyward-read-reader")
        })
    })
    .await;
    let stored = Api::<Role>::namespaced(c.client.clone(), "shop")
        .get("keyward-read-reader")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&stored.rules).unwrap(),
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    );
    assert!(stored.metadata.owner_references.is_none());
    assert!(Api::<RoleBinding>::namespaced(c.client.clone(), "shop")
        .get_opt("keyward-read-reader")
        .await
        .unwrap()
        .is_none());
    // The key itself is served.
    assert!(secret_value(&c, "reader").await.is_some());
    op.abort();
}

/// Confined to one namespace (`--namespace`, the chart's `operator.watchNamespace`), the
/// operator reads and writes nothing outside it, so namespaced Roles are all it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_to_a_namespace_the_operator_needs_no_cluster_wide_right() {
    let c = cluster().await;
    let config = OperatorConfig {
        namespace: Some("shop".into()),
        ..config()
    };
    // The chart's RBAC with operator.watchNamespace=shop: a Role in shop, nothing else.
    c.emu
        .enforce_rbac(support::kube_rbac::Grants::chart(Some("shop")));
    let before = c.emu.cluster_wide_requests().len();
    let (ctx, op) = start(&c, config);
    create_reader(&c, json!({})).await;
    more_reconciles(&ctx, "web", 2).await;
    assert_eq!(c.emu.denied(), Vec::<String>::new());
    assert_eq!(
        c.emu.cluster_wide_requests()[before..].to_vec(),
        Vec::<String>::new(),
        "requests outside the namespace"
    );
    op.abort();
}

/// A connection's endpoint is its namespace's choice and may be an internal service: what it
/// answers never reaches the policy's status (readable by the namespace), only that it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_the_endpoint_never_reach_status() {
    use support::proxy::{Fault, Proxy};
    let c = cluster().await;
    let internal = Proxy::start(&c.cms.url, |_| Some(Fault::Answer(403, None))).await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "internal"},
            "spec": {"endpoint": internal.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(
            &PostParams::default(),
            &policy(reader(), json!({"connectionRef": {"name": "internal"}})),
        )
        .await
        .unwrap();
    let status = wait_reason(&c, "web", "CmsUnavailable").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains(&format!("{} answered 403", internal.url)),
        "{message}"
    );
    assert!(
        !message.contains("injected failure"),
        "the answer's body is in status: {message}"
    );
    assert!(message.contains("answer withheld"), "{message}");

    // An answer that is not what a CMS answers: what it holds is not quoted either (before,
    // serde's message repeated part of it).
    let odd = Proxy::start(&c.cms.url, |_| {
        Some(Fault::Body(
            r#"{"keys": [{"id": "internal-secret-42", "name": 7}]}"#,
        ))
    })
    .await;
    Api::<keyward::policy::CmsConnection>::namespaced(c.client.clone(), "shop")
        .patch(
            "internal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"endpoint": odd.url}})),
        )
        .await
        .unwrap();
    eventually("the odd answer is reported", RECONCILES, || async {
        let st = status_of(&c, "web").await;
        condition(&st, "Ready").is_some_and(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("unexpected answer from {}", odd.url)))
        })
    })
    .await;
    let message = condition(&status_of(&c, "web").await, "Ready").unwrap()["message"].to_string();
    assert!(!message.contains("internal-secret-42"), "{message}");
    assert!(message.contains("withheld"), "{message}");
    op.abort();
}

/// Two policies naming one new Secret: the Secret is created by one of them (a create, not a
/// forced apply, so the other's write is refused), the other reports `SecretConflict`, and
/// the Secret keeps one owner. Before, the ownership check and the forced apply were two steps:
/// a Secret made in between was taken over, and two policies stripped each other's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_naming_one_new_secret_cannot_both_own_it() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    for name in ["first", "second"] {
        let mut p = policy(
            json!([{"name": name, "defaultPermissions": ["GET"], "secret": {"name": "together", "keyField": "KEY"}}]),
            json!({}),
        );
        p.metadata.name = Some(name.into());
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    let outcome = || async {
        let mut reasons = Vec::new();
        for name in ["first", "second"] {
            let st = status_of(&c, name).await;
            reasons.push(
                condition(&st, "Ready")
                    .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
                    .unwrap_or_default(),
            );
        }
        reasons.sort();
        reasons
    };
    eventually(
        "one owns the Secret, the other is refused",
        RECONCILES,
        || async {
            let r = outcome().await;
            r.contains(&"SecretConflict".to_owned())
                && r.iter().any(|x| x != "SecretConflict" && !x.is_empty())
        },
    )
    .await;
    more_reconciles(&ctx, "first", 4).await;
    more_reconciles(&ctx, "second", 4).await;
    let secret = Api::<Secret>::namespaced(c.client.clone(), "shop")
        .get("together")
        .await
        .unwrap();
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = policies.get(&owners[0].name).await.unwrap();
    let st = serde_json::to_value(owner.status).unwrap();
    assert_eq!(
        condition(&st, "Ready").unwrap()["status"],
        "True",
        "the owner is Ready: {st}"
    );
    let value = secret_value(&c, "together").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    assert_eq!(
        cms_keys(&c).await.len(),
        1,
        "the refused policy's key was revoked, not left working without a Secret"
    );
    op.abort();
}

/// A connection points only where the platform lets it: `--allowed-endpoints` (host patterns
/// and CIDRs), never a link-local or cloud metadata address, and a redirect is not followed
/// (it would take the credential past every check). Before, any endpoint was called, and
/// redirects were followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_point_only_where_the_platform_allows() {
    let c = cluster().await;
    // An endpoint that sends every request on to the CMS with a redirect.
    let to = c.cms.url.clone();
    let redirects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = redirects.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (to, seen) = (to.clone(), seen.clone());
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::response::Redirect::temporary(&format!("{to}{uri}"))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (name, endpoint) in [
        ("metadata", "http://169.254.169.254".to_owned()),
        ("elsewhere", "http://192.0.2.10".to_owned()),
        ("redirect", redirect_url),
    ] {
        create(&c.client, "apis/keyward.dev/v1alpha1", "cmsconnections", Some("shop"), json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": name},
            "spec": {"endpoint": endpoint, "credentialsSecretRef": {"name": "cms-admin"}}})).await;
    }
    let config = OperatorConfig {
        allowed_endpoints: vec!["127.0.0.0/8".into(), "*.cms.example.com".into()],
        ..config()
    };
    let (_ctx, op) = start(&c, config);
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    for name in ["metadata", "elsewhere", "redirect"] {
        let mut p = policy(
            json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": name}}]),
            json!({"connectionRef": {"name": name}}),
        );
        p.metadata.name = Some(name.into());
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    let st = wait_reason(&c, "metadata", "EndpointNotAllowed").await;
    assert!(
        condition(&st, "Ready").unwrap()["message"]
            .to_string()
            .contains("metadata"),
        "{st}"
    );
    let st = wait_reason(&c, "elsewhere", "EndpointNotAllowed").await;
    assert!(
        condition(&st, "Ready").unwrap()["message"]
            .to_string()
            .contains("--allowed-endpoints"),
        "{st}"
    );
    let st = wait_reason(&c, "redirect", "CmsUnavailable").await;
    assert!(
        condition(&st, "Ready").unwrap()["message"]
            .to_string()
            .contains("307"),
        "{st}"
    );
    assert!(redirects.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // The policy on the allowed endpoint is served; nothing reached the CMS through the rest.
    create_reader(&c, json!({})).await;
    assert_eq!(cms_keys(&c).await.len(), 1);
    op.abort();
}

/// A status write that fails after the work was done loses nothing: the events that say what
/// was done are recorded before it, and the status is written by a later reconcile. Before, the
/// events came after the status write, and the retry had nothing left to do, so they were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_write_loses_no_event_of_what_was_done() {
    let c = cluster().await;
    let mut p = policy(reader(), json!({}));
    p.metadata.finalizers = Some(vec!["keyward.dev/revoke-keys".into()]);
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    c.emu.fail_writes("apikeypolicies", 500, 2);
    let (_ctx, op) = start(&c, config());
    eventually("the key is made", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some()
    })
    .await;
    wait_ready(&c).await;
    assert_event(&c, "KeyCreated", "created key shop/web/reader").await;
    assert_eq!(cms_keys(&c).await.len(), 1);
    op.abort();
}

/// A key the CMS will not revoke right now keeps neither its neighbours working nor the
/// policy from going once it can: a deletion revokes every key it can, retries the one it
/// could not, and lets the policy go when it is gone. Before, revoking stopped at the first
/// failure and the keys after it stayed working for as long as it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_revoked_keeps_no_other_working() {
    use support::proxy::{Fault, Proxy};
    let c = cluster().await;
    let stuck = Arc::new(std::sync::Mutex::new(String::new()));
    let rule = stuck.clone();
    let proxy = Proxy::start(&c.cms.url, move |call| {
        let id = rule.lock().unwrap().clone();
        (!id.is_empty() && *call.method == Method::DELETE && call.path == format!("/v1/keys/{id}"))
            .then_some(Fault::Answer(503, None))
    })
    .await;
    create(&c.client, "apis/keyward.dev/v1alpha1", "cmsconnections", Some("shop"), json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "proxied"},
        "spec": {"endpoint": proxy.url, "credentialsSecretRef": {"name": "cms-admin"}}})).await;
    let (_ctx, op) = start(&c, config());
    let keys: Value = (0..3)
        .map(|i| json!({"name": format!("k{i}"), "defaultPermissions": ["GET"], "secret": {"name": format!("k{i}"), "keyField": "KEY"}}))
        .collect();
    let policies = create_policy(&c, keys, json!({"connectionRef": {"name": "proxied"}})).await;
    wait_ready(&c).await;
    let mut values = Vec::new();
    for i in 0..3 {
        values.push(secret_value(&c, &format!("k{i}")).await.unwrap());
    }
    let ids: Vec<String> = cms_keys(&c)
        .await
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    *stuck.lock().unwrap() = ids[0].clone();
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the other keys are revoked", RECONCILES, || async {
        let mut refused = 0;
        for v in &values {
            refused += usize::from(
                c.cms.status(Method::GET, "/api/blog", v).await == StatusCode::UNAUTHORIZED,
            );
        }
        refused == 2
    })
    .await;
    assert_eq!(
        cms_keys(&c).await.len(),
        1,
        "the one the CMS would not revoke"
    );
    assert!(
        c.emu.get(POLICIES, "shop", "web").is_some(),
        "the policy waits for it"
    );
    stuck.lock().unwrap().clear();
    eventually(
        "the last key is revoked and the policy goes",
        RECONCILES,
        || async { cms_keys(&c).await.is_empty() && c.emu.get(POLICIES, "shop", "web").is_none() },
    )
    .await;
    op.abort();
}

/// One object the in-use sweep cannot patch (a 422, say a connection stored before a schema
/// change) stops nobody else's upkeep: the credential Secret after it still gets its finalizer.
/// Before, the sweep ended at the first failure, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_the_sweep_cannot_patch_stops_nobody_elses_finalizer() {
    let c = cluster().await;
    create(&c.client, "apis/keyward.dev/v1alpha1", "cmsconnections", Some("shop"), json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "broken"},
        "spec": {"endpoint": c.cms.url, "credentialsSecretRef": {"name": "cms-admin"}}})).await;
    c.emu
        .fail_writes_to("cmsconnections", "broken", 422, usize::MAX);
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut first = policy(
        json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "first", "keyField": "KEY"}}]),
        json!({"connectionRef": {"name": "broken"}}),
    );
    first.metadata.name = Some("first".into());
    policies
        .create(&PostParams::default(), &first)
        .await
        .unwrap();
    create_reader(&c, json!({})).await;
    let in_use = "keyward.dev/in-use".to_owned();
    eventually(
        "the connection after the broken one is in use",
        RECONCILES,
        || async { finalizers_of(&c, CONNECTIONS, "main").contains(&in_use) },
    )
    .await;
    eventually("the credential Secret too", RECONCILES, || async {
        finalizers_of(&c, SECRETS, "cms-admin").contains(&in_use)
    })
    .await;
    assert!(!finalizers_of(&c, CONNECTIONS, "broken").contains(&in_use));
    op.abort();
}

/// The operator lives through what an API server does to its clients: its watches dropped
/// with 410 Gone (it lists again), reads of Secrets failing for a while (the reconcile fails,
/// backs off and then succeeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_and_failing_reads_are_lived_through() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    create_reader(&c, json!({})).await;
    for plural in ["apikeypolicies", "secrets", "cmsconnections"] {
        c.emu.drop_watches(plural);
    }
    c.emu.fail_reads("secrets", 503, 3);
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut p = policy(
        json!([{"name": "late", "defaultPermissions": ["GET"], "secret": {"name": "late", "keyField": "KEY"}}]),
        json!({}),
    );
    p.metadata.name = Some("late".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
    eventually(
        "a policy made after the drops gets its key",
        RECONCILES,
        || async { secret_value(&c, "late").await.is_some() },
    )
    .await;
    let value = secret_value(&c, "late").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    wait_reason(&c, "late", "Ready").await;
    op.abort();
}

/// A key the CLI made for `shop/web` (no policy UID on it) is not taken over by a policy of the
/// same name in the cluster: before, a tenant could name a policy alike and rotate the key into
/// its own Secret (and so learn a value meant for someone else's pipeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_cli_made_is_not_claimed_by_a_policy_of_the_same_name() {
    let c = cluster().await;
    let (id, value) = c
        .cms
        .key(
            json!({"name": "shop.web.reader", "defaultPermissions": ["GET"],
            "labels": {"keyward.dev/policy": "shop.web", "keyward.dev/key": "reader"}}),
        )
        .await;
    let (_ctx, op) = start(&c, config());
    create_policy(&c, reader(), json!({})).await;
    let status = wait_reason(&c, "web", "Conflict").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(message.contains("keyward does not own"), "{message}");
    assert!(message.contains(&id), "{message}");
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    assert_eq!(cms_keys(&c).await.len(), 1, "nothing made, nothing rotated");
    assert!(secret_value(&c, "reader").await.is_none());
    op.abort();
}

/// Status records the connection the keys are on; a policy moved to another connection has its
/// keys on the old one revoked, not left working there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_moved_to_another_connection_leaves_no_key_behind() {
    let c = cluster().await;
    let second = Cms::start().await;
    second.api("blog").await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "second"},
            "spec": {"endpoint": second.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    let (_ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let first = secret_value(&c, "reader").await.unwrap();
    let st = serde_json::to_value(policies.get("web").await.unwrap().status).unwrap();
    assert_eq!(
        st["connection"],
        json!({"kind": "CmsConnection", "namespace": "shop", "name": "main"})
    );
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"connectionRef": {"name": "second"}}})),
        )
        .await
        .unwrap();
    eventually("a key on the second CMS", RECONCILES, || async {
        match secret_value(&c, "reader").await {
            Some(v) if v != first => {
                second.status(Method::GET, "/api/blog", &v).await == StatusCode::OK
            }
            _ => false,
        }
    })
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &first).await,
        StatusCode::UNAUTHORIZED,
        "the key on the first CMS is revoked"
    );
    let st = serde_json::to_value(policies.get("web").await.unwrap().status).unwrap();
    assert_eq!(st["connection"]["name"], "second", "{st}");
    assert_event(
        &c,
        "KeysRevoked",
        "1 keys revoked on CmsConnection shop/main",
    )
    .await;
    op.abort();
}

/// The whole namespace deleted, as the API server does it (everything in it at once): the keys
/// are revoked, and the namespace goes, not stuck Terminating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_revokes_its_keys_and_the_namespace_goes() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    create_reader(&c, json!({})).await;
    let value = secret_value(&c, "reader").await.unwrap();
    let in_use = "keyward.dev/in-use".to_owned();
    eventually(
        "the connection and its Secret are marked in use",
        RECONCILES,
        || async {
            finalizers_of(&c, CONNECTIONS, "main").contains(&in_use)
                && finalizers_of(&c, SECRETS, "cms-admin").contains(&in_use)
        },
    )
    .await;
    assert!(c.emu.get("api/v1/namespaces", "", "shop").is_some());
    Api::<k8s_openapi::api::core::v1::Namespace>::all(c.client.clone())
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace is gone", RECONCILES, || async {
        c.emu.get("api/v1/namespaces", "", "shop").is_none()
    })
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::UNAUTHORIZED,
        "the key was revoked before the connection went"
    );
    op.abort();
}

/// Drift checks of a connection's settled policies share one key listing per drift interval,
/// instead of one listing per policy per check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_checks_share_one_key_listing_per_connection_and_interval() {
    use support::proxy::Proxy;
    let c = cluster().await;
    let counted = Proxy::start(&c.cms.url, |_| None).await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "counted"},
            "spec": {"endpoint": counted.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
    let (ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    for i in 0..10 {
        let keys = json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": format!("p{i}"), "keyField": "KEY"}}]);
        let mut p = policy(keys, json!({"connectionRef": {"name": "counted"}}));
        p.metadata.name = Some(format!("p{i}"));
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    eventually("ten policies Ready", RECONCILES, || async {
        let mut ready = 0;
        for i in 0..10 {
            let st = policies
                .get(&format!("p{i}"))
                .await
                .ok()
                .and_then(|p| serde_json::to_value(p.status).ok())
                .unwrap_or_default();
            ready += usize::from(condition(&st, "Ready").is_some_and(|r| r["status"] == "True"));
        }
        ready == 10
    })
    .await;
    let listings = || {
        counted
            .seen()
            .iter()
            .filter(|s| s.method == Method::GET && s.path == "/v1/keys")
            .count()
    };
    let (before, started) = (listings(), std::time::Instant::now());
    // Thirty drift checks (every second, for ten policies).
    let checks = || {
        (0..10)
            .map(|i| reconciles_of(&ctx, &format!("p{i}")))
            .sum::<u64>()
    };
    let first = checks();
    eventually("30 drift checks", RECONCILES, || async {
        checks() >= first + 30
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let made = listings() - before;
    // One per interval, and a few around its edges (checks that began just before a renewal);
    // one listing per check would be 30.
    assert!(
        (made as f64) <= seconds.ceil() + 3.0,
        "{made} key listings for 30 drift checks in {seconds:.1} s (drift interval 1 s)"
    );
    op.abort();
}

/// A drift check of an unchanged policy does not read its Secrets again: the owned Secrets'
/// metadata watch says they are as last read. A Secret changed by hand is read (and repaired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_checks_do_not_read_unchanged_secrets() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    create_reader(&c, json!({})).await;
    more_reconciles(&ctx, "web", 2).await;
    let before = c.emu.counters.gets_of("secrets");
    more_reconciles(&ctx, "web", 5).await;
    assert_eq!(
        c.emu.counters.gets_of("secrets") - before,
        0,
        "five drift checks read a Secret"
    );
    // Changed by hand: read again and restored.
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"KEY": b64("tampered")}})),
        )
        .await
        .unwrap();
    eventually("the Secret is repaired", RECONCILES, || async {
        secret_value(&c, "reader")
            .await
            .is_some_and(|v| v != "tampered")
    })
    .await;
    // Repaired with a value the CMS takes, not just any other value.
    let repaired = secret_value(&c, "reader").await.unwrap();
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &repaired).await,
        StatusCode::OK
    );
    op.abort();
}

/// What drift checks keep of a policy's Secrets goes with the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policys_secret_observations_are_dropped() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let policies = create_reader(&c, json!({})).await;
    let uid = policies.get("web").await.unwrap().metadata.uid.unwrap();
    let kept = || {
        ctx.secret_observations
            .lock()
            .keys()
            .filter(|k| k.0 == uid)
            .count()
    };
    more_reconciles(&ctx, "web", 1).await;
    assert_eq!(kept(), 1);
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy is gone", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
    })
    .await;
    assert_eq!(kept(), 0);
    op.abort();
}

/// CORS origins and public endpoints under sharding: each policy writes only its own entry
/// (`/v1/cors/owners/{owner}`), so two operators that each see half of the policies never
/// overwrite each other's origins, an origin set by hand stays, and a deleted policy's origins
/// and public endpoints go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_holds_its_own_cors_origins_and_public_endpoints_across_shards() {
    let c = cluster().await;
    c.cms
        .admin(
            Method::PUT,
            "/v1/cors",
            Some(json!({"origins": ["https://hand.example"]})),
        )
        .await;
    let shard = |name: &str| OperatorConfig {
        label_selector: Some(format!("shard={name}")),
        field_manager: format!("keyward-{name}"),
        ..config()
    };
    let (ctx_a, a) = start(&c, shard("a"));
    let (ctx_b, b) = start(&c, shard("b"));
    let policies = Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop");
    for (name, shard, extra) in [
        (
            "web",
            "a",
            json!({"cors": {"origins": ["https://a.example"]},
                "publicEndpoints": [{"api": "blog", "operations": ["list"]}]}),
        ),
        (
            "other",
            "b",
            json!({"cors": {"origins": ["https://b.example"]},
                "publicEndpoints": [{"api": "contact", "operations": ["create"]}]}),
        ),
    ] {
        let mut p = policy(
            json!([{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": format!("{name}-k")}}]),
            extra,
        );
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([("shard".to_owned(), shard.to_owned())].into());
        policies.create(&PostParams::default(), &p).await.unwrap();
    }
    wait_reason(&c, "web", "Ready").await;
    wait_reason(&c, "other", "Ready").await;
    // A few drift checks of each shard later, nothing was overwritten.
    more_reconciles(&ctx_a, "web", 3).await;
    more_reconciles(&ctx_b, "other", 3).await;
    let effective = |path: &'static str| {
        let cms = &c.cms;
        async move { cms.admin(Method::GET, path, None).await.body["effective"].clone() }
    };
    assert_eq!(
        effective("/v1/cors").await,
        json!([
            "https://a.example",
            "https://b.example",
            "https://hand.example"
        ])
    );
    assert_eq!(effective("/v1/apis/blog/public").await, json!(["list"]));
    assert_eq!(
        effective("/v1/apis/contact/public").await,
        json!(["create"])
    );
    let owners = c.cms.admin(Method::GET, "/v1/owners", None).await.body;
    assert_eq!(
        owners["owners"].as_object().map(|o| o.len()),
        Some(2),
        "{owners}"
    );
    // A deleted policy's entry goes; the other's and the hand-set origin stay.
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web is gone", RECONCILES, || async {
        policies.get_opt("web").await.ok().flatten().is_none()
    })
    .await;
    assert_eq!(
        effective("/v1/cors").await,
        json!(["https://b.example", "https://hand.example"])
    );
    assert_eq!(effective("/v1/apis/blog/public").await, json!([]));
    assert_eq!(
        effective("/v1/apis/contact/public").await,
        json!(["create"])
    );
    // Shard a has no policy left on the connection, shard b has: both judge the in-use
    // finalizer by every policy, so it stays and nobody takes it off and puts it back.
    // (Before, each shard judged by its own policies and the two fought over it.)
    more_reconciles(&ctx_b, "other", 2).await;
    let writes = c.emu.counters.writes_to("cmsconnections");
    // Four drift checks (a second apart) span two sweeps (every 2 s) of each shard.
    more_reconciles(&ctx_b, "other", 4).await;
    assert!(finalizers_of(&c, CONNECTIONS, "main").contains(&"keyward.dev/in-use".to_owned()));
    assert_eq!(
        c.emu.counters.writes_to("cmsconnections"),
        writes,
        "the shards fought over the in-use finalizer"
    );
    a.abort();
    b.abort();
}

/// Drift checks of a settled policy with readers and a restart target make no Kubernetes GET:
/// Secrets, Roles and RoleBindings come from the controller's stores, and a workload already
/// seen with the Secret's content is not read again. A reader's Role deleted by hand is
/// repaired at once (it is owned and watched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_checks_make_no_kubernetes_get() {
    let c = cluster().await;
    create_web_deployment(&c).await;
    let (ctx, op) = start(&c, config());
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
        "readers": {"serviceAccounts": ["web"]}, "restartTargets": [{"kind": "Deployment", "name": "web"}]}]);
    create_policy(&c, keys, json!({})).await;
    wait_ready(&c).await;
    // The credential is read once more after the in-use finalizer changed its Secret.
    eventually("the credential is marked in use", RECONCILES, || async {
        finalizers_of(&c, SECRETS, "cms-admin").contains(&"keyward.dev/in-use".to_owned())
    })
    .await;
    more_reconciles(&ctx, "web", 2).await;
    let before = c.emu.counters.gets();
    let reads = || {
        c.emu
            .counters
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (reads_before, lists_before) = (reads(), c.emu.collection_reads().len());
    more_reconciles(&ctx, "web", 5).await;
    assert_eq!(
        c.emu.counters.gets(),
        before,
        "five drift checks made Kubernetes GETs"
    );
    // Nor a list (or a new watch) in place of a GET: nothing at all was read.
    assert_eq!(
        c.emu.collection_reads()[lists_before..].to_vec(),
        Vec::<(String, bool, String)>::new(),
        "five drift checks listed"
    );
    assert_eq!(reads(), reads_before, "five drift checks read the API");
    let roles: Api<Role> = Api::namespaced(c.client.clone(), "shop");
    roles
        .delete("keyward-read-reader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the reader's Role is back", RECONCILES, || async {
        c.emu.get(ROLES, "shop", "keyward-read-reader").is_some()
    })
    .await;
    op.abort();
}

/// A rotation asked for on the policy (`keyward.dev/rotate`): each new value gives the keys a
/// new value once, with their overlap (the old value still answers) or, with
/// `keyward.dev/rotate-now`, none; the workload rolls as for a scheduled rotation, the status
/// records the request, and a value already acted on is not acted on again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_asked_on_the_policy_is_carried_out_once_per_value() {
    let c = cluster().await;
    create_web_deployment(&c).await;
    let (ctx, op) = start(&c, config());
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
        "restartTargets": [{"kind": "Deployment", "name": "web"}]}]);
    let policies = create_policy(&c, keys, json!({})).await;
    wait_ready(&c).await;
    let generation = || {
        c.emu
            .get("apis/apps/v1/deployments", "shop", "web")
            .unwrap()["metadata"]["generation"]
            .as_i64()
            .unwrap()
    };
    eventually(
        "the workload rolled for the first value",
        RECONCILES,
        || async { generation() == 2 },
    )
    .await;
    let reads = |key: String| {
        let cms = &c.cms;
        async move {
            let r = cms.req(Method::GET, "/api/blog", Some(&key), None).await;
            r.status.as_u16()
        }
    };
    let ask = |annotations: Value| annotate(&policies, annotations);
    let first = secret_value(&c, "reader").await.unwrap();

    ask(json!({"keyward.dev/rotate": "leak-1"})).await;
    eventually("a new value in the Secret", RECONCILES, || async {
        secret_value(&c, "reader").await.is_some_and(|v| v != first)
    })
    .await;
    let second = secret_value(&c, "reader").await.unwrap();
    assert_eq!(reads(second.clone()).await, 200);
    assert_eq!(
        reads(first.clone()).await,
        200,
        "the overlap (15m by default)"
    );
    eventually("the status records the request", RECONCILES, || async {
        status_of(&c, "web").await["lastManualRotation"]["request"] == "leak-1"
    })
    .await;
    let status = status_of(&c, "web").await;
    assert_eq!(
        status["lastManualRotation"]["keys"],
        json!(["shop/web/reader"])
    );
    assert_eq!(status["lastManualRotation"]["atOnce"], json!(false));
    eventually(
        "the workload rolled for the new value",
        RECONCILES,
        || async { generation() == 3 },
    )
    .await;
    // The same value again, reconcile after reconcile: nothing more.
    more_reconciles(&ctx, "web", 3).await;
    assert_eq!(secret_value(&c, "reader").await.unwrap(), second);
    assert_eq!(generation(), 3);

    // A leak: no overlap, every earlier value stops now.
    ask(json!({"keyward.dev/rotate": "leak-2", "keyward.dev/rotate-now": "true"})).await;
    eventually("a third value", RECONCILES, || async {
        secret_value(&c, "reader")
            .await
            .is_some_and(|v| v != second)
    })
    .await;
    let third = secret_value(&c, "reader").await.unwrap();
    assert_eq!(reads(third).await, 200);
    assert_eq!(reads(second).await, 401);
    assert_eq!(reads(first).await, 401);
    eventually("the status says at once", RECONCILES, || async {
        let s = status_of(&c, "web").await;
        s["lastManualRotation"]["request"] == "leak-2" && s["lastManualRotation"]["atOnce"] == true
    })
    .await;
    op.abort();
}

/// A tenant changing `keyward.dev/rotate` in a loop cannot keep the shared CMS hashing: one
/// rotation per policy per 10 s; a later value waits its turn and is then acted on, then and
/// not at the next drift check (five minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_asked_in_a_loop_are_carried_out_at_most_once_per_ten_seconds() {
    let c = cluster().await;
    let (ctx, op, policies) = reader_with_slow_drift(&c).await;
    let ask = |value: String| annotate(&policies, json!({"keyward.dev/rotate": value}));
    let acted = || async {
        status_of(&c, "web").await["lastManualRotation"]["request"]
            .as_str()
            .map(str::to_owned)
    };
    ask("spam-0".into()).await;
    eventually(
        "the first request is acted on at once",
        RECONCILES,
        || async { acted().await.as_deref() == Some("spam-0") },
    )
    .await;
    let value = secret_value(&c, "reader").await.unwrap();
    let started = std::time::Instant::now();
    for i in 1..=10 {
        ask(format!("spam-{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new values wake the policy: it is reconciled, and the rotation waits.
    more_reconciles(&ctx, "web", 1).await;
    if started.elapsed() < Duration::from_secs(9) {
        assert_eq!(acted().await.as_deref(), Some("spam-0"), "not within 10 s");
        assert_eq!(secret_value(&c, "reader").await.unwrap(), value);
    }
    eventually(
        "the last value, once its turn comes",
        RECONCILES,
        || async { acted().await.as_deref() == Some("spam-10") },
    )
    .await;
    assert_ne!(secret_value(&c, "reader").await.unwrap(), value);
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_secrets_have_no_owner_are_written_whole_and_outlive_their_policy() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    // An Orphan policy's keys keep working when it goes: their Secrets are retained unless the
    // key says Delete.
    let keys = json!([
        {"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"}},
        {"name": "owned", "defaultPermissions": ["GET"], "secret": {"name": "owned", "keyField": "KEY", "deletionPolicy": "Delete"}}
    ]);
    let policies = create_policy(&c, keys, json!({"deletionPolicy": "Orphan"})).await;
    wait_ready(&c).await;
    let uid = policies.get("web").await.unwrap().metadata.uid.unwrap();
    let secret = |name: &str| c.emu.get(SECRETS, "shop", name).expect("the Secret");
    let owners = |s: &Value| {
        s["metadata"]["ownerReferences"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let kept = secret("reader");
    assert_eq!(owners(&kept), 0, "retained: no ownerReference: {kept}");
    assert_eq!(
        kept["metadata"]["labels"]["keyward.dev/policy-uid"],
        uid.as_str()
    );
    assert_eq!(
        kept["metadata"]["annotations"]["keyward.dev/retain"],
        "true"
    );
    assert_eq!(owners(&secret("owned")), 1);
    let value = secret_value(&c, "reader").await.unwrap();

    // Someone adds a field to the retained Secret (an endpoint of their choosing, say): keyward
    // restores it, written whole, so the planted field is gone and the value is the same.
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"URL": b64("https://evil.example")}})),
        )
        .await
        .unwrap();
    eventually("the planted field is gone", RECONCILES, || async {
        secret("reader")["data"].get("URL").is_none()
    })
    .await;
    assert_eq!(
        secret_value(&c, "reader").await.as_deref(),
        Some(value.as_str())
    );
    // Deleted, it is made again (a new value: values cannot be read back).
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("made again", RECONCILES, || async {
        c.emu.get(SECRETS, "shop", "reader").is_some()
    })
    .await;
    wait_ready(&c).await;
    let value = secret_value(&c, "reader").await.unwrap();

    // Retain asked for later: the Secret loses its ownerReference, keeping its value.
    let owned_value = secret_value(&c, "owned").await.unwrap();
    let patch = json!({"spec": {"keys": [
        {"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"}},
        {"name": "owned", "defaultPermissions": ["GET"], "secret": {"name": "owned", "keyField": "KEY", "deletionPolicy": "Retain"}}
    ]}});
    policies
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("no ownerReference", RECONCILES, || async {
        owners(&secret("owned")) == 0
    })
    .await;
    assert_eq!(secret_value(&c, "owned").await, Some(owned_value.clone()));

    // The policy goes: the retained Secrets stay (the garbage collector had its chance) and
    // their values still work.
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy is gone", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        secret_value(&c, "reader").await.as_deref(),
        Some(value.as_str())
    );
    assert_eq!(secret_value(&c, "owned").await, Some(owned_value));
    let r = c
        .cms
        .req(Method::GET, "/api/blog", Some(&value), None)
        .await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "an Orphan policy's key keeps working"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policys_retained_secret_stays_with_its_revoked_value() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    let keys = json!([
        {"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"}},
        {"name": "kept", "defaultPermissions": ["GET"], "secret": {"name": "kept", "keyField": "KEY", "deletionPolicy": "Retain"}}
    ]);
    let policies = create_policy(&c, keys, json!({})).await;
    wait_ready(&c).await;
    let kept = secret_value(&c, "kept").await.unwrap();
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the owned Secret is collected", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
            && c.emu.get(SECRETS, "shop", "reader").is_none()
    })
    .await;
    let r = c.cms.req(Method::GET, "/api/blog", Some(&kept), None).await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "deletionPolicy Delete: the key is revoked"
    );
    assert_eq!(
        secret_value(&c, "kept").await,
        Some(kept),
        "the retained Secret stays, as it was"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_made_key_is_adopted_on_the_namespaces_own_connection_only() {
    let c = cluster().await;
    let (id, v0) = c
        .cms
        .key(json!({"name": "made by hand", "defaultPermissions": ["GET", "POST"]}))
        .await;
    shared_connection(&c, json!({"namespaces": ["shop"]})).await;
    let (_ctx, op) = start(&c, config());
    let adopting = |connection: Value| {
        let mut p = policy(
            json!([{"name": "reader", "defaultPermissions": ["GET"], "adopt": {"id": id},
                    "secret": {"name": "reader", "keyField": "KEY"}}]),
            json!({}),
        );
        p.spec.connection_ref = serde_json::from_value(connection).unwrap();
        p
    };
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    // Through the shared connection: refused, the key untouched.
    let shared = adopting(json!({"kind": "ClusterCmsConnection", "name": "shared"}));
    policies
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    let status = wait_reason(&c, "web", "InvalidSpec").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("spec.keys[0].adopt: a key is adopted through a CmsConnection"),
        "{message}"
    );
    assert_eq!(
        c.cms
            .req(Method::POST, "/api/blog", Some(&v0), Some(json!({"t": 1})))
            .await
            .status
            .as_u16(),
        201
    );
    policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted", RECONCILES, || async {
        c.emu.get(POLICIES, "shop", "web").is_none()
    })
    .await;

    // Through the namespace's own connection: adopted, a new value, the old one in its overlap.
    let own = adopting(json!({"name": "main"}));
    policies.create(&PostParams::default(), &own).await.unwrap();
    wait_ready(&c).await;
    let v1 = secret_value(&c, "reader").await.unwrap();
    assert_ne!(v1, v0);
    let cms = &c.cms;
    let get = |v: String| async move {
        cms.req(Method::GET, "/api/blog", Some(&v), None)
            .await
            .status
            .as_u16()
    };
    assert_eq!(get(v1.clone()).await, 200);
    assert_eq!(
        get(v0.clone()).await,
        200,
        "the old value works for the overlap"
    );
    let status = ready(&c).await.unwrap();
    assert_eq!(
        status["keys"][0]["id"],
        id.as_str(),
        "the same key, now the policy's"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observe_only_policy_tracks_a_console_made_key_its_expiry_and_whether_its_value_works() {
    let c = cluster().await;
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let (id, value) = c
        .cms
        .key(json!({"name": "console key", "defaultPermissions": ["GET"], "expiresAt": soon.to_string()}))
        .await;
    create(
        &c.client,
        "api/v1",
        "secrets",
        Some("shop"),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "in-use", "labels": {"keyward.dev/credential": "true"}},
        "data": {"apiKey": b64(&value)}}),
    )
    .await;
    let (_ctx, op) = start(&c, config());
    create_policy(
        &c,
        json!([{"name": "site", "defaultPermissions": ["GET"],
                "adopt": {"id": id, "valueFrom": {"name": "in-use"}},
                "secret": {"name": "site", "keyField": "KEY"}}]),
        json!({"managementPolicy": "ObserveOnly"}),
    )
    .await;
    eventually("tracked", RECONCILES, || async {
        has_reason(&c, "ValueRejected", "ValuesWork").await
    })
    .await;
    let status = ready(&c).await.unwrap();
    assert_eq!(status["keys"][0]["id"], id.as_str(), "{status}");
    assert_eq!(
        condition(&status, "KeyExpiringSoon").unwrap()["status"],
        "True",
        "{status}"
    );
    assert!(
        status["pendingChanges"].to_string().contains("adopt"),
        "{status}"
    );
    // Nothing written: the key is as it was made, no Secret.
    let key = c
        .cms
        .admin(Method::GET, &format!("/v1/keys/{id}"), None)
        .await
        .body;
    assert_eq!(key["name"], "console key");
    assert!(c.emu.get(SECRETS, "shop", "site").is_none());

    // Someone regenerates it in the console: the value in use is refused, and the condition
    // says so.
    let r = c.cms.regenerate(&id, None).await;
    assert!(r.status.is_success(), "{}", r.text);
    eventually("the value is refused", RECONCILES, || async {
        has_reason(&c, "ValueRejected", "Rejected").await
    })
    .await;
    let status = ready(&c).await.unwrap();
    let message = condition(&status, "ValueRejected").unwrap()["message"].to_string();
    assert!(
        message.contains("refuses the value in use (401) of: site"),
        "{message}"
    );
    // Then revokes it: the policy says the key is gone.
    let r = c
        .cms
        .admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let status = wait_reason(&c, "web", "Conflict").await;
    let message = condition(&status, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains(&format!("the CMS has no key with id {id}")),
        "{message}"
    );
    op.abort();
}
