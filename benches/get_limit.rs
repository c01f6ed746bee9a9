//! The authenticated GET of one entry against its limit, in one run: `keyward cms serve` and a
//! limit server built from the same lock file (axum, hyper, tokio) that answers the same bytes
//! after a constant-time compare of the bearer token and does nothing else. Each server runs
//! pinned to core 0, wrk pinned to core 1 (one thread, 64 connections); rounds alternate between
//! the two so the machine's noise falls on both. The goal: keyward >= 0.8x the limit.
//!
//! Run: `cargo bench --bench get_limit` (`KEYWARD_BENCH_ROUNDS`, default 3, and
//! `KEYWARD_BENCH_SECS`, default 10; `KEYWARD_BENCH_BIN` measures another build of keyward).
//! Needs `wrk` and `taskset` (`scripts/load.sh` installs wrk). Under `cargo test` it only checks
//! that both servers answer the same bytes to the key and refuse another.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use std::process::Command;
use support_server::{env_number, start};

#[path = "support/server.rs"]
mod support_server;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";

/// Pinned to `core`.
fn pinned(core: &str, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", core]).arg(program);
    cmd
}

/// The limit server: the same answer for the one token, 401 for anything else.
async fn limit_server(token: String, body: axum::body::Bytes) {
    let app = axum::Router::new().route(
        "/api/{api}/{id}",
        get(move |headers: HeaderMap| {
            let (token, body) = (token.clone(), body.clone());
            async move {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                    .unwrap_or_default();
                if bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_bytes())) {
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    println!("listening on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, axum::body::Bytes) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("call");
    let status = StatusCode::from_u16(r.status().as_u16()).expect("status");
    (status, r.bytes().await.expect("body"))
}

/// wrk's requests per second against `url` with `key`, from core 1.
fn wrk(url: &str, key: &str, secs: u64) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c64"])
        .arg(format!("-d{secs}s"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url)
        .output()
        .expect("run wrk (scripts/load.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "every answer a 200: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk said: {text}"))
}

#[tokio::main]
async fn main() {
    if let (Ok(token), Ok(body)) = (
        std::env::var("KEYWARD_BENCH_LIMIT_TOKEN"),
        std::env::var("KEYWARD_BENCH_LIMIT_BODY"),
    ) {
        let body = std::fs::read(body).expect("the body to answer");
        return limit_server(token, body.into()).await;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let bin = std::env::var("KEYWARD_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keyward").to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = pinned("0", std::path::Path::new(&bin));
    cmd.args(["cms", "serve", "--listen", "127.0.0.1:0"])
        .args(["--key-rate", "100000000", "--data"])
        .arg(dir.path().join("data"))
        .env("KEYWARD_CMS_ADMIN_TOKEN", ADMIN)
        .env("KEYWARD_LOG", "warn");
    let (_keyward, url) = start(cmd);
    let http = reqwest::Client::new();
    let put = reqwest::Method::PUT;
    call(&http, put, &format!("{url}/v1/apis/articles"), ADMIN, None).await;
    let entry =
        serde_json::json!({"title": "one entry", "body": "a published entry of ordinary size"});
    let post = reqwest::Method::POST;
    let (_, made) = call(
        &http,
        post.clone(),
        &format!("{url}/api/articles"),
        ADMIN,
        Some(entry),
    )
    .await;
    let id = serde_json::from_slice::<serde_json::Value>(&made).expect("entry")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let spec = serde_json::json!({"name": "load", "defaultPermissions": ["GET"]});
    let (_, made) = call(&http, post, &format!("{url}/v1/keys"), ADMIN, Some(spec)).await;
    let key = serde_json::from_slice::<serde_json::Value>(&made).expect("key")["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let path = format!("/api/articles/{id}");
    let get = reqwest::Method::GET;
    let (status, body) = call(&http, get.clone(), &format!("{url}{path}"), &key, None).await;
    assert_eq!(status, StatusCode::OK);
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).expect("write the body");
    let mut cmd = pinned("0", &std::env::current_exe().expect("this bench"));
    cmd.env("KEYWARD_BENCH_LIMIT_TOKEN", &key)
        .env("KEYWARD_BENCH_LIMIT_BODY", &body_file);
    let (_limit, limit_url) = start(cmd);
    for target in [&url, &limit_url] {
        let at = format!("{target}{path}");
        let (status, answer) = call(&http, get.clone(), &at, &key, None).await;
        assert_eq!((status, &answer), (StatusCode::OK, &body), "{target}");
        let (status, _) = call(&http, get.clone(), &at, "kw_wrong", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{target}");
    }
    if !benching {
        println!(
            "get_limit: both servers answer the same {} bytes (wrk runs under --bench)",
            body.len()
        );
        return;
    }
    let rounds = env_number("KEYWARD_BENCH_ROUNDS", 3u64);
    let secs = env_number("KEYWARD_BENCH_SECS", 10u64);
    println!(
        "GET {path} ({} bytes), wrk -t1 -c64 -d{secs}s on core 1, each server on core 0",
        body.len()
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let ours = wrk(&format!("{url}{path}"), &key, secs);
        let limit = wrk(&format!("{limit_url}{path}"), &key, secs);
        let ratio = ours / limit;
        ratios.push(ratio);
        println!("round {round}: keyward {ours:.0}/s, limit {limit:.0}/s, ratio {ratio:.3}");
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "ratio to the limit: median {median:.3} (min {:.3}, max {:.3}; goal >= 0.8)",
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
