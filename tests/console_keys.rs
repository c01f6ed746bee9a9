//! CMSes whose keys are made in their consoles only (microCMS, Kontent.ai): keyward tracks them
//! (ObserveOnly, `adopt` with `valueFrom`) and checks the value in use, never writing. The
//! stand-in they run against is checked with the vendors' own clients from npm: each client's
//! request gets the answer it expects from the stand-in, and keyward's request is the client's.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use std::path::Path;
use support::console_cms::{ConsoleCms, Seen};
use support::process::keyward;

/// A read of one entry with `vendor`'s official client, against the stand-in, with `key`.
async fn vendor_client_reads(cms: &ConsoleCms, vendor: &str, key: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vendor-sdks/read.cjs");
    let args = [vendor.to_owned(), cms.url.clone(), key.to_owned()];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(support::node_app::script("vendor-sdks"))
            .arg("run")
            .arg(script)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "{vendor} client: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `vendor`'s client is refused with `status`, and takes the stand-in's answer for the vendor's
/// error: microCMS's client says the status, Kontent.ai's reads the error code from the body.
async fn client_is_refused(cms: &ConsoleCms, vendor: &str, key: &str, status: u16) {
    let got = vendor_client_reads(cms, vendor, key).await;
    assert_eq!(got["ok"], false, "{vendor}: {got}");
    let seen = cms.take_seen();
    assert_eq!(
        seen.last().map(|s| s.answered),
        Some(status),
        "{vendor}: {seen:?}"
    );
    match vendor {
        "microcms" => assert_eq!(got["status"], status, "{vendor}: {got}"),
        _ => assert!(
            got["errorCode"].is_u64(),
            "{vendor}: a DeliveryError: {got}"
        ),
    }
}

/// The binary on `provider` at `endpoint`, its connection's key `credential`, in `work`.
fn run(
    provider: &str,
    endpoint: &str,
    credential: &str,
    work: &Path,
    args: &[&str],
) -> (i32, String) {
    let (code, out, err, _) = keyward(
        work,
        args,
        &[
            ("KEYWARD_CMS_PROVIDER", provider),
            ("KEYWARD_CMS_URL", endpoint),
            ("KEYWARD_CMS_TOKEN", credential),
        ],
    );
    (code, format!("{out}{err}"))
}

/// A policy of namespace `shop` tracking one console-made key (by name) whose value is in the
/// Secret `in-use`, with `adopt_extra` in its `adopt` and `value` in that Secret (a YAML
/// double-quoted string: `\n` is a line break).
fn tracking_policy(work: &Path, policy: &str, adopt_extra: &str, value: &str) {
    let text = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: site, namespace: shop}}\nspec:\n{policy}  keys:\n    - name: web\n      defaultPermissions: [GET]\n      renewBefore: 7d\n      adopt: {{name: frontend, valueFrom: {{name: in-use}}{adopt_extra}}}\n      secret: {{name: web}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: in-use, namespace: shop}}\nstringData: {{apiKey: \"{value}\"}}\n"
    );
    std::fs::write(work.join("p.yaml"), text).unwrap();
}

const OBSERVE: &str = "  managementPolicy: ObserveOnly\n";

/// Each vendor's client against the stand-in: a made key reads, a key without the right to
/// read is refused with 403, a revoked one with 401; and the request keyward sends to check a
/// value is the one the client sends (path, parameters, the header the key goes in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_answers_the_vendors_clients_and_keyward_asks_what_they_ask() {
    let cms = ConsoleCms::start().await;
    let work = tempfile::tempdir().unwrap();
    for (vendor, endpoint) in [
        ("microcms", format!("{}/api/v1/news", cms.url)),
        ("kontent", format!("{}/env-1", cms.url)),
    ] {
        let key = format!("{vendor}-key-1");
        cms.make(&key);
        cms.make("connection-key");
        let got = vendor_client_reads(&cms, vendor, &key).await;
        assert_eq!(got["ok"], true, "{vendor}: {got}");
        let client: Vec<Seen> = cms.take_seen();

        tracking_policy(work.path(), OBSERVE, "", &key);
        let (code, said) = run(
            vendor,
            &endpoint,
            "connection-key",
            work.path(),
            &["plan", "-f", "p.yaml"],
        );
        assert_eq!(
            code, 0,
            "{vendor}: a tracked key that works needs nothing: {said}"
        );
        assert!(
            !said.contains(&key),
            "{vendor}: the value is never shown: {said}"
        );
        let ours = cms.take_seen();
        assert_eq!(ours.len(), 1, "{vendor}: one check of the value: {ours:?}");
        assert_eq!(
            ours[0], client[0],
            "{vendor}: keyward's request is the client's"
        );

        cms.make_readless("readless");
        client_is_refused(&cms, vendor, "readless", 403).await;
        cms.revoke(&key);
        client_is_refused(&cms, vendor, &key, 401).await;
        cms.take_seen();
    }
}

/// Through the binary, on each vendor: a tracked key that works needs nothing; its expiry as
/// the console shows it brings the reminder; revoked in the console, the check says 401; an
/// apply writes nothing (the stand-in has no write to answer); and what cannot be tracked is
/// refused by field before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_made_keys_are_tracked_by_value_and_expiry_and_nothing_else_is_accepted() {
    let cms = ConsoleCms::start().await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    cms.make("connection-key");
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    for (vendor, endpoint) in [
        ("microcms", format!("{}/api/v1/news", cms.url)),
        ("kontent", format!("{}/env-1", cms.url)),
    ] {
        let key = format!("{vendor}-in-use");
        cms.make(&key);
        let run = |args: &[&str]| run(vendor, &endpoint, "connection-key", w, args);
        tracking_policy(w, OBSERVE, &format!(", expiresAt: '{soon}'"), &key);
        let (code, said) = run(&["plan", "-f", "p.yaml"]);
        assert_eq!(code, 0, "{vendor}: {said}");
        assert!(
            said.contains("shop/site/web: the key made by hand that it tracks expires at"),
            "{vendor}: {said}"
        );
        let (code, said) = run(&["explain", "-f", "p.yaml", "--live", "shop/site"]);
        assert_eq!(code, 1, "{vendor}: {said}");
        assert!(said.contains("this CMS has no key API"), "{vendor}: {said}");
        cms.revoke(&key);
        let (code, said) = run(&["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
        assert_eq!(code, 0, "{vendor}: nothing to write: {said}");
        assert!(
            said.contains("shop/site/web: the CMS refuses the value in use (adopt.valueFrom): 401"),
            "{vendor}: {said}"
        );
        assert!(
            !w.join("out").join("shop").exists(),
            "{vendor}: no Secret written"
        );
        assert!(cms.take_seen().iter().all(|s| s.method == "GET"));

        // A value no header can carry is not sent, and not shown.
        tracking_policy(w, OBSERVE, "", "in-use\\nthe-rest");
        let (code, said) = run(&["plan", "-f", "p.yaml"]);
        assert_eq!(code, 0, "{vendor}: {said}");
        assert!(
            said.contains("cannot check the value in use"),
            "{vendor}: {said}"
        );
        assert!(
            !said.contains("the-rest") && !said.contains("retrying"),
            "{vendor}: {said}"
        );
        assert!(cms.take_seen().is_empty(), "{vendor}: nothing sent");

        for (policy, extra, field) in [
            ("", "", "spec.managementPolicy"),
            (
                "  managementPolicy: ObserveOnly\n  cors: {origins: ['https://shop.example']}\n",
                "",
                "spec.cors",
            ),
        ] {
            tracking_policy(w, policy, extra, &key);
            let (code, said) = run(&["plan", "-f", "p.yaml"]);
            assert_eq!(code, 1, "{vendor}: {said}");
            assert!(
                said.contains(&format!(
                    "{field}: the {vendor} provider cannot express this"
                )),
                "{vendor}: {field}: {said}"
            );
        }
        let untracked = std::fs::read_to_string(w.join("p.yaml"))
            .unwrap()
            .replace("  cors: {origins: ['https://shop.example']}\n", "")
            .replace(", valueFrom: {name: in-use}", "");
        std::fs::write(w.join("p.yaml"), untracked).unwrap();
        let (code, said) = run(&["plan", "-f", "p.yaml"]);
        assert_eq!(code, 1, "{vendor}: {said}");
        assert!(
            said.contains("spec.keys[0].adopt.valueFrom: the {vendor} provider cannot express this: its keys are made in its console only".replace("{vendor}", vendor).as_str()),
            "{vendor}: {said}"
        );
        assert!(cms.take_seen().is_empty(), "refused before any call");
    }
}

/// The operator, on each vendor: the connection is checked with its key (Ready), an ObserveOnly
/// policy reports the tracked key's expiry as the console shows it and whether its value works,
/// writes nothing, and says when the key is revoked in the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_tracks_console_made_keys_by_value_and_expiry() {
    use keyward::policy::ProviderKind;
    use support::console_cms::Vendor;
    use support::operator_on::OperatorOn;
    use support::{b64, eventually};

    let within = std::time::Duration::from_secs(30);
    for provider in [ProviderKind::Microcms, ProviderKind::Kontent] {
        let cms = ConsoleCms::start().await;
        let vendor = Vendor::on(&cms, provider);
        cms.make("in-use");
        let o = OperatorOn::start(&vendor, "apiKey").await;
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
            "metadata": {"name": "in-use", "labels": {"keyward.dev/credential": "true"}},
            "data": {"apiKey": b64("in-use")}}))
            .unwrap();
        o.secrets
            .create(&Default::default(), &secret)
            .await
            .unwrap();
        let soon =
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 48 * 3600).unwrap();
        o.create_policy_with(
            "site",
            serde_json::json!({"name": "web", "defaultPermissions": ["GET"], "renewBefore": "7d",
                "adopt": {"name": "frontend", "valueFrom": {"name": "in-use"}, "expiresAt": soon.to_string()},
                "secret": {"name": "web"}}),
            serde_json::json!({"managementPolicy": "ObserveOnly"}),
        )
        .await;
        let condition = |name: &'static str| {
            let o = &o;
            async move { o.condition("site", name).await }
        };
        eventually("the value works", within, || async {
            condition("ValueRejected")
                .await
                .is_some_and(|c| c["reason"] == "ValuesWork")
        })
        .await;
        o.connection_connected(1, within).await;
        let status = o.status("site").await.unwrap();
        assert_eq!(status["keys"][0]["id"], "frontend", "{provider}: {status}");
        assert!(
            status["keys"][0].get("createdAt").is_none(),
            "not known: {status}"
        );
        assert_eq!(
            status["keys"][0]["expiresAt"]
                .as_str()
                .map(|t| t.parse::<jiff::Timestamp>().unwrap()),
            Some(soon),
            "{provider}: {status}"
        );
        let ready = condition("Ready").await.unwrap();
        assert_eq!(ready["status"], "True", "{provider}: {ready}");
        assert_eq!(
            condition("KeyExpiringSoon").await.unwrap()["status"],
            "True",
            "{provider}: {status}"
        );
        assert!(
            status["pendingChanges"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{provider}: nothing to adopt on a CMS without a key API: {status}"
        );
        assert!(o.secrets.get_opt("web").await.unwrap().is_none());

        cms.revoke("in-use");
        eventually("the value is refused", within, || async {
            condition("ValueRejected")
                .await
                .is_some_and(|c| c["reason"] == "Rejected")
        })
        .await;
        assert!(cms.take_seen().iter().all(|s| s.method == "GET"));
    }
}
