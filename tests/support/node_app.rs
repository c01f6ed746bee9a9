//! What the real Strapi and Directus test servers share: a project's server started by its
//! script (`scripts/<name>.sh run PROJECT`) on a free loopback port with its output in a log
//! file, waited for until its health URL answers and stopped when dropped; and JSON calls to it.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NodeApp {
    pub url: String,
    name: &'static str,
    child: Child,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scripts/<name>.sh`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scripts/{name}.sh"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NodeApp {
    /// Runs `project` with `env` (and `PORT`), logging beside it, until `health` answers; gives
    /// up after `within` or when the server exits, showing its log.
    pub async fn start(
        name: &'static str,
        project: &Path,
        env: &[(&str, &str)],
        health: &str,
        within: Duration,
    ) -> NodeApp {
        let port = free_port();
        let log = project.with_file_name(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("bash")
            .arg(script(name))
            .arg("run")
            .arg(project)
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut app = NodeApp {
            url: format!("http://127.0.0.1:{port}"),
            name,
            child,
            log,
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = app.http.get(format!("{}{health}", app.url)).send().await {
                if r.status().is_success() {
                    return app;
                }
            }
            if let Ok(Some(status)) = app.child.try_wait() {
                panic!("{} exited ({status}):\n{}", app.name, app.log());
            }
            assert!(
                started.elapsed() < within,
                "{} did not start:\n{}",
                app.name,
                app.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A call with `token` as the bearer (none when empty): the status and the JSON answer
    /// (`Null` when there is none).
    pub async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            rb = rb.bearer_auth(token);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} call: {e}", self.name));
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}
