//! Tenants and a shared connection, through the CLI (the operator's side is in
//! tests/operator.rs): `keyward plan` refuses what a ClusterCmsConnection does not allow, as the
//! operator does, before any call to the CMS.

mod support;

use support::process::keyward;

fn manifests(allow: &str, keys: &str) -> String {
    format!(
        "apiVersion: keyward.dev/v1alpha1
kind: ClusterCmsConnection
metadata: {{name: shared}}
spec:
  endpoint: ENDPOINT
  credentialsSecretRef: {{name: cms-admin, namespace: platform}}
  namespaces: [shop]
{allow}---
apiVersion: v1
kind: Secret
metadata: {{name: cms-admin, namespace: platform}}
stringData: {{token: {token}}}
---
apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: web, namespace: shop}}
spec:
  connectionRef: {{kind: ClusterCmsConnection, name: shared}}
  cors: {{origins: ['https://shop.example.com']}}
  keys:
{keys}",
        token = support::ADMIN
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_refuses_what_a_shared_connection_does_not_allow() {
    let cms = support::Cms::start().await;
    cms.api("blog").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // A CMS that only counts: the refusal comes before any call.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let counting = format!("http://{}", listener.local_addr().unwrap());
    let greedy = "    - {name: admin, kind: management, managementPermissions: [keys:manage], secret: {name: admin}}
    - {name: star, scopes: ['*'], secret: {name: star}}
";
    std::fs::write(
        w.join("p.yaml"),
        manifests("", greedy).replace("ENDPOINT", &counting),
    )
    .unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    for expected in [
        "p.yaml:21: ApiKeyPolicy shop/web: spec.keys[0].kind: ClusterCmsConnection shared does not allow management keys (spec.allow.kinds: [content])",
        "spec.keys[0].managementPermissions[0]: ClusterCmsConnection shared does not allow management permission 'keys:manage' (spec.allow.managementPermissions: [])",
        "spec.keys[1].scopes[0]: ClusterCmsConnection shared does not allow scope '*'",
        "spec.cors: ClusterCmsConnection shared does not allow CORS origins (spec.allow.cors: false)",
    ] {
        assert!(err.contains(expected), "{expected}\nin\n{err}");
    }
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing was sent to the CMS");

    // Allowed by the connection: planned and applied against the real CMS.
    let allow = "  allow: {cors: true, apis: ['blo*']}\n";
    let fits = "    - {name: reader, apiPermissions: [{api: blog, permissions: [GET]}], secret: {name: reader}}\n";
    std::fs::write(
        w.join("p.yaml"),
        manifests(allow, fits).replace("ENDPOINT", &cms.url),
    )
    .unwrap();
    let (code, out, err, _) = keyward(w, &["apply", "-f", "p.yaml"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ create   shop/web/reader"), "{out}");
    // Under an API ceiling, rights on every API are refused with a hint.
    let every = "    - {name: reader, defaultPermissions: [GET], secret: {name: reader}}\n";
    std::fs::write(
        w.join("p.yaml"),
        manifests(allow, every).replace("ENDPOINT", &cms.url),
    )
    .unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("spec.keys[0].defaultPermissions: ClusterCmsConnection shared does not allow rights on every API; name the APIs in apiPermissions (spec.allow.apis: [blo*])"), "{err}");
}
