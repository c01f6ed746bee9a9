//! HTTPS: the reference CMS served over TLS (a CA made in the test), and reloaded on SIGHUP.

mod support;

use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use support::process::keyward;
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
    // A FIFO in the certificate's place: refused at once (before, the open waited for a writer
    // and the signal loop hung), and the next SIGHUP is still heard.
    let count = |what: &str| std::fs::read_to_string(&log).unwrap().matches(what).count();
    let wait_for = |what: &str, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(what) < n {
            assert!(std::time::Instant::now() < deadline, "no '{what}' logged");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::remove_file(&files.cert).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&files.cert)
        .status()
        .unwrap()
        .success());
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
    };
    hup();
    wait_for("not a regular file", 1);
    std::fs::remove_file(&files.cert).unwrap();
    std::fs::copy(&fresh.cert, &files.cert).unwrap();
    std::fs::copy(&fresh.key, &files.key).unwrap();
    let reloads = count("reloaded");
    hup();
    wait_for("reloaded", reloads + 1);
    assert!(works(&new_ca));
    let _ = child.kill();
    let _ = child.wait();
}

// ---- the CLI reaching a CMS over HTTPS ----------------------------------------------------------

const POLICY: &str = "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: web, namespace: shop}
spec:
  keys:
    - name: reader
      defaultPermissions: [GET]
      secret: {name: reader}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_apply_over_https_with_a_private_ca() {
    let ca = TestCa::new("private");
    let cms =
        Cms::start_with(|c| c.tls = Some(ca.server("cms", &["127.0.0.1", "localhost"], false)))
            .await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("policy.yaml"), POLICY).unwrap();
    let ca_file = ca.ca_pem.to_str().unwrap().to_owned();
    let base = [
        ("KEYWARD_CMS_URL", cms.url.as_str()),
        ("KEYWARD_CMS_TOKEN", support::ADMIN),
    ];
    let files = ["-f", "policy.yaml", "--secrets-dir", "out"];
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(files);
        let mut e = base.to_vec();
        e.extend_from_slice(env);
        keyward(work.path(), &all, &e)
    };
    // --ca-file: applied over HTTPS.
    let (code, out, err, _) = run(&["apply", "--ca-file", &ca_file], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("https://127.0.0.1"), "{out}");
    // KEYWARD_CMS_CA_FILE and SSL_CERT_FILE: the same CMS, nothing left to do.
    for env in [
        ("KEYWARD_CMS_CA_FILE", ca_file.as_str()),
        ("SSL_CERT_FILE", ca_file.as_str()),
    ] {
        let (code, out, err, _) = run(&["plan"], &[env]);
        assert_eq!(code, 0, "{env:?}: {out}{err}");
    }
    // keyward.toml: the URL, the variable holding the token and the CA, relative to the file.
    std::fs::create_dir(work.path().join("conf")).unwrap();
    std::fs::copy(&ca.ca_pem, work.path().join("conf/ca.pem")).unwrap();
    std::fs::write(
        work.path().join("conf/keyward.toml"),
        format!("secrets_dir = \"../out\"\n[cms]\nurl = \"{}\"\ntoken_env = \"CMS_TOKEN\"\nca_file = \"ca.pem\"\n", cms.url),
    )
    .unwrap();
    let (code, out, err, _) = keyward(
        work.path(),
        &["plan", "-f", "policy.yaml", "--config", "conf/keyward.toml"],
        &[("CMS_TOKEN", support::ADMIN)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _, _) = keyward(
        work.path(),
        &["config", "--config", "conf/keyward.toml"],
        &[("CMS_TOKEN", support::ADMIN)],
    );
    assert_eq!(code, 0);
    assert!(out.contains("$CMS_TOKEN (set)"), "{out}");
    assert!(out.contains("conf/ca.pem"), "{out}");
    assert!(!out.contains(support::ADMIN), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_clear_configuration_errors_and_never_retried() {
    let ca = TestCa::new("private");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("policy.yaml"), POLICY).unwrap();
    let ca_file = ca.ca_pem.to_str().unwrap().to_owned();
    for (cert, with_ca, expected) in [
        (
            ca.server("good", &["127.0.0.1"], false),
            false,
            "certificate verify failed: unknown issuer for 127.0.0.1; pass --ca-file",
        ),
        (
            ca.server("other", &["other.example"], false),
            true,
            "certificate verify failed: the certificate is not valid for 127.0.0.1",
        ),
        (
            ca.server("old", &["127.0.0.1"], true),
            true,
            "certificate verify failed: the certificate of 127.0.0.1 has expired",
        ),
    ] {
        let cms = Cms::start_with(|c| c.tls = Some(cert)).await;
        // Every attempt is a new connection: counted below TLS.
        let addr = cms.running.as_ref().unwrap().addr.to_string();
        let (counted, connections) = support::proxy::counting_tcp(&addr).await;
        let url = format!("https://{counted}");
        let mut args = vec!["plan", "-f", "policy.yaml", "--secrets-dir", "out"];
        if with_ca {
            args.extend(["--ca-file", ca_file.as_str()]);
        }
        let (code, out, err, _) = keyward(
            work.path(),
            &args,
            &[
                ("KEYWARD_CMS_URL", url.as_str()),
                ("KEYWARD_CMS_TOKEN", support::ADMIN),
            ],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(expected), "{err}");
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a TLS failure is not retried\n{err}"
        );
        assert!(
            !format!("{out}{err}").contains(support::ADMIN),
            "{out}{err}"
        );
    }
}

#[test]
fn the_config_file_is_checked_and_never_holds_a_credential() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        work.path().join("keyward.toml"),
        "[cms]\nurl = \"https://x\"\ntoken = \"do-not-echo-me\"\n",
    )
    .unwrap();
    // keyward.toml in the current directory is read without being named.
    let (code, _, err, _) = keyward(work.path(), &["plan", "-f", "policy.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "keyward.toml:3: cms.token: a credential is never stored in the file; set token_env"
        ),
        "{err}"
    );
    assert!(!err.contains("do-not-echo-me"), "{err}");
    std::fs::write(work.path().join("keyward.toml"), "[cms]\nurl = 3\n").unwrap();
    let (code, _, err, _) = keyward(work.path(), &["config"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("keyward.toml:2:"), "{err}");
    // What is not a regular file of a bounded size is refused, never read until it ends.
    for not_a_file in ["/dev/zero", "."] {
        let (code, _, err, _) = keyward(work.path(), &["config", "--config", not_a_file], &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let fifo = work.path().join("fifo.toml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (code, _, err, _) = keyward(work.path(), &["config", "--config", "fifo.toml"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    // A credential inside the URL is refused like one in the file, and never printed.
    std::fs::write(
        work.path().join("keyward.toml"),
        "[cms]\nurl = \"https://admin:do-not-echo-me@cms.example.com\"\n",
    )
    .unwrap();
    for env in [
        &[][..],
        &[("KEYWARD_CMS_URL", "https://u:do-not-echo-me@x")][..],
    ] {
        for command in [&["config"][..], &["plan", "-f", "policy.yaml"][..]] {
            let (code, out, err, _) = keyward(work.path(), command, env);
            assert_eq!(code, 1, "{command:?}: {out}{err}");
            assert!(err.contains("holds a credential"), "{command:?}: {err}");
            assert!(!out.contains("do-not-echo-me") && !err.contains("do-not-echo-me"));
        }
    }
    std::fs::remove_file(work.path().join("keyward.toml")).unwrap();
    // A named file that does not exist is an error, not the defaults.
    let (code, _, err, _) = keyward(work.path(), &["config", "--config", "nope.toml"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read the configuration file nope.toml"),
        "{err}"
    );
    // Flags over the environment over the profile over the file over defaults.
    std::fs::write(
        work.path().join("keyward.toml"),
        "secrets_dir = \"from-file\"\ndata_dir = \"data\"\n[profiles.staging]\nsecrets_dir = \"from-profile\"\n[profiles.staging.cms]\nurl = \"https://staging\"\n",
    )
    .unwrap();
    let (_, out, _, _) = keyward(work.path(), &["config", "--profile", "staging"], &[]);
    assert!(
        out.contains("from-profile") && out.contains("(profile staging)"),
        "{out}"
    );
    assert!(out.contains("https://staging"), "{out}");
    let (_, out, _, _) = keyward(
        work.path(),
        &["config"],
        &[
            ("KEYWARD_PROFILE", "staging"),
            ("KEYWARD_CMS_URL", "https://env"),
        ],
    );
    assert!(
        out.contains("https://env") && out.contains("(env KEYWARD_CMS_URL)"),
        "{out}"
    );
}
