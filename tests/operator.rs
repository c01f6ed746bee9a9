//! The operator end to end: the real kube-runtime Controller against the API emulator and the
//! real reference CMS over HTTP.

mod support;

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
use support::{b64, create, eventually, Cms, ADMIN};

struct Cluster {
    emu: Emulator,
    client: Client,
    cms: Cms,
}

async fn cluster() -> Cluster {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    let emu = Emulator::new();
    let client = emu.client();
    create(&client, "api/v1", "namespaces", None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "shop"}}})).await;
    create(&client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin"}, "stringData": {}, "data": {"token": b64(ADMIN)}})).await;
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
    Cluster { emu, client, cms }
}

fn config() -> OperatorConfig {
    OperatorConfig {
        drift_interval: Duration::from_secs(1),
        ..Default::default()
    }
}

fn start(c: &Cluster, config: OperatorConfig) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let ctx = Arc::new(Context::new(
        c.client.clone(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_to_working_key_and_back() {
    let c = cluster().await;
    let (_ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("the Secret", || async {
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
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
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
    eventually("POST allowed", || async {
        c.cms.status(Method::POST, "/api/blog", &key).await == StatusCode::CREATED
    })
    .await;

    // Edit the key in the CMS behind keyward's back: repaired.
    let id = c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"defaultPermissions": ["GET", "POST", "DELETE"]})),
        )
        .await;
    eventually("drift repaired", || async {
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .body["defaultPermissions"]
            == json!(["GET", "POST"])
    })
    .await;

    // Delete the Secret: a new value, a new Secret; the old value stops.
    Api::<Secret>::namespaced(c.client.clone(), "shop")
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new Secret", || async {
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
        StatusCode::UNAUTHORIZED
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
    eventually("the policy is gone", || async {
        policies.get_opt("web").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        c.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::UNAUTHORIZED
    );
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
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<u64> = ["secrets", "apikeypolicies", "roles", "rolebindings"]
        .iter()
        .map(|r| c.emu.counters.writes_to(r))
        .collect();
    let cms_writes = provider_of(&ctx, &c.cms.url).stats().writes();
    let cms_reads = provider_of(&ctx, &c.cms.url).stats().reads();
    tokio::time::sleep(Duration::from_secs(4)).await; // several drift checks
    let after: Vec<u64> = ["secrets", "apikeypolicies", "roles", "rolebindings"]
        .iter()
        .map(|r| c.emu.counters.writes_to(r))
        .collect();
    assert_eq!(before, after, "no Kubernetes writes");
    assert_eq!(
        provider_of(&ctx, &c.cms.url).stats().writes(),
        cms_writes,
        "no CMS writes"
    );
    assert!(
        provider_of(&ctx, &c.cms.url).stats().reads() > cms_reads,
        "but the drift checks did read"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_operator_loses_and_duplicates_nothing() {
    let c = cluster().await;
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
    // Stop it as soon as it has started writing.
    eventually("a first Secret", || async {
        secret_value(&c, "a").await.is_some()
    })
    .await;
    op.abort();
    let (_, op) = start(&c, config());
    eventually("all Secrets", || async {
        let mut all = true;
        for n in ["a", "b", "c"] {
            all &= secret_value(&c, n).await.is_some();
        }
        all
    })
    .await;
    eventually("three keys", || async {
        c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len()
            == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "no duplicates"
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
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    let addr = c.cms.running.as_ref().unwrap().addr;
    c.cms.running.take().unwrap().stop().await;
    eventually("CmsUnavailable", || async {
        ready(&c).await.is_some_and(|s| {
            condition(&s, "Ready").is_some_and(|r| r["reason"] == "CmsUnavailable")
        })
    })
    .await;
    let mut cfg = support::config(c.cms.dir.path());
    cfg.listen = addr;
    c.cms.running = Some(keyward::cms::start(cfg).await.unwrap());
    eventually("Ready again", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_rbac_and_restart_targets_roll_once() {
    let c = cluster().await;
    create(&c.client, "apis/apps/v1", "deployments", Some("shop"), json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})).await;
    let (_, op) = start(&c, config());
    let keys = json!([{"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "reader", "keyField": "KEY"},
        "readers": {"serviceAccounts": ["web"]}, "restartTargets": [{"kind": "Deployment", "name": "web"}]}]);
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(&PostParams::default(), &policy(keys, json!({})))
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(c.client.clone(), "shop");
    eventually("the Role", || async {
        roles
            .get_opt("keyward-read-reader")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let role = roles.get("keyward-read-reader").await.unwrap();
    let rule = &role.rules.unwrap()[0];
    assert_eq!(rule.resource_names.as_ref().unwrap(), &["reader"]);
    assert_eq!(rule.verbs, ["get"]);
    let binding = Api::<RoleBinding>::namespaced(c.client.clone(), "shop")
        .get("keyward-read-reader")
        .await
        .unwrap();
    assert_eq!(binding.subjects.unwrap()[0].name, "web");
    let annotation = || async {
        c.emu
            .get("apis/apps/v1/deployments", "shop", "web")
            .and_then(|d| {
                d.pointer("/spec/template/metadata/annotations/keyward.dev~1secret-reader")
                    .cloned()
            })
    };
    eventually("the pod template annotation", || async {
        annotation().await.is_some()
    })
    .await;
    let first = annotation().await;
    let generation = c
        .emu
        .get("apis/apps/v1/deployments", "shop", "web")
        .unwrap()["metadata"]["generation"]
        .clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(annotation().await, first);
    assert_eq!(
        c.emu
            .get("apis/apps/v1/deployments", "shop", "web")
            .unwrap()["metadata"]["generation"],
        generation,
        "rolled once, not in a loop"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_foreign_namespaces_and_observe_only_write_nothing_to_the_cms() {
    let c = cluster().await;
    create(&c.client, "apis/keyward.dev/v1alpha1", "clustercmsconnections", None, json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterCmsConnection", "metadata": {"name": "shared"},
        "spec": {"endpoint": c.cms.url, "credentialsSecretRef": {"name": "cms-admin", "namespace": "shop"}, "namespaces": ["other"]}})).await;
    let (ctx, op) = start(&c, config());
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    let mut p = policy(
        json!([{"name": "x", "defaultPermissions": ["GET_ALL_DRAFTS"], "secret": {"name": "x"}}]),
        json!({}),
    );
    p.metadata.name = Some("invalid".into());
    policies.create(&PostParams::default(), &p).await.unwrap();
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
    eventually("InvalidSpec", || async {
        reason("invalid")
            .await
            .is_some_and(|r| r.0 == "InvalidSpec" && r.1.contains("GET_ALL_DRAFTS requires GET"))
    })
    .await;
    eventually("ConnectionNotAllowed", || async {
        reason("foreign")
            .await
            .is_some_and(|r| r.0 == "ConnectionNotAllowed")
    })
    .await;
    eventually("ChangesPending", || async {
        reason("observer")
            .await
            .is_some_and(|r| r.0 == "ChangesPending")
    })
    .await;
    let pending = reason("observer").await.unwrap().2;
    assert!(
        pending["pendingChanges"][0]
            .as_str()
            .unwrap()
            .contains("create"),
        "{pending}"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_writes() {
    let c = cluster().await;
    let replica = |name: &str| {
        let config = OperatorConfig {
            field_manager: format!("keyward-{name}"),
            leader_election: Some(keyward::operator::LeaderElection {
                namespace: "keyward-system".into(),
                lease_name: "keyward-operator".into(),
                identity: name.into(),
                lease_seconds: 3,
            }),
            ..config()
        };
        let client = c.client.clone();
        tokio::spawn(async move {
            keyward::operator::run(client, config, Arc::new(Metrics::new())).await
        })
    };
    let a = replica("a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = replica("b");
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("the Secret", || async {
        secret_value(&c, "reader").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let managers = c.emu.managers_of("api/v1/secrets", "shop", "reader");
    assert_eq!(managers.len(), 1, "one writer: {managers:?}");
    let leader = managers.into_iter().next().unwrap();
    let status_managers =
        c.emu
            .managers_of("apis/keyward.dev/v1alpha1/apikeypolicies", "shop", "web");
    assert_eq!(
        status_managers,
        [leader.clone()].into(),
        "status by the leader only"
    );

    // The leader goes away: the other replica takes over after the lease runs out.
    let (gone, other) = if leader == "keyward-a" {
        (a, b)
    } else {
        (b, a)
    };
    gone.abort();
    let mut second = policy(
        json!([{"name": "two", "defaultPermissions": ["GET"], "secret": {"name": "two", "keyField": "KEY"}}]),
        json!({}),
    );
    second.metadata.name = Some("second".into());
    policies
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    eventually("the follower takes over", || async {
        secret_value(&c, "two").await.is_some()
    })
    .await;
    let managers = c.emu.managers_of("api/v1/secrets", "shop", "two");
    assert_eq!(managers.len(), 1);
    assert_ne!(
        managers.into_iter().next().unwrap(),
        leader,
        "written by the new leader"
    );
    other.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let c = cluster().await;
    let (ctx, op) = start(&c, config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = keyward::operator::metrics::router(ctx.metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    let get = |path: &'static str| {
        let url = url.clone();
        async move {
            let r = reqwest::get(format!("{url}{path}")).await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (_, text) = get("/metrics").await;
    assert!(
        text.contains("keyward_reconciles_total{result=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "keyward_key_expiry_seconds{namespace=\"shop\",policy=\"web\",key=\"reader\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("keyward_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_sync_annotation_repairs_drift_at_once() {
    let c = cluster().await;
    let (_, op) = start(
        &c,
        OperatorConfig {
            drift_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let policies: Api<ApiKeyPolicy> = Api::namespaced(c.client.clone(), "shop");
    policies
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    let id = c.cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"defaultPermissions": ["GET", "DELETE"]})),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.cms
            .admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .body["defaultPermissions"],
        json!(["GET", "DELETE"]),
        "no drift check for an hour"
    );
    policies
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"keyward.dev/force-sync": "2026-11-23T06:00:00Z"}}})))
        .await
        .unwrap();
    eventually("repaired", || async {
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
    Api::<ApiKeyPolicy>::namespaced(c.client.clone(), "shop")
        .create(&PostParams::default(), &policy(reader(), json!({})))
        .await
        .unwrap();
    eventually("NoCredentials", || async {
        ready(&c).await.is_some_and(|s| {
            condition(&s, "Ready").is_some_and(|r| {
                r["reason"] == "NoCredentials"
                    && r["message"].as_str().unwrap().contains("shop/cms-admin")
            })
        })
    })
    .await;
    // No drift check for an hour: only the watch on credential Secrets can wake the policy.
    create(&c.client, "api/v1", "secrets", Some("shop"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms-admin"}, "data": {"token": b64(ADMIN)}})).await;
    eventually("Ready", || async {
        ready(&c)
            .await
            .is_some_and(|s| condition(&s, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    assert!(secret_value(&c, "reader").await.is_some());
    op.abort();
}

/// The provider the controller used for the test CMS (its call counts).
fn provider_of(
    ctx: &keyward::operator::Context,
    url: &str,
) -> std::sync::Arc<dyn keyward::providers::CmsProvider> {
    ctx.used_provider(keyward::policy::ProviderKind::Keyward, url, ADMIN)
        .expect("the controller has used the CMS")
}
