//! A real Directus for the `directus` provider's tests: a fresh project per test (sqlite, the
//! collections `articles` with a `status` field and `authors` without) from
//! `scripts/directus.sh`, on a free loopback port, with a static admin token. Dropping it stops
//! the server.

use super::node_app::{script, NodeApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

pub struct DirectusServer {
    pub url: String,
    pub admin_token: String,
    app: NodeApp,
    /// Holds the project; removed after the server stops.
    _dir: tempfile::TempDir,
}

fn script_output(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script("directus"))
        .args(args)
        .output()
        .expect("scripts/directus.sh");
    assert!(
        out.status.success(),
        "scripts/directus.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

impl super::Target for DirectusServer {
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String) {
        (
            keyward::policy::ProviderKind::Directus,
            &self.url,
            self.admin_token.clone(),
        )
    }
}

impl super::Answers for DirectusServer {
    /// The status of a content call on collection `api`: 200 allowed, 403 not allowed, 401
    /// unknown key.
    async fn status(&self, method: Method, api: &str, key: &str) -> StatusCode {
        self.call(method, api, key).await.0
    }
}

impl DirectusServer {
    /// Installs Directus once (cached), writes a project, bootstraps and starts it, and creates
    /// the two collections.
    pub async fn start() -> DirectusServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("project");
        let project_arg = project.to_str().expect("utf-8 path");
        let admin_token = script_output(&["project", project_arg]).trim().to_owned();
        let app = NodeApp::start(
            "directus",
            &project,
            &[],
            "/server/health",
            Duration::from_secs(240),
        )
        .await;
        let s = DirectusServer {
            url: app.url.clone(),
            admin_token,
            app,
            _dir: dir,
        };
        script_output(&["collections", &s.url, &s.admin_token]);
        s
    }

    pub fn log(&self) -> String {
        self.app.log()
    }

    /// A call as the admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.app
            .call(&self.admin_token, method, path, body.as_ref())
            .await
    }

    /// Every user but the admin, by first name, with its policies and their rows.
    pub async fn users(&self) -> std::collections::BTreeMap<String, Value> {
        let (status, v) = self
            .admin(
                Method::GET,
                "/users?limit=-1&fields=id,email,first_name,description,status,role,policies.id,policies.policy.id,policies.policy.name,policies.policy.permissions.*",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"]
            .as_array()
            .expect("users")
            .iter()
            .filter(|u| u["email"] != "admin@keyward.example.com")
            .map(|u| {
                (
                    u["first_name"].as_str().unwrap_or_default().to_owned(),
                    u.clone(),
                )
            })
            .collect()
    }

    /// How many policies Directus has (its own Administrator and Public among them).
    pub async fn policy_count(&self) -> usize {
        let (status, v) = self
            .admin(Method::GET, "/policies?limit=-1&fields=id", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"].as_array().expect("policies").len()
    }

    /// Creates an item as the admin; its id.
    pub async fn item(&self, collection: &str, body: Value) -> Value {
        let (status, v) = self
            .admin(Method::POST, &format!("/items/{collection}"), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"]["id"].clone()
    }

    /// A content call with a key: `GET` lists, `POST` creates one item.
    pub async fn call(&self, method: Method, collection: &str, key: &str) -> (StatusCode, Value) {
        let field = if collection == "authors" {
            "name"
        } else {
            "title"
        };
        let body = (method == Method::POST).then(|| json!({ field: "from a test" }));
        let path = format!("/items/{collection}");
        self.app.call(key, method, &path, body.as_ref()).await
    }
}
