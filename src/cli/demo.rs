//! `keyward cms demo`: the reference CMS started on a scratch directory, one key made, used,
//! regenerated and revoked, each answer printed.

use anyhow::{Context as _, Result};
use keyward::cms::{self, CmsConfig};
use std::path::PathBuf;

pub async fn demo(data: Option<PathBuf>) -> Result<()> {
    // Removed when the demo ends, however it ends.
    let scratch;
    let data = match data {
        Some(d) => d,
        None => {
            scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
            scratch.path().to_path_buf()
        }
    };
    let running = cms::start(CmsConfig::new(&data)).await?;
    let result = walk_through(&running, &data).await;
    running.stop().await;
    result
}

async fn walk_through(running: &cms::RunningCms, data: &std::path::Path) -> Result<()> {
    use reqwest::Method;
    use serde_json::json;
    let demo = Demo {
        base: running.url(),
        admin: running.admin_token.expose().to_owned(),
        http: reqwest::Client::new(),
    };
    say!(
        "reference CMS on {} (data in {})",
        demo.base,
        data.display()
    );
    for api in ["blog", "contact"] {
        demo.admin(Method::PUT, &format!("/v1/apis/{api}"), None)
            .await?;
    }
    let entry = json!({"title": "Hello from keyward"});
    demo.admin(Method::PUT, "/api/blog/hello", Some(entry))
        .await?;
    let (id, key) = demo.create_key().await?;
    let requests = [
        ("GET  /api/blog/hello", Method::GET, "/api/blog/hello", None),
        (
            "POST /api/blog (no POST on blog)",
            Method::POST,
            "/api/blog",
            Some(json!({"title": "x"})),
        ),
        (
            "POST /api/contact",
            Method::POST,
            "/api/contact",
            Some(json!({"email": "a@example.com"})),
        ),
        (
            "GET  /api/contact (individual perms replace GET)",
            Method::GET,
            "/api/contact",
            None,
        ),
    ];
    for (what, method, path, body) in requests {
        demo.show(what, method, path, &key, body).await?;
    }
    let grace = json!({"graceSeconds": 60});
    let path = format!("/v1/keys/{id}/regenerate");
    let regen = demo.admin(Method::POST, &path, Some(grace)).await?;
    let new_key = text_of(&regen.json().await?, "key")?;
    say!("regenerated with 60 s grace:");
    for (what, value) in [
        ("GET with the old value (in grace)", &key),
        ("GET with the new value", &new_key),
    ] {
        demo.show(what, Method::GET, "/api/blog/hello", value, None)
            .await?;
    }
    demo.admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await?;
    say!("revoked:");
    let what = "GET with the new value";
    demo.show(what, Method::GET, "/api/blog/hello", &new_key, None)
        .await
}

/// The demo's client of the CMS it started.
struct Demo {
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Demo {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Result<reqwest::Response> {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        match body {
            Some(b) => rb.json(&b),
            None => rb,
        }
        .send()
        .await
    }

    /// A call as the admin, which must succeed.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        Ok(self
            .send(method, path, &self.admin, body)
            .await?
            .error_for_status()?)
    }

    /// A request whose answer is shown, not checked: the point is to see 200, 403, 401.
    async fn show(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let status = self.send(method, path, key, body).await?.status().as_u16();
        say!("  {what:<48} -> {status}");
        Ok(())
    }

    /// The demo's key: read everything, write only the contact form. Its (id, value).
    async fn create_key(&self) -> Result<(String, String)> {
        let name = format!(
            "demo-{}",
            jiff::Timestamp::now().strftime("%Y%m%d%H%M%S%3f")
        );
        let spec = serde_json::json!({
            "name": name,
            "description": "read everything, write only the contact form",
            "defaultPermissions": ["GET"],
            "apiPermissions": [{"api": "contact", "permissions": ["POST"]}],
            "expiresAt": keyward::model::rfc3339(jiff::Timestamp::now() + keyward::model::days(30)),
        });
        let created: serde_json::Value = self
            .admin(reqwest::Method::POST, "/v1/keys", Some(spec))
            .await?
            .json()
            .await?;
        let (id, key) = (text_of(&created, "id")?, text_of(&created, "key")?);
        say!(
            "created key {name} (id {id}, fingerprint {}): default GET, POST on contact",
            cms::secret::fingerprint(&key)
        );
        Ok((id, key))
    }
}

/// A text field of a CMS answer.
fn text_of(answer: &serde_json::Value, field: &str) -> Result<String> {
    answer[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the CMS answered without '{field}'"))
}
