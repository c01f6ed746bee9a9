//! The operator on an emulated cluster, managing keys on a real CMS (Strapi, Directus): what the
//! providers' operator tests share.

use super::kube_emulator::Emulator;
use super::{b64, create, Target};
use k8s_openapi::api::core::v1::Secret;
use keyward::operator::{metrics::Metrics, Context, OperatorConfig};
use keyward::policy::ApiKeyPolicy;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use std::sync::Arc;

/// Namespace `shop` with a CmsConnection named after the provider (`strapi`, `directus`) to the
/// target, its credential in Secret `<provider>-admin`, and the operator running (drift checks
/// every second). The operator stops when this is dropped.
pub struct OperatorOn {
    pub policies: Api<ApiKeyPolicy>,
    pub secrets: Api<Secret>,
    connection: String,
    op: tokio::task::JoinHandle<()>,
    _emu: Emulator,
}

impl OperatorOn {
    /// The credential is stored under data field `field` (the connection names it).
    pub async fn start(target: &impl Target, field: &str) -> OperatorOn {
        let (provider, url, credential) = target.connection();
        let connection = provider.as_str().to_owned();
        let secret = format!("{connection}-admin");
        let emu = Emulator::new();
        let client = emu.client();
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        create(&client, "api/v1", "namespaces", None, namespace).await;
        create(
            &client,
            "api/v1",
            "secrets",
            Some("shop"),
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret, "labels": {"keyward.dev/credential": "true"}},
            "data": {field: b64(&credential)}}),
        )
        .await;
        create(&client, "apis/keyward.dev/v1alpha1", "cmsconnections", Some("shop"), json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection", "metadata": {"name": connection},
            "spec": {"provider": connection, "endpoint": url, "credentialsSecretRef": {"name": secret, "key": field}}})).await;
        // The operator as the chart installs it: its service account, held to the chart's RBAC.
        emu.enforce_rbac(super::kube_rbac::Grants::chart(None));
        let ctx = Arc::new(Context::new(
            emu.operator_client(),
            OperatorConfig {
                drift_interval: std::time::Duration::from_secs(1),
                ..Default::default()
            },
            Arc::new(Metrics::new()),
        ));
        OperatorOn {
            policies: Api::namespaced(client.clone(), "shop"),
            secrets: Api::namespaced(client, "shop"),
            connection,
            op: tokio::spawn(keyward::operator::run_controller(ctx)),
            _emu: emu,
        }
    }

    /// Creates policy `shop/<name>` with the one key `key` on this connection.
    pub async fn create_policy(&self, name: &str, key: Value) {
        self.create_policy_with(name, key, json!({})).await;
    }

    /// Creates policy `shop/<name>` with the one key `key` on this connection and the spec's
    /// other fields from `spec` (`managementPolicy`, say).
    pub async fn create_policy_with(&self, name: &str, key: Value, spec: Value) {
        let mut full = json!({"connectionRef": {"name": self.connection}, "keys": [key]});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        let p: ApiKeyPolicy = serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": full}))
        .unwrap();
        self.policies
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
    }

    /// Field `field` of Secret `shop/<name>`, once the Secret is there.
    pub async fn secret_value(&self, name: &str, field: &str) -> Option<String> {
        let s = self.secrets.get_opt(name).await.ok()??;
        String::from_utf8(s.data?.get(field)?.0.clone()).ok()
    }

    /// The connection's status, once it has one.
    pub async fn connection_status(&self) -> Option<Value> {
        let api: Api<keyward::policy::CmsConnection> =
            Api::namespaced(self.policies.clone().into_client(), "shop");
        let c = api.get(&self.connection).await.ok()?;
        serde_json::to_value(c.status?).ok()
    }

    /// Waits until the connection says the CMS answers, with `policies` policies using it.
    pub async fn connection_connected(&self, policies: i64, within: std::time::Duration) {
        super::eventually("the connection Connected", within, || async {
            self.connection_status().await.is_some_and(|s| {
                s["policies"] == policies
                    && s["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["reason"] == "Connected")
                    })
            })
        })
        .await;
    }

    /// The Ready condition of policy `shop/<name>`, once it has one.
    pub async fn ready(&self, name: &str) -> Option<Value> {
        self.condition(name, "Ready").await
    }

    /// The status of policy `shop/<name>`, once it has one.
    pub async fn status(&self, name: &str) -> Option<Value> {
        let p = self.policies.get(name).await.ok()?;
        serde_json::to_value(p.status?).ok()
    }

    /// Condition `kind` of policy `shop/<name>`, once it has it.
    pub async fn condition(&self, name: &str, kind: &str) -> Option<Value> {
        let status = self.status(name).await?;
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
    }
}

impl Drop for OperatorOn {
    fn drop(&mut self) {
        self.op.abort();
        if !std::thread::panicking() {
            assert_eq!(
                self._emu.denied(),
                Vec::<String>::new(),
                "the chart's RBAC refused the operator"
            );
        }
    }
}
