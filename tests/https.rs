//! HTTPS: the reference CMS served over TLS (a CA made in the test), and reloaded on SIGHUP.

mod support;

use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use support::tls::{client_trusting, TestCa};
use support::Cms;

#[tokio::test]
async fn the_reference_cms_serves_https_with_http2() {
    let ca = TestCa::new("keyward");
    let files = ca.server("cms", &["localhost", "127.0.0.1"], false);
    let cms = Cms::start_with(|c| c.tls = Some(files)).await;
    assert!(cms.url.starts_with("https://127.0.0.1:"), "{}", cms.url);
    let http = client_trusting(&ca.ca_pem);
    let r = http
        .get(format!("{}/healthz", cms.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    let localhost = cms.url.replace("127.0.0.1", "localhost");
    let r = http
        .get(format!("{localhost}/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/json");
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(cms.url.replace("https", "http") + "/healthz")
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn sighup_reloads_the_certificate() {
    let old_ca = TestCa::new("old");
    let new_ca = TestCa::new("new");
    let files = old_ca.server("cms", &["127.0.0.1"], false);
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr");
    let mut child = support::process::serve_command(&data.path().join("cms"))
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let works = |ca: &TestCa| {
        let http = client_trusting(&ca.ca_pem);
        let url = url.clone();
        rt.block_on(async move { http.get(format!("{url}/healthz")).send().await.is_ok() })
    };
    assert!(works(&old_ca));
    assert!(!works(&new_ca));
    // The new certificate takes the files' place; SIGHUP makes new connections use it.
    let fresh = new_ca.server("cms", &["127.0.0.1"], false);
    std::fs::copy(&fresh.cert, &files.cert).unwrap();
    std::fs::copy(&fresh.key, &files.key).unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !works(&new_ca) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!works(&old_ca));
    // A broken file on reload keeps the current certificate.
    std::fs::write(&files.key, "not a key").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload failed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload failure logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(works(&new_ca));
    let _ = child.kill();
    let _ = child.wait();
}
