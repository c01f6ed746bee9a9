//! A real Strapi for the `strapi` provider's tests: a fresh project per test (two content types,
//! `articles` and `authors`) from `scripts/strapi.sh`, on a free loopback port, with its first
//! admin registered. Dropping it stops the server.

use super::node_app::{script, NodeApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

pub const EMAIL: &str = "admin@keyward.test";
pub const PASSWORD: &str = "Keyward-test-1";

pub struct StrapiServer {
    pub url: String,
    app: NodeApp,
    /// Holds the project; removed after the server stops.
    _dir: tempfile::TempDir,
    jwt: String,
}

impl super::Target for StrapiServer {
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String) {
        (
            keyward::policy::ProviderKind::Strapi,
            &self.url,
            self.credential(),
        )
    }
}

impl super::Answers for StrapiServer {
    /// A content-API call with an API token: 200/201 allowed, 403 not allowed, 401 unknown.
    async fn status(&self, method: Method, api: &str, key: &str) -> StatusCode {
        let body = matches!(method, Method::POST).then(|| entry(api));
        let path = format!("/api/{api}");
        self.app.call(key, method, &path, body.as_ref()).await.0
    }
}

impl StrapiServer {
    /// Installs Strapi once (cached), writes a project, starts it and registers the admin.
    pub async fn start() -> StrapiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("project");
        let out = Command::new("bash")
            .arg(script("strapi"))
            .arg("project")
            .arg(&project)
            .output()
            .expect("scripts/strapi.sh project");
        assert!(
            out.status.success(),
            "scripts/strapi.sh project failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Many CLI runs, each signing in once, against one Strapi.
        let env = [("HOST", "127.0.0.1"), ("ADMIN_LOGIN_RATE_MAX", "1000")];
        let app = NodeApp::start(
            "strapi",
            &project,
            &env,
            "/_health",
            Duration::from_secs(180),
        )
        .await;
        let admin = json!({"firstname": "keyward", "lastname": "test", "email": EMAIL, "password": PASSWORD});
        let (status, body) = app
            .call("", Method::POST, "/admin/register-admin", Some(&admin))
            .await;
        assert!(status.is_success(), "register-admin: {status} {body}");
        StrapiServer {
            url: app.url.clone(),
            jwt: body["data"]["token"].as_str().expect("token").to_owned(),
            app,
            _dir: dir,
        }
    }

    pub fn credential(&self) -> String {
        format!("{EMAIL}:{PASSWORD}")
    }

    pub fn log(&self) -> String {
        self.app.log()
    }

    /// An admin-API call as the registered admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.app.call(&self.jwt, method, path, body.as_ref()).await
    }

    /// Every API token, by name.
    pub async fn tokens(&self) -> std::collections::BTreeMap<String, Value> {
        let (status, v) = self.admin(Method::GET, "/admin/api-tokens", None).await;
        assert_eq!(status, StatusCode::OK);
        v["data"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| (t["name"].as_str().unwrap_or_default().to_owned(), t.clone()))
            .collect()
    }

    /// Creates an entry with an API token; the status and the answer.
    pub async fn create_entry(&self, api: &str, key: &str) -> (StatusCode, Value) {
        let body = entry(api);
        let path = format!("/api/{api}");
        self.app.call(key, Method::POST, &path, Some(&body)).await
    }
}

/// A new entry of `api`, with its content type's one required field.
fn entry(api: &str) -> Value {
    let field = if api == "authors" { "name" } else { "title" };
    json!({"data": {field: "from a test"}})
}
