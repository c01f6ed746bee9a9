//! The operator at scale, against the in-process Kubernetes API emulator and the reference CMS
//! on loopback: time for N policies x 3 keys to become Ready from a cold start, resident memory
//! at that point, writes during a steady period with drift checks on (must be zero), and the
//! time from deleting a policy to its keys answering 401.
//!
//! Run: `cargo bench --bench operator_scale` (1,000 policies, 10 minutes of steady state). It
//! prints the cold start against the Argon2id floor (one core hashing, and every core at
//! once), the CMS key listings, the operator's RSS (in all and per policy), and the deletion
//! latency.
//! KEYWARD_BENCH_POLICIES, KEYWARD_BENCH_STEADY_SECS and KEYWARD_BENCH_DRIFT_SECS change that.
//! Under `cargo test` it runs 3 policies for 3 seconds as a smoke test.

#[path = "support/argon2_floor.rs"]
mod argon2_floor;
#[path = "../tests/support/kube_emulator.rs"]
mod kube_emulator;
#[path = "../tests/support/kube_rbac.rs"]
mod kube_rbac;
#[path = "../tests/support/kube_schema.rs"]
mod kube_schema;

use keyward::cms::Rate;
use keyward::cms::{self, AdminToken, CmsConfig};
use keyward::operator::metrics::Metrics;
use keyward::operator::{Context, OperatorConfig};
use keyward::policy::ApiKeyPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, bench: u64, test: u64, benching: bool) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { bench } else { test })
}

fn rss_mib() -> f64 {
    rss_at("/proc/self/status")
}

fn rss_of(pid: u32) -> f64 {
    rss_at(&format!("/proc/{pid}/status"))
}

fn rss_at(path: &str) -> f64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn create(client: &kube::Client, path: &str, obj: Value) {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&obj).unwrap())
        .unwrap();
    let _: Value = client.request(req).await.expect("create");
}

fn ready_count(emu: &kube_emulator::Emulator) -> usize {
    emu.count("apis/keyward.dev/v1alpha1/apikeypolicies", |p| {
        p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n = env_or("KEYWARD_BENCH_POLICIES", 1000, 3, benching) as usize;
    let steady = Duration::from_secs(env_or("KEYWARD_BENCH_STEADY_SECS", 600, 3, benching));
    let drift = Duration::from_secs(env_or("KEYWARD_BENCH_DRIFT_SECS", 60, 1, benching));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = CmsConfig::new(dir.path());
    cfg.admin_token = Some(AdminToken::new("bench-admin-token-0123456789".into()));
    cfg.key_rate = Rate::new(1_000_000).expect("rate");
    let running = cms::start(cfg).await.expect("CMS");
    let url = running.url();
    let admin = running.admin_token.expose().to_owned();
    let http = reqwest::Client::new();
    http.put(format!("{url}/v1/apis/blog"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("api");

    let emu = kube_emulator::Emulator::new();
    let client = emu.client();
    create(
        &client,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await;
    create(&client, "/api/v1/namespaces/bench/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cms", "labels": {"keyward.dev/credential": "true"}}, "stringData": {"token": admin}})).await;
    create(&client, "/apis/keyward.dev/v1alpha1/namespaces/bench/cmsconnections", json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "CmsConnection",
        "metadata": {"name": "main"}, "spec": {"endpoint": url, "credentialsSecretRef": {"name": "cms"}}})).await;
    // stringData is not folded into data by the emulator: write data directly.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "bench");
    let mut s = secrets.get("cms").await.expect("secret");
    s.data = Some(
        [(
            "token".to_owned(),
            k8s_openapi::ByteString(admin.as_bytes().to_vec()),
        )]
        .into(),
    );
    s.string_data = None;
    secrets
        .replace("cms", &PostParams::default(), &s)
        .await
        .expect("secret data");

    let policies: Api<ApiKeyPolicy> = Api::namespaced(client.clone(), "bench");
    for i in 0..n {
        let keys: Vec<Value> = ["reader", "writer", "preview"]
            .iter()
            .map(|k| json!({"name": k, "defaultPermissions": ["GET"], "secret": {"name": format!("p{i}-{k}")}}))
            .collect();
        let p: ApiKeyPolicy = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": format!("p{i}")}, "spec": {"connectionRef": {"name": "main"}, "keys": keys}}))
        .expect("policy");
        policies
            .create(&PostParams::default(), &p)
            .await
            .expect("create policy");
    }
    let rss_before = rss_mib();
    println!("{n} policies x 3 keys; drift checks every {}s; RSS before the operator: {rss_before:.0} MiB", drift.as_secs());

    let floor = argon2_floor::floor(n * 3);
    // The operator runs as its own process (the real binary), talking to the emulator over HTTP,
    // so its resident memory is its own; under `cargo test` it runs in-process.
    let started = Instant::now();
    let mut child = None;
    let mut in_process = None;
    if benching {
        let base = emu.serve_http().await;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kube_emulator::Emulator::kubeconfig(&base))
            .expect("kubeconfig");
        child = Some(
            std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
                .args([
                    "operator",
                    "--metrics-addr",
                    "127.0.0.1:0",
                    "--drift-interval",
                ])
                .arg(format!("{}s", drift.as_secs()))
                .env("KUBECONFIG", &kubeconfig)
                .env(
                    "KEYWARD_LOG",
                    std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("operator process"),
        );
    } else {
        let config = OperatorConfig {
            drift_interval: drift,
            ..Default::default()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            config,
            Arc::new(Metrics::new()),
        ));
        in_process = Some(tokio::spawn(keyward::operator::run_controller(ctx)));
    }
    while ready_count(&emu) < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "not Ready within an hour"
        );
    }
    let cold = started.elapsed();
    println!(
        "cold start: {}; {} CMS key listings",
        argon2_floor::ratio(cold, floor),
        running.key_listings()
    );
    match &child {
        Some(c) => {
            let rss = rss_of(c.id());
            println!(
                "cold start to all Ready: {:.1} s; operator process RSS {rss:.0} MiB ({:.0} KiB a policy)",
                cold.as_secs_f64(),
                rss * 1024.0 / n as f64
            )
        }
        None => println!(
            "cold start to all Ready: {:.1} s (operator in-process)",
            cold.as_secs_f64()
        ),
    }

    // Steady state: nothing changes, drift checks keep reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kinds = [
        "secrets",
        "apikeypolicies",
        "roles",
        "rolebindings",
        "deployments",
    ];
    let k8s_before: u64 = kinds.iter().map(|k| emu.counters.writes_to(k)).sum();
    let reads = || {
        emu.counters
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let gets = || emu.counters.gets().values().sum::<u64>();
    let (cms_w, reads_before, gets_before, listings_before) =
        (running.writes(), reads(), gets(), running.key_listings());
    tokio::time::sleep(steady).await;
    let k8s_writes = kinds.iter().map(|k| emu.counters.writes_to(k)).sum::<u64>() - k8s_before;
    let cms_writes = running.writes() - cms_w;
    let k8s_reads = reads() - reads_before;
    let k8s_gets = gets() - gets_before;
    let listings = running.key_listings() - listings_before;
    println!("steady {}s: {k8s_writes} Kubernetes writes, {cms_writes} CMS writes; drift checks read: {k8s_gets} Kubernetes GETs ({k8s_reads} Kubernetes requests with lists and watches), {listings} CMS key listings", steady.as_secs());
    if let Some(c) = &child {
        println!(
            "operator process RSS after the steady period: {:.0} MiB",
            rss_of(c.id())
        );
    }
    assert_eq!(
        k8s_writes, 0,
        "an unchanged policy makes zero Kubernetes writes"
    );
    assert_eq!(cms_writes, 0, "and zero CMS writes");

    // Deletion to 401.
    let samples = n.min(50);
    let mut lat = Vec::new();
    for i in 0..samples {
        let secret = secrets.get(&format!("p{i}-reader")).await.expect("secret");
        let key = String::from_utf8(secret.data.expect("data")["apiKey"].0.clone()).expect("utf8");
        let check = || http.get(format!("{url}/api/blog")).bearer_auth(&key).send();
        assert_eq!(check().await.expect("get").status(), 200); // warm the verification cache
        let t = Instant::now();
        policies
            .delete(&format!("p{i}"), &DeleteParams::default())
            .await
            .expect("delete");
        while check().await.expect("get").status() != 401 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(t.elapsed() < Duration::from_secs(60), "key not revoked");
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "policy deletion to 401 ({samples} samples): p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(op) = in_process {
        op.abort();
    }
    running.stop().await;
}
