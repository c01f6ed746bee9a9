//! A real Directus for the `directus` provider's tests: a fresh project per test (sqlite, the
//! collections `articles` with a `status` field and `authors` without) from
//! `scripts/directus.sh`, on a free loopback port, with a static admin token. Dropping it stops
//! the server.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct DirectusServer {
    pub url: String,
    pub admin_token: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for DirectusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/directus.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn script_output(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
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

impl DirectusServer {
    /// Installs Directus once (cached), writes a project, bootstraps and starts it, and creates
    /// the two collections.
    pub async fn start() -> DirectusServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("project");
        let project_arg = project.to_str().expect("utf-8 path");
        let admin_token = script_output(&["project", project_arg]).trim().to_owned();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("directus.log")).expect("log file");
        let child = Command::new("bash")
            .arg(script())
            .arg("run")
            .arg(&project)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start Directus");
        let mut s = DirectusServer {
            url: format!("http://127.0.0.1:{port}"),
            admin_token,
            child,
            dir,
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = s.http.get(format!("{}/server/health", s.url)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("Directus exited ({status}):\n{}", s.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "Directus did not start:\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        script_output(&["collections", &s.url, &s.admin_token]);
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("directus.log")).unwrap_or_default()
    }

    /// A call as the admin.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("admin call");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
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
        let mut rb = self
            .http
            .request(method.clone(), format!("{}/items/{collection}", self.url))
            .bearer_auth(key);
        if method == Method::POST {
            rb = rb.json(&json!({ field: "from a test" }));
        }
        let r = rb.send().await.expect("content call");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The status of a content call: 200 allowed, 403 not allowed, 401 unknown key.
    pub async fn status(&self, method: Method, collection: &str, key: &str) -> StatusCode {
        self.call(method, collection, key).await.0
    }
}
