//! Plan and apply of many policies (default 1,000 x 3 keys) against the reference CMS on
//! loopback: wall time and CMS calls for a first apply, a no-change apply and a plan.
//!
//! Run: `cargo bench --bench gitops_scale` (KEYWARD_BENCH_POLICIES=N to change the size).
//! Under `cargo test` it runs with 5 policies as a smoke test.

#[path = "support/argon2_floor.rs"]
mod argon2_floor;

use keyward::cms::Rate;
use keyward::cms::{self, AdminToken, CmsConfig};
use keyward::gitops::{self, Mode, Options};
use std::time::Instant;

fn manifests(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "---
apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: site-{i}, namespace: bench}}
spec:
  keys:
    - name: reader
      defaultPermissions: [GET]
      secret: {{name: site-{i}-reader}}
    - name: writer
      apiPermissions: [{{api: contact, permissions: [POST]}}]
      secret: {{name: site-{i}-writer}}
    - name: preview
      defaultPermissions: [GET, GET_ALL_DRAFTS]
      environments: [staging]
      secret: {{name: site-{i}-preview}}
"
        ));
    }
    s
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = match std::env::var("KEYWARD_BENCH_POLICIES") {
        Ok(v) => v.parse().expect("KEYWARD_BENCH_POLICIES must be a number"),
        Err(_) if benching => 1000,
        Err(_) => 5,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, manifests(n)).expect("write manifests");
    let mut cfg = CmsConfig::new(dir.path().join("cms"));
    cfg.admin_token = Some(AdminToken::new("bench-admin-token-0123456789".into()));
    cfg.key_rate = Rate::new(1_000_000).expect("rate");
    let running = cms::start(cfg).await.expect("start CMS");
    let admin = running.admin_token.expose().to_owned();
    reqwest::Client::new()
        .put(format!("{}/v1/apis/contact", running.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("create API");
    let opts = |mode| Options {
        env_provider: keyward::policy::ProviderKind::Keyward,
        prune: false,
        paths: vec![file.clone()],
        secrets_to: Default::default(),
        secrets_dir: dir.path().join("secrets"),
        data_dir: dir.path().join("unused"),
        mode,
        env_url: Some(running.url()),
        env_token: Some(admin.clone().into()),
        ca_pem: None,
        clock: keyward::engine::Clock::system(),
        regenerate_missing: false,
        lock_timeout: std::time::Duration::from_secs(60),
        progress: None,
        expect: None,
        rotate: None,
        audit_log: None,
    };
    println!(
        "{n} policies x 3 keys = {} keys, reference CMS on {}",
        n * 3,
        running.url()
    );
    let floor = argon2_floor::floor(n * 3);
    for (label, mode) in [
        ("first apply", Mode::Apply),
        ("no-change apply", Mode::Apply),
        ("no-change plan", Mode::Plan),
    ] {
        let started = Instant::now();
        let outcome = gitops::run(&opts(mode)).await.expect("run");
        let took = started.elapsed();
        let r = &outcome.runs[0];
        println!(
            "{label:<16} {:>9.2} s   CMS calls: {:>5} reads, {:>5} writes   Secret files written: {:>5}   pending after: {}",
            took.as_secs_f64(),
            r.cms_reads,
            r.cms_writes,
            r.secret_writes,
            if mode == Mode::Plan { outcome.has_changes().to_string() } else { "-".into() }
        );
        if label == "first apply" {
            println!("first apply: {}", argon2_floor::ratio(took, floor));
        } else {
            assert_eq!(r.cms_writes, 0, "a no-change run makes zero CMS writes");
            assert_eq!(r.secret_writes, 0, "and writes no Secret");
        }
    }
    running.stop().await;
}
