//! A real Strapi for the `strapi` provider's tests: a fresh project per test (two content types,
//! `articles` and `authors`) from `scripts/strapi.sh`, on a free loopback port, with its first
//! admin registered. Dropping it stops the server.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const EMAIL: &str = "admin@keyward.test";
pub const PASSWORD: &str = "Keyward-test-1";

pub struct StrapiServer {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    jwt: String,
}

impl Drop for StrapiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/strapi.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl StrapiServer {
    /// Installs Strapi once (cached), writes a project, starts it and registers the admin.
    pub async fn start() -> StrapiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("project");
        let out = Command::new("bash")
            .arg(script())
            .arg("project")
            .arg(&project)
            .output()
            .expect("scripts/strapi.sh project");
        assert!(
            out.status.success(),
            "scripts/strapi.sh project failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("strapi.log")).expect("log file");
        let child = Command::new("bash")
            .arg(script())
            .arg("run")
            .arg(&project)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            // Many CLI runs, each signing in once, against one Strapi.
            .env("ADMIN_LOGIN_RATE_MAX", "1000")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start Strapi");
        let mut s = StrapiServer {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            http: reqwest::Client::new(),
            jwt: String::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = s.http.get(format!("{}/_health", s.url)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("Strapi exited ({status}):\n{}", s.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "Strapi did not start:\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let r = s
            .http
            .post(format!("{}/admin/register-admin", s.url))
            .json(&json!({"firstname": "keyward", "lastname": "test", "email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .expect("register-admin");
        assert!(r.status().is_success(), "register-admin: {}", r.status());
        let body: Value = r.json().await.expect("json");
        s.jwt = body["data"]["token"].as_str().expect("token").to_owned();
        s
    }

    pub fn credential(&self) -> String {
        format!("{EMAIL}:{PASSWORD}")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("strapi.log")).unwrap_or_default()
    }

    /// An admin-API call as the registered admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.jwt);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("admin call");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
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
        let field = if api == "authors" { "name" } else { "title" };
        let r = self
            .http
            .post(format!("{}/api/{api}", self.url))
            .bearer_auth(key)
            .json(&json!({"data": {field: "from a test"}}))
            .send()
            .await
            .expect("create");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A content-API call with an API token: 200/201 allowed, 403 not allowed, 401 unknown.
    pub async fn status(&self, method: Method, api: &str, key: &str) -> StatusCode {
        // Each content type's one required field.
        let field = if api == "authors" { "name" } else { "title" };
        let body = matches!(method, Method::POST).then(|| json!({"data": {field: "from a test"}}));
        let mut rb = self
            .http
            .request(method, format!("{}/api/{api}", self.url))
            .bearer_auth(key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().await.expect("content call").status()
    }
}
