//! Connections with status, end to end: the operator (held to the chart's RBAC) against the API
//! emulator and the real reference CMS over HTTP and HTTPS. A `CmsConnection` or
//! `ClusterCmsConnection` says on itself whether the CMS answers through it and why not, which
//! generation it describes and how many policies use it; it is checked when it, its Secrets or
//! its users change and on an interval, and its status is written only when it changed.

mod support;

use keyward::operator::metrics::Metrics;
use keyward::operator::{Context, OperatorConfig};
use keyward::policy::{ClusterCmsConnection, CmsConnection};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::kube_emulator::Emulator;
use support::tls::TestCa;
use support::{b64, create, eventually, Cms, ADMIN};

const WITHIN: Duration = Duration::from_secs(30);

struct Cluster {
    emu: Emulator,
    client: Client,
    cms: Cms,
    _operator: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self._operator.abort();
        if !std::thread::panicking() {
            assert_eq!(
                self.emu.denied(),
                Vec::<String>::new(),
                "the chart's RBAC refused the operator"
            );
        }
    }
}

/// Namespace `shop`, the reference CMS (started by `cms`), and the operator checking unchanged
/// connections every `interval`.
async fn cluster(cms: Cms, interval: Duration) -> Cluster {
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
    emu.enforce_rbac(support::kube_rbac::Grants::chart(None));
    let ctx = Arc::new(Context::new(
        emu.operator_client(),
        OperatorConfig {
            connection_check_interval: interval,
            ..Default::default()
        },
        Arc::new(Metrics::new()),
    ));
    let operator = tokio::spawn(keyward::operator::run_controller(ctx));
    Cluster {
        emu,
        client,
        cms,
        _operator: operator,
    }
}

/// The credential Secret `name` in `shop` holding `token`, labelled for use or not.
async fn credential(c: &Cluster, name: &str, token: &str, labelled: bool) {
    let labels = if labelled {
        json!({"keyward.dev/credential": "true"})
    } else {
        json!({})
    };
    let s = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "data": {"token": b64(token)}});
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.client.clone(), "shop");
    let pp = PatchParams::apply("test").force();
    api.patch(name, &pp, &Patch::Apply(&s)).await.unwrap();
}

/// CmsConnection `shop/main` to the test CMS, its credential in Secret `cms-admin`.
async fn create_main(c: &Cluster) {
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "cmsconnections",
        Some("shop"),
        json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": "main"},
        "spec": {"endpoint": c.cms.url, "credentialsSecretRef": {"name": "cms-admin"}}}),
    )
    .await;
}

async fn connection(c: &Cluster, name: &str) -> Value {
    let api: Api<CmsConnection> = Api::namespaced(c.client.clone(), "shop");
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

fn ready(conn: &Value) -> Option<(String, String, String)> {
    let r = conn["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let s = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// Waits until connection `name`'s Ready condition has `reason`; returns the connection.
async fn wait_reason(c: &Cluster, name: &str, reason: &str) -> Value {
    wait_for(c, name, reason, "").await
}

/// Waits until connection `name`'s Ready condition has `reason` and a message that contains
/// `saying`; returns the connection.
async fn wait_for(c: &Cluster, name: &str, reason: &str, saying: &str) -> Value {
    let mut last = Value::Null;
    let seen = tokio::time::timeout(WITHIN, async {
        loop {
            last = connection(c, name).await;
            if ready(&last).is_some_and(|r| r.1 == reason && r.2.contains(saying)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "no Ready reason {reason} saying '{saying}': {:#}",
        last["status"]
    );
    last
}

async fn patch_spec(c: &Cluster, name: &str, spec: Value) {
    let api: Api<CmsConnection> = Api::namespaced(c.client.clone(), "shop");
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap();
}

/// Each reason a connection can fail for, in the order a person would fix them, and Ready
/// once it works; observedGeneration follows the spec, and policies are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_says_whether_the_cms_answers_and_why_not() {
    let c = cluster(Cms::start().await, Duration::from_secs(300)).await;
    create_main(&c).await;

    let conn = wait_reason(&c, "main", "CredentialMissing").await;
    assert_eq!(ready(&conn).unwrap().0, "False");
    assert_eq!(conn["status"]["observedGeneration"], 1);
    assert_eq!(conn["status"]["policies"], 0);
    credential(&c, "cms-admin", ADMIN, false).await;
    let conn = wait_reason(&c, "main", "CredentialMissing").await;
    let message = ready(&conn).unwrap().2;
    assert!(message.contains("keyward.dev/credential"), "{message}");

    credential(&c, "cms-admin", ADMIN, true).await;
    let conn = wait_reason(&c, "main", "Connected").await;
    assert_eq!(ready(&conn).unwrap().0, "True");

    for name in ["web", "blog"] {
        create(&c.client, "apis/keyward.dev/v1alpha1", "apikeypolicies", Some("shop"), json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "metadata": {"name": name},
            "spec": {"connectionRef": {"name": "main"}, "keys": []}})).await;
    }
    eventually("two policies counted", WITHIN, || async {
        connection(&c, "main").await["status"]["policies"] == 2
    })
    .await;

    credential(&c, "cms-admin", "kw_admin_not-the-token", true).await;
    let conn = wait_reason(&c, "main", "CredentialRefused").await;
    let message = ready(&conn).unwrap().2;
    assert!(!message.contains("not-the-token"), "{message}");

    credential(&c, "cms-admin", ADMIN, true).await;
    wait_reason(&c, "main", "Connected").await;
    patch_spec(&c, "main", json!({"provider": "directus"})).await;
    let conn = wait_reason(&c, "main", "ProviderMismatch").await;
    assert_eq!(conn["status"]["observedGeneration"], 2);

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    patch_spec(
        &c,
        "main",
        json!({"provider": "keyward", "endpoint": format!("http://127.0.0.1:{port}")}),
    )
    .await;
    let conn = wait_reason(&c, "main", "EndpointUnreachable").await;
    assert_eq!(conn["status"]["observedGeneration"], 3);

    patch_spec(&c, "main", json!({"endpoint": "http://169.254.169.254"})).await;
    wait_reason(&c, "main", "EndpointNotAllowed").await;
}

/// Over HTTPS: a certificate the operator does not trust is `TlsFailure`, a CA Secret that is
/// missing or holds no certificate is `CaInvalid`, the right CA makes it Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_ca_problems_have_their_own_reasons() {
    let ca = TestCa::new("cms");
    let files = ca.server("cms", &["127.0.0.1"], false);
    let cms = Cms::start_with(|cfg| cfg.tls = Some(files)).await;
    assert!(cms.url.starts_with("https://"), "{}", cms.url);
    let c = cluster(cms, Duration::from_secs(300)).await;
    credential(&c, "cms-admin", ADMIN, true).await;
    create_main(&c).await;
    wait_reason(&c, "main", "TlsFailure").await;

    patch_spec(
        &c,
        "main",
        json!({"tls": {"caSecretRef": {"name": "cms-ca"}}}),
    )
    .await;
    wait_for(&c, "main", "CaInvalid", "is missing").await;
    let ca_secret = |pem: &[u8]| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "cms-ca", "namespace": "shop", "labels": {"keyward.dev/credential": "true"}},
        "data": {"ca.crt": b64(&String::from_utf8_lossy(pem))}})
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(c.client.clone(), "shop");
    let pp = PatchParams::apply("test").force();
    let garbage = ca_secret(b"not a certificate");
    secrets
        .patch("cms-ca", &pp, &Patch::Apply(&garbage))
        .await
        .unwrap();
    let conn = wait_for(&c, "main", "CaInvalid", "the CA holds no PEM certificate").await;
    assert_eq!(ready(&conn).unwrap().0, "False");
    let right = ca_secret(&ca.ca_bytes());
    secrets
        .patch("cms-ca", &pp, &Patch::Apply(&right))
        .await
        .unwrap();
    wait_reason(&c, "main", "Connected").await;
}

/// An unchanged connection is checked again on the interval (a CMS that went down shows
/// without any change to the connection), and a check that finds what the status says
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_connection_is_checked_on_the_interval_and_written_only_on_change() {
    let mut c = cluster(Cms::start().await, Duration::from_secs(1)).await;
    credential(&c, "cms-admin", ADMIN, true).await;
    create_main(&c).await;
    let first = wait_reason(&c, "main", "Connected").await;
    let writes = c.emu.counters.writes_to("cmsconnections");
    assert!(writes > 0, "the status was written");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        c.emu.counters.writes_to("cmsconnections"),
        writes,
        "checked again, found the same, wrote nothing"
    );
    let again = connection(&c, "main").await;
    assert_eq!(again["status"], first["status"]);

    let addr: std::net::SocketAddr = c.cms.url.trim_start_matches("http://").parse().unwrap();
    if let Some(r) = c.cms.running.take() {
        r.stop().await;
    }
    wait_reason(&c, "main", "EndpointUnreachable").await;
    c.cms.restart_with(|cfg| cfg.listen = addr).await;
    wait_reason(&c, "main", "Connected").await;
}

/// A status that cannot be written is tried again later, not at every look: each try is a
/// call to the CMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_cannot_be_written_is_not_retried_at_every_look() {
    let c = cluster(Cms::start().await, Duration::from_secs(300)).await;
    create_main(&c).await;
    wait_reason(&c, "main", "CredentialMissing").await;
    c.emu
        .fail_writes_to("cmsconnections", "main", 500, usize::MAX);
    let before = c.emu.counters.writes_to("cmsconnections");
    credential(&c, "cms-admin", ADMIN, true).await;
    eventually(
        "the check after the change tried to write",
        WITHIN,
        || async { c.emu.counters.writes_to("cmsconnections") > before },
    )
    .await;
    // The operator's own finalizer on the Secret is a change too: let it settle, then no
    // more tries for a while (before, one every two seconds).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = c.emu.counters.writes_to("cmsconnections");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        c.emu.counters.writes_to("cmsconnections"),
        settled,
        "tried, then waits"
    );
}

/// A ClusterCmsConnection has the same status, counting the policies of every namespace that
/// use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connection_has_status_too() {
    let c = cluster(Cms::start().await, Duration::from_secs(300)).await;
    credential(&c, "cms-admin", ADMIN, true).await;
    create(&c.client, "apis/keyward.dev/v1alpha1", "clustercmsconnections", None, json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterCmsConnection", "metadata": {"name": "shared"},
        "spec": {"endpoint": c.cms.url, "namespaces": ["shop"],
            "credentialsSecretRef": {"name": "cms-admin", "namespace": "shop"}}})).await;
    create(
        &c.client,
        "apis/keyward.dev/v1alpha1",
        "apikeypolicies",
        Some("shop"),
        json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "metadata": {"name": "web"},
        "spec": {"connectionRef": {"kind": "ClusterCmsConnection", "name": "shared"}, "keys": []}}),
    )
    .await;
    let api: Api<ClusterCmsConnection> = Api::all(c.client.clone());
    let mut last = Value::Null;
    let seen = tokio::time::timeout(WITHIN, async {
        loop {
            last = serde_json::to_value(api.get("shared").await.unwrap()).unwrap();
            if ready(&last).is_some_and(|r| r.1 == "Connected") && last["status"]["policies"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "{:#}", last["status"]);
    assert_eq!(last["status"]["observedGeneration"], 1);
}

/// `kubectl get cmsconnections` shows whether each connection works and how many policies use
/// it.
#[test]
fn the_connection_kinds_print_their_health() {
    use kube::CustomResourceExt;
    for crd in [CmsConnection::crd(), ClusterCmsConnection::crd()] {
        let v = &crd.spec.versions[0];
        let columns: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Provider", "Endpoint", "Ready", "Reason", "Policies", "Age"]
        );
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "a status subresource"
        );
    }
}
