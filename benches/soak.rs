//! Soak run of `keyward cms serve` (the release binary, its own process, loopback only): mixed
//! load for a bounded time, then requests, unexpected answers, latency and resident memory.
//!
//! Load, from 32 client tasks (a quarter of them over HTTP/2 without TLS, h2c): authenticated
//! content reads (list and one entry), writes that replace or delete entries from a fixed pool
//! of ids (so the data does not grow), bogus secrets for a real key id from a second address
//! (answered 401 or 429); from one more task key create / regenerate / revoke (about 5 per
//! second; each costs Argon2id); and from a third address, anonymous calls to public endpoints
//! near the public rate limit: creates and deletes (a bounded pool), lists, reads, searches.
//!
//! Run: `bash scripts/soak.sh [SECONDS]` (default 600). Under `cargo test` it runs 3 s.
//! Exit status 1 if any answer was unexpected or memory grew by 20 % or more after warm-up.

use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "soak-admin-token-0123456789";
const ENTRY_POOL: usize = 500;
const CLIENTS: usize = 32;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    unexpected: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    first_unexpected: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, took: Duration, ok: bool, what: impl FnOnce() -> String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.lock().unwrap().push(us);
        if !ok {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            self.first_unexpected
                .lock()
                .unwrap()
                .get_or_insert_with(what);
        }
    }
}

/// A number from `/proc/PID/status` (`VmRSS` in KiB, `Threads`).
fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let mut rb = http.request(method, format!("{url}{path}"));
    if !key.is_empty() {
        rb = rb.bearer_auth(key);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    match rb.send().await {
        Ok(r) => {
            let status = r.status();
            let v = r.json().await.unwrap_or(Value::Null);
            (status, v, started.elapsed())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Value::Null, started.elapsed()),
    }
}

async fn content_client(
    url: String,
    reader: String,
    writer: String,
    bogus_id: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    // A quarter of the clients speak HTTP/2 (h2c, prior knowledge).
    let http = match seed % 4 {
        0 => reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("client"),
        _ => reqwest::Client::new(),
    };
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let id = format!("e{}", rng.gen_range(0..ENTRY_POOL));
        let roll = rng.gen_range(0..100);
        let (method, path, key, body, expected): (_, String, &str, _, &[StatusCode]) = match roll {
            0..=44 => (
                Method::GET,
                format!("/api/blog/{id}"),
                &reader,
                None,
                &[StatusCode::OK, StatusCode::NOT_FOUND],
            ),
            45..=64 => (
                Method::GET,
                "/api/blog?limit=10".into(),
                &reader,
                None,
                &[StatusCode::OK],
            ),
            65..=79 => (
                Method::PUT,
                format!("/api/blog/{id}"),
                &writer,
                Some(json!({"title": format!("soak {}", rng.gen::<u32>()), "n": rng.gen::<u16>()})),
                &[StatusCode::OK, StatusCode::CREATED],
            ),
            80..=84 => (
                Method::DELETE,
                format!("/api/blog/{id}"),
                &writer,
                None,
                &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            ),
            _ => (
                Method::GET,
                "/api/blog".into(),
                "",
                None,
                &[StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS],
            ),
        };
        let (client, key) = if key.is_empty() {
            (&other, format!("kw_{bogus_id}_{:0>43}", rng.gen::<u64>()))
        } else {
            (&http, key.to_owned())
        };
        let (status, _, took) = call(client, &url, method.clone(), &path, &key, body).await;
        tally.record(took, expected.contains(&status), || {
            format!("{method} {path} -> {status}")
        });
    }
}

async fn key_client(url: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut ids: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rng.gen_range(0..3);
        let (status, body, took, ok, what) = if roll == 0 || ids.len() < 5 {
            let (s, b, t) = call(
                &http,
                &url,
                Method::POST,
                "/v1/keys",
                ADMIN,
                Some(json!({"name": format!("soak-{n}"), "defaultPermissions": ["GET"]})),
            )
            .await;
            (s, b, t, s == StatusCode::CREATED, "create")
        } else if roll == 1 {
            let id = &ids[rng.gen_range(0..ids.len())];
            let (s, b, t) = call(
                &http,
                &url,
                Method::POST,
                &format!("/v1/keys/{id}/regenerate"),
                ADMIN,
                Some(json!({"graceSeconds": 1.5})),
            )
            .await;
            // 409: four earlier values of this key are still in their grace.
            let ok = s == StatusCode::OK || s == StatusCode::CONFLICT;
            (s, b, t, ok, "regenerate")
        } else {
            let id = ids.swap_remove(rng.gen_range(0..ids.len()));
            let (s, b, t) = call(
                &http,
                &url,
                Method::DELETE,
                &format!("/v1/keys/{id}"),
                ADMIN,
                None,
            )
            .await;
            (s, b, t, s == StatusCode::NO_CONTENT, "revoke")
        };
        if status == StatusCode::CREATED {
            if let Some(id) = body["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        tally.record(took, ok, || format!("{what} -> {status}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Anonymous calls to the public endpoints of `feedback`, from their own address, near the
/// public rate limit (20/s, burst 40): 429 is an expected answer too.
async fn public_client(url: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .expect("client");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut ids: Vec<String> = Vec::new();
    let limited = StatusCode::TOO_MANY_REQUESTS;
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.gen_range(0..100);
        let (method, path, body, expected): (_, String, _, &[StatusCode]) = match roll {
            0..=29 if ids.len() < 200 => (
                Method::POST,
                "/api/feedback".into(),
                Some(json!({"message": format!("soak {}", rng.gen::<u32>())})),
                &[StatusCode::CREATED, limited],
            ),
            0..=49 if !ids.is_empty() => {
                let id = ids.swap_remove(rng.gen_range(0..ids.len()));
                (
                    Method::DELETE,
                    format!("/api/feedback/{id}"),
                    None,
                    &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND, limited],
                )
            }
            50..=69 => (
                Method::GET,
                "/api/feedback?limit=20".into(),
                None,
                &[StatusCode::OK, limited],
            ),
            70..=84 => (
                Method::GET,
                "/api/feedback?q=nothing-like-this&limit=100".into(),
                None,
                &[StatusCode::OK, limited],
            ),
            _ => (
                Method::GET,
                format!(
                    "/api/feedback/{}",
                    ids.first().map_or("missing", String::as_str)
                ),
                None,
                &[StatusCode::OK, StatusCode::NOT_FOUND, limited],
            ),
        };
        let (status, answer, took) = call(&http, &url, method.clone(), &path, "", body).await;
        if status == StatusCode::CREATED {
            if let Some(id) = answer["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        tally.record(took, expected.contains(&status), || {
            format!("public {method} {path} -> {status}")
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let secs: u64 = match std::env::var("KEYWARD_SOAK_SECS") {
        Ok(v) => v
            .parse()
            .expect("KEYWARD_SOAK_SECS must be a number of seconds"),
        Err(_) if benching => 600,
        Err(_) => 3,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "cms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key-rate",
            "1000000",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("KEYWARD_CMS_ADMIN_TOKEN", ADMIN)
        .env("KEYWARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start keyward cms serve");
    let pid = child.id();
    let url = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("the server said where it listens");
    let http = reqwest::Client::new();
    call(&http, &url, Method::PUT, "/v1/apis/blog", ADMIN, None).await;
    call(&http, &url, Method::PUT, "/v1/apis/feedback", ADMIN, None).await;
    let public = json!({"operations": ["list", "get", "create", "delete"]});
    let (status, _, _) = call(
        &http,
        &url,
        Method::PUT,
        "/v1/apis/feedback/public",
        ADMIN,
        Some(public),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "public endpoints of feedback");
    let (_, r, _) = call(
        &http,
        &url,
        Method::POST,
        "/v1/keys",
        ADMIN,
        Some(json!({"name": "reader", "defaultPermissions": ["GET"]})),
    )
    .await;
    let reader = r["key"].as_str().expect("reader key").to_owned();
    let bogus_id = r["id"].as_str().expect("reader id").to_owned();
    let (_, r, _) = call(
        &http,
        &url,
        Method::POST,
        "/v1/keys",
        ADMIN,
        Some(json!({"name": "writer", "defaultPermissions": ["GET", "PUT", "DELETE"]})),
    )
    .await;
    let writer = r["key"].as_str().expect("writer key").to_owned();

    let rss_start = rss_kib(pid);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        tasks.push(tokio::spawn(content_client(
            url.clone(),
            reader.clone(),
            writer.clone(),
            bogus_id.clone(),
            tally.clone(),
            stop.clone(),
            i as u64,
        )));
    }
    tasks.push(tokio::spawn(key_client(
        url.clone(),
        tally.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(public_client(
        url.clone(),
        tally.clone(),
        stop.clone(),
    )));
    // Warm-up: the first tenth (at most 60 s) fills caches, limiter buckets and the entry pool.
    let warmup = Duration::from_secs((secs / 10).clamp(1, 60));
    let started = Instant::now();
    tokio::time::sleep(warmup).await;
    let rss_warm = rss_kib(pid);
    let mut next_report = started + Duration::from_secs(60);
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Instant::now() >= next_report {
            eprintln!(
                "soak: {:>4}s {:>9} requests, {} unexpected, RSS {} KiB",
                started.elapsed().as_secs(),
                tally.requests.load(Ordering::Relaxed),
                tally.unexpected.load(Ordering::Relaxed),
                rss_kib(pid)
            );
            next_report += Duration::from_secs(60);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end = rss_kib(pid);
    let threads_end = proc_status(pid, "Threads");
    let _ = child.kill();
    let _ = child.wait();

    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let requests = tally.requests.load(Ordering::Relaxed);
    let unexpected = tally.unexpected.load(Ordering::Relaxed);
    let growth = (rss_end as f64 / rss_warm.max(1) as f64 - 1.0) * 100.0;
    println!(
        "soak of keyward cms serve: {secs} s, {CLIENTS} content clients (a quarter over h2c) + 1 key-management client + 1 anonymous public-endpoint client"
    );
    println!(
        "  requests      {requests} ({:.0}/s)",
        requests as f64 / elapsed
    );
    println!("  unexpected    {unexpected}");
    if let Some(first) = tally.first_unexpected.lock().unwrap().as_ref() {
        println!("  first unexpected: {first}");
    }
    println!(
        "  latency       p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!("  threads       {} at the end", threads_end);
    println!("  RSS           start {rss_start} KiB, after {}s warm-up {rss_warm} KiB, end {rss_end} KiB ({growth:+.1} % after warm-up)", warmup.as_secs());
    if unexpected > 0 || growth >= 20.0 {
        std::process::exit(1);
    }
}
