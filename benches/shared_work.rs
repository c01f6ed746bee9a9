//! Anonymous searches cannot slow everyone down: an authenticated GET of one entry, timed
//! quiet and then while anonymous `?q=` searches of a full API run at the public rate limit,
//! against `keyward cms serve` (the release binary, its own process, loopback only).
//!
//! The API is filled to its default limits (10,000 entries, 64 MiB; `KEYWARD_BENCH_ENTRIES`
//! changes the number, each entry ~6 KiB) and its `list` made public; one address searches
//! for a text no entry holds (a full scan each time) every 50 ms, the default `--public-rate`
//! of 20/s (`KEYWARD_BENCH_SEARCHERS` addresses at once). The goal: the GET's p99 under the
//! searches stays below twice its quiet p99. `KEYWARD_BENCH_BIN` runs another build of
//! keyward (an older one, to compare).
//!
//! Run: `cargo bench --bench shared_work`. Under `cargo test` it runs a small API briefly.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support_server::{env_number, start};

#[path = "support/server.rs"]
mod support_server;

const ADMIN: &str = "bench-admin-token-0123456789";

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = http.request(method, format!("{url}{path}"));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// ~6 KiB of words, different for each entry.
fn text(i: usize) -> String {
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta",
    ];
    (0..900)
        .map(|j| words[(i * 7 + j) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sequential GETs of one entry with a key for `secs`; latencies in microseconds, sorted.
async fn timed_gets(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    key: &str,
    secs: f64,
) -> Vec<u64> {
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let started = Instant::now();
        let (status, _) = call(http, url, Method::GET, path, Some(key), None).await;
        assert_eq!(status, StatusCode::OK, "the authenticated GET");
        lat.push(started.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    lat
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let entries = env_number("KEYWARD_BENCH_ENTRIES", if benching { 10_000 } else { 200 });
    let searchers = env_number("KEYWARD_BENCH_SEARCHERS", 1);
    let secs = if benching { 10.0 } else { 1.0 };
    let bin = std::env::var("KEYWARD_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keyward").to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(&bin);
    cmd.args(["cms", "serve", "--listen", "127.0.0.1:0"])
        .args(["--key-rate", "1000000", "--data"])
        .arg(dir.path().join("data"))
        .env("KEYWARD_CMS_ADMIN_TOKEN", ADMIN)
        .env(
            "KEYWARD_LOG",
            std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let (child, url) = start(cmd);
    let http = reqwest::Client::new();
    call(&http, &url, Method::PUT, "/v1/apis/blog", Some(ADMIN), None).await;
    let (status, _) = call(
        &http,
        &url,
        Method::PUT,
        "/v1/apis/blog/public",
        Some(ADMIN),
        Some(json!({"operations": ["list"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "public list");
    let (_, r) = call(
        &http,
        &url,
        Method::POST,
        "/v1/keys",
        Some(ADMIN),
        Some(json!({"name": "reader", "defaultPermissions": ["GET"]})),
    )
    .await;
    let reader = r["key"].as_str().expect("reader key").to_owned();

    // Fill the API, eight writes at a time.
    let filled = Instant::now();
    let mut first = String::new();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(8) {
        let writes = chunk.iter().map(|i| {
            let body = json!({"title": format!("entry {i}"), "body": text(*i)});
            call(
                &http,
                &url,
                Method::POST,
                "/api/blog",
                Some(ADMIN),
                Some(body),
            )
        });
        for (status, body) in futures::future::join_all(writes).await {
            if status != StatusCode::CREATED {
                println!("the fill stopped at the API's limits: {status} {body}");
                break;
            }
            if first.is_empty() {
                first = body["id"].as_str().unwrap_or_default().to_owned();
            }
        }
    }
    let path = format!("/api/blog/{first}");
    println!(
        "filled {entries} entries of ~6 KiB in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    // Warm the key's cached check and the connection, then quiet figures.
    timed_gets(&http, &url, &path, &reader, 0.5).await;
    let quiet = timed_gets(&http, &url, &path, &reader, secs).await;

    // The same GETs while anonymous searches run at the public rate limit.
    let stop = Arc::new(AtomicBool::new(false));
    let (searches, refused, busy) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for s in 0..searchers {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2 + s as u8]))
            .build()
            .expect("client");
        let (url, stop) = (url.clone(), stop.clone());
        let (searches, refused, busy) = (searches.clone(), refused.clone(), busy.clone());
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let client = client.clone();
                let url = url.clone();
                let (searches, refused, busy) = (searches.clone(), refused.clone(), busy.clone());
                // Each search on its own: the rate is kept even when answers are slow.
                tokio::spawn(async move {
                    let r = client
                        .get(format!("{url}/api/blog?q=nowhere-to-be-found&limit=100"))
                        .send()
                        .await;
                    match r.map(|r| r.status()) {
                        Ok(StatusCode::OK) => searches.fetch_add(1, Ordering::Relaxed),
                        Ok(StatusCode::TOO_MANY_REQUESTS) => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => {
                            if busy.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("a search answered {other:?}");
                            }
                            0
                        }
                    };
                });
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_started = Instant::now();
    let loaded = timed_gets(&http, &url, &path, &reader, secs).await;
    let loaded_secs = loaded_started.elapsed().as_secs_f64();
    // Counted now: searches still under way when the server stops are not answers.
    let answered = [&searches, &refused, &busy].map(|c| c.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("searcher");
    }
    drop(child);

    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (l50, l99) = (percentile(&loaded, 0.5), percentile(&loaded, 0.99));
    println!(
        "authenticated GET of one entry, one after another for {secs} s, {entries} entries in the API:"
    );
    println!(
        "  quiet                      p50 {q50:.2} ms, p99 {q99:.2} ms ({} GETs)",
        quiet.len()
    );
    println!(
        "  with anonymous searches    p50 {l50:.2} ms, p99 {l99:.2} ms ({} GETs; {searchers} address(es) at 20/s; {} searches answered, {} refused 429, {} other answers in {loaded_secs:.1} s)",
        loaded.len(),
        answered[0],
        answered[1],
        answered[2],
    );
    println!(
        "  p99 under searches / quiet p99: {:.2}x (goal < 2x)",
        l99 / q99.max(0.001)
    );
}
