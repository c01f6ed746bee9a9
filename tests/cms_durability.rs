//! The `keyward cms serve` process: restarts keep everything, SIGKILL during writes loses no
//! acknowledged write, and logs never carry a key.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::process::spawn;
use support::{Cms, ADMIN};

async fn send(
    http: &reqwest::Client,
    url: &str,
    method: Method,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Option<(StatusCode, serde_json::Value)> {
    let mut rb = http
        .request(method, format!("{url}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.ok()?;
    let status = r.status();
    let body = r.json().await.ok()?;
    Some((status, body))
}

#[tokio::test]
async fn restart_keeps_keys_settings_and_entries() {
    let mut cms = Cms::start().await;
    cms.api("blog").await;
    cms.admin(
        Method::PUT,
        "/v1/cors",
        Some(json!({"origins": ["https://a.example.com"]})),
    )
    .await;
    cms.admin(
        Method::PUT,
        "/v1/apis/blog/public",
        Some(json!({"operations": ["list"]})),
    )
    .await;
    cms.admin(
        Method::PUT,
        "/v1/cors/owners/policy:shop.web",
        Some(json!({"origins": ["https://owned.example.com"]})),
    )
    .await;
    cms.admin(
        Method::PUT,
        "/v1/roles/viewer",
        Some(json!({"contentPermissions": ["GET"]})),
    )
    .await;
    cms.admin(
        Method::POST,
        "/v1/members",
        Some(json!({"name": "ann", "role": "viewer"})),
    )
    .await;
    let (_, personal) = cms
        .key(json!({"name": "ann", "kind": "personal", "owner": "ann"}))
        .await;
    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    let r = cms.regenerate(&id, Some(json!(600))).await;
    let new = r.body["key"].as_str().unwrap().to_owned();
    let entry = cms.entry("blog", json!({"title": "kept"})).await;
    let before = cms.admin(Method::GET, "/v1/keys", None).await.body;

    cms.restart().await;
    assert_eq!(cms.admin(Method::GET, "/v1/keys", None).await.body, before);
    for k in [&key, &new, &personal] {
        let r = cms
            .req(Method::GET, &format!("/api/blog/{entry}"), Some(k), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["title"], "kept");
    }
    let cors = cms.admin(Method::GET, "/v1/cors", None).await.body;
    assert_eq!(cors["origins"], json!(["https://a.example.com"]));
    assert_eq!(
        cors["effective"],
        json!(["https://a.example.com", "https://owned.example.com"]),
        "owners' entries kept"
    );
    assert_eq!(
        cms.req(Method::GET, "/api/blog", None, None).await.status,
        StatusCode::OK,
        "public list kept"
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/members", None).await.body["members"][0]["name"],
        "ann"
    );
}

#[tokio::test]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), None);
    let http = reqwest::Client::new();
    let url = server.url.clone();
    send(&http, &url, Method::PUT, "/v1/apis/blog", ADMIN, None)
        .await
        .unwrap();

    let acked_entries = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_keys = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, url, entries, keys) = (
            http.clone(),
            url.clone(),
            acked_entries.clone(),
            acked_keys.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if w == 0 && i % 4 == 0 {
                    let spec = json!({"name": format!("k{w}-{i}"), "defaultPermissions": ["GET"]});
                    match send(&http, &url, Method::POST, "/v1/keys", ADMIN, Some(spec)).await {
                        Some((StatusCode::CREATED, b)) => keys.lock().unwrap().push((
                            b["id"].as_str().unwrap().into(),
                            b["key"].as_str().unwrap().into(),
                        )),
                        Some(_) => {}
                        None => break,
                    }
                } else {
                    match send(
                        &http,
                        &url,
                        Method::POST,
                        "/api/blog",
                        ADMIN,
                        Some(json!({"w": w, "i": i})),
                    )
                    .await
                    {
                        Some((StatusCode::CREATED, b)) => entries
                            .lock()
                            .unwrap()
                            .push(b["id"].as_str().unwrap().into()),
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        }));
    }
    // Killed mid-flight once the writers have been acknowledged a good number of writes (the
    // writers keep going: the kill lands among writes in flight).
    support::eventually("acknowledged writes", Duration::from_secs(30), || async {
        acked_entries.lock().unwrap().len() > 40 && acked_keys.lock().unwrap().len() > 2
    })
    .await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let entries = acked_entries.lock().unwrap().clone();
    let keys = acked_keys.lock().unwrap().clone();
    assert!(
        entries.len() > 20,
        "the writers made progress: {}",
        entries.len()
    );
    assert!(!keys.is_empty());

    let mut server = spawn(dir.path(), None);
    let url = server.url.clone();
    for id in &entries {
        let (status, _) = send(
            &http,
            &url,
            Method::GET,
            &format!("/api/blog/{id}"),
            ADMIN,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged entry {id} was lost");
    }
    for (id, key) in &keys {
        let (status, _) = send(
            &http,
            &url,
            Method::GET,
            &format!("/v1/keys/{id}"),
            ADMIN,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged key {id} was lost");
        let (status, _) = send(&http, &url, Method::GET, "/api/blog", key, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "key {id} no longer works");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn logs_and_errors_never_carry_key_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let data = dir.path().join("data");
    let mut server = spawn(&data, Some(&log));
    let http = reqwest::Client::new();
    let url = server.url.clone();
    send(&http, &url, Method::PUT, "/v1/apis/blog", ADMIN, None)
        .await
        .unwrap();
    let (_, b) = send(
        &http,
        &url,
        Method::POST,
        "/v1/keys",
        ADMIN,
        Some(json!({"name": "k", "defaultPermissions": ["GET"]})),
    )
    .await
    .unwrap();
    let (id, key) = (
        b["id"].as_str().unwrap().to_owned(),
        b["key"].as_str().unwrap().to_owned(),
    );
    send(&http, &url, Method::GET, "/api/blog", &key, None)
        .await
        .unwrap();
    let (status, body) = send(
        &http,
        &url,
        Method::POST,
        "/api/blog",
        &key,
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.to_string().contains(&key));
    let (_, b) = send(
        &http,
        &url,
        Method::POST,
        &format!("/v1/keys/{id}/regenerate"),
        ADMIN,
        Some(json!({"graceSeconds": 5})),
    )
    .await
    .unwrap();
    let new = b["key"].as_str().unwrap().to_owned();
    send(
        &http,
        &url,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        ADMIN,
        None,
    )
    .await;
    send(&http, &url, Method::GET, "/api/blog", &new, None).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("key created") && logs.contains(&id),
        "the log is there: {logs}"
    );
    let secret = |k: &str| k[format!("kw_{id}_").len()..].to_owned();
    for s in [secret(&key), secret(&new), ADMIN.to_owned()] {
        assert!(!logs.contains(&s), "a secret reached the log");
    }
    assert!(
        !std::fs::read_dir(&data)
            .unwrap()
            .any(|e| e.unwrap().file_name() == "admin-token"),
        "env token is not written"
    );
}

#[test]
fn generated_admin_token_is_written_0600_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["cms", "serve", "--data"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("KEYWARD_CMS_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let first = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        first
    };
    let line = start();
    let path = dir.path().join("admin-token");
    assert_eq!(line, format!("admin token: {}", path.display()));
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(token.trim().len() > 40);
    start();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        token,
        "a restart reuses the token"
    );
}

#[test]
fn the_demo_walks_a_key_through_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["cms", "demo", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.rsplit("-> ").next().filter(|_| l.contains("-> ")))
        .collect();
    assert_eq!(
        statuses,
        ["200", "403", "201", "403", "200", "200", "401"],
        "{text}"
    );
}

/// SIGTERM (what Kubernetes sends, and what the image's PID 1 gets) stops `cms serve`
/// gracefully: no new connections, the request in flight is finished and answered, the
/// database's log is written into it, exit 0. Before, SIGTERM was not handled: the process
/// died at once (and as PID 1 ignored it until it was killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_requests_in_flight_and_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut server = spawn(&dir.path().join("data"), Some(&log));
    let http = reqwest::Client::new();
    send(
        &http,
        &server.url,
        Method::PUT,
        "/v1/apis/blog",
        ADMIN,
        None,
    )
    .await;
    // A write half sent when the signal comes.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"title": "in flight"}"#;
    let head = format!(
        "POST /api/blog HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..5]).await.unwrap();
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // New connections are refused once it is stopping (the request in flight goes on).
    support::eventually(
        "new connections are refused",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(&addr).await.is_err() },
    )
    .await;
    tcp.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = server.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let wal = dir.path().join("data/keyward-cms.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the log was written into the database"
    );
    // The answered write is there after a restart.
    let again = spawn(&dir.path().join("data"), None);
    let listed = send(&http, &again.url, Method::GET, "/api/blog", ADMIN, None)
        .await
        .unwrap();
    assert_eq!(
        listed.1["contents"][0]["title"], "in flight",
        "{}",
        listed.1
    );
    drop(again);
    drop(server);
}
