//! The CMS client's retries, call by call: which failures are repeated (429, 503, connection
//! errors; other 5xx only for idempotent calls), how long it waits (`Retry-After`, else
//! exponential backoff), when it gives up; and the Strapi provider's session (a 401 signs in
//! again once, shared by concurrent calls).

mod support;

use axum::http::Method;
use keyward::model::KeySpec;
use keyward::providers::http::{Idempotent, JsonClient, RetryPolicy};
use keyward::providers::reference::ReferenceCms;
use keyward::providers::strapi::Strapi;
use keyward::providers::{CmsProvider, ProviderError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::proxy::{Fault, Proxy};
use support::{Cms, ADMIN};

/// Three attempts, 10 ms backoff: waits longer than that come from `Retry-After`.
fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(10),
        max_wait: Duration::from_secs(1),
        budget: None,
    }
}

fn provider(url: &str) -> ReferenceCms {
    let mut p = ReferenceCms::new(url, ADMIN);
    p.client_mut().retry = quick();
    p
}

fn spec(name: &str) -> KeySpec {
    serde_json::from_value(serde_json::json!({"name": name, "defaultPermissions": ["GET"]}))
        .unwrap()
}

async fn cms() -> Cms {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms
}

#[tokio::test]
async fn a_503_is_retried_even_for_a_create_it_means_not_done() {
    let cms = cms().await;
    let proxy = Proxy::start(&cms.url, |c| {
        (*c.method == Method::POST && c.n == 0).then_some(Fault::Answer(503, None))
    })
    .await;
    let issued = provider(&proxy.url).create_key(&spec("a")).await.unwrap();
    assert_eq!(proxy.attempts(Method::POST, "/v1/keys"), 2);
    assert_eq!(proxy.forwarded(Method::POST, "/v1/keys"), 1, "created once");
    assert_eq!(issued.key.spec.name, "a");
}

#[tokio::test]
async fn a_500_is_retried_for_idempotent_calls_only() {
    let cms = cms().await;
    let (id, _) = cms
        .key(serde_json::json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    // The first call of each method fails with a 500.
    let firsts = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let proxy = Proxy::start(&cms.url, move |c| {
        firsts
            .lock()
            .unwrap()
            .insert(c.method.clone())
            .then_some(Fault::Answer(500, None))
    })
    .await;
    let p = provider(&proxy.url);
    // GET and PATCH are idempotent: repeated.
    assert_eq!(p.list_keys().await.unwrap().len(), 1);
    assert_eq!(proxy.attempts(Method::GET, "/v1/keys"), 2);
    let mut changed = spec("k");
    changed.description = "changed".into();
    p.update_key(&id, &changed).await.unwrap();
    assert_eq!(proxy.attempts(Method::PATCH, &format!("/v1/keys/{id}")), 2);
    // A create that got a 500 may have happened: reported, not repeated.
    match p.create_key(&spec("b")).await {
        Err(ProviderError::Rejected {
            status: 500,
            message,
            ..
        }) => assert_eq!(message, "injected failure"),
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.attempts(Method::POST, "/v1/keys"), 1);
    // So is a regenerate.
    let regenerate = format!("/v1/keys/{id}/regenerate");
    let always = Proxy::start(&cms.url, {
        let regenerate = regenerate.clone();
        move |c| (c.path == regenerate).then_some(Fault::Answer(502, None))
    })
    .await;
    let err = provider(&always.url)
        .regenerate_key(&id, keyward::providers::Regeneration::default())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(always.attempts(Method::POST, &regenerate), 1);
}

/// A reconcile's limits: retries until `retry`, a minute for the calls in all.
fn limits(retry: Duration) -> keyward::providers::http::Reconcile {
    let now = tokio::time::Instant::now();
    keyward::providers::http::Reconcile {
        retry_deadline: now + retry,
        deadline: now + Duration::from_secs(60),
    }
}

#[tokio::test]
async fn within_a_retry_deadline_no_wait_goes_past_it() {
    let cms = cms().await;
    let down = Proxy::start(&cms.url, |_| Some(Fault::Answer(503, Some(60)))).await;
    let p = provider(&down.url);
    let deadline = limits(Duration::from_secs(2));
    let retry_deadline = deadline.retry_deadline;
    let r = keyward::providers::http::in_reconcile(deadline, p.list_keys()).await;
    assert!(r.unwrap_err().is_transient());
    // The property itself: it gave up before its retry deadline, not at or after it.
    assert!(
        tokio::time::Instant::now() < retry_deadline,
        "a 60 s Retry-After is not waited for, not even up to the deadline"
    );
    assert_eq!(down.attempts(Method::GET, "/v1/keys"), 1);
    // Short waits that fit are still made.
    let flaky = Proxy::start(&cms.url, |c| (c.n == 0).then_some(Fault::Answer(503, None))).await;
    let deadline = limits(Duration::from_secs(2));
    let p = provider(&flaky.url);
    keyward::providers::http::in_reconcile(deadline, p.list_keys())
        .await
        .unwrap();
    assert_eq!(flaky.attempts(Method::GET, "/v1/keys"), 2);
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_last_failure_is_reported() {
    let cms = cms().await;
    let proxy = Proxy::start(&cms.url, |c| {
        (c.n == 0).then_some(Fault::Answer(429, Some(1)))
    })
    .await;
    let started = Instant::now();
    provider(&proxy.url).list_keys().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the second Retry-After asked for, not the 10 ms backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.attempts(Method::GET, "/v1/keys"), 2);

    // Unavailable on every attempt: the policy's attempts, then the CMS's own answer.
    let down = Proxy::start(&cms.url, |_| Some(Fault::Answer(503, None))).await;
    match provider(&down.url).create_key(&spec("c")).await {
        Err(e @ ProviderError::Rejected { status: 503, .. }) => {
            assert!(e.is_transient());
            assert_eq!(
                e.to_string(),
                format!("{} answered 503: injected failure", down.url)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        down.attempts(Method::POST, "/v1/keys"),
        quick().attempts as usize
    );
    // A refusal is not retried.
    let refusing = Proxy::start(&cms.url, |_| Some(Fault::Answer(422, None))).await;
    let err = provider(&refusing.url).list_keys().await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(refusing.seen().len(), 1);
}

/// A server that reads each request and closes the connection without answering; counts them.
async fn hang_up() -> (String, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            drop(sock);
        }
    });
    (url, count)
}

#[tokio::test]
async fn a_lost_answer_is_retried_only_for_idempotent_calls() {
    let (url, requests) = hang_up().await;
    let mut client = JsonClient::new(&url, "t");
    client.retry = quick();
    let get = client
        .call(Method::GET, "/v1/keys", None, Idempotent::Yes)
        .await;
    assert!(
        matches!(get, Err(ProviderError::Unreachable { .. })),
        "{get:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3, "every attempt");
    let body = serde_json::json!({"name": "x"});
    let post = client
        .call(Method::POST, "/v1/keys", Some(&body), Idempotent::No)
        .await;
    assert!(
        matches!(post, Err(ProviderError::Unreachable { .. })),
        "{post:?}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        4,
        "a create that may have arrived is sent once"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_create() {
    // A port nothing listens on: the request never left, so repeating it is safe.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut client = JsonClient::new(&format!("http://127.0.0.1:{port}"), "t");
    client.retry = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(150),
        max_wait: Duration::from_secs(1),
        budget: None,
    };
    let body = serde_json::json!({"name": "x"});
    let started = Instant::now();
    let err = client
        .call(Method::POST, "/v1/keys", Some(&body), Idempotent::No)
        .await
        .unwrap_err();
    // Two backoffs, 150 ms then 300 ms, before the third attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "retried with backoff: {:?}",
        started.elapsed()
    );
    let ProviderError::Unreachable { endpoint, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(endpoint, &format!("http://127.0.0.1:{port}"));
    assert!(err.is_transient());
}

/// A stand-in for Strapi's admin API: sign-ins hand out `jwt-1`, `jwt-2`, ...; token deletes
/// succeed only with the JWT the server accepts (`valid`, 0: none), and a rejection takes
/// 300 ms, so concurrent calls are all in flight with the old JWT before any learns of it.
struct FakeStrapi {
    url: String,
    logins: Arc<AtomicUsize>,
    deletes: Arc<AtomicUsize>,
    valid: Arc<AtomicUsize>,
    /// Whether a new sign-in becomes the accepted session.
    accept_new: Arc<std::sync::atomic::AtomicBool>,
}

async fn fake_strapi() -> FakeStrapi {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{delete, post};
    let s = FakeStrapi {
        url: String::new(),
        logins: Arc::default(),
        deletes: Arc::default(),
        valid: Arc::default(),
        accept_new: Arc::new(true.into()),
    };
    let app = axum::Router::new()
        .route(
            "/admin/login",
            post({
                let (logins, valid, accept_new) =
                    (s.logins.clone(), s.valid.clone(), s.accept_new.clone());
                move || async move {
                    let n = logins.fetch_add(1, Ordering::SeqCst) + 1;
                    if accept_new.load(Ordering::SeqCst) {
                        valid.store(n, Ordering::SeqCst);
                    }
                    axum::Json(serde_json::json!({"data": {"token": format!("jwt-{n}")}}))
                }
            }),
        )
        .route(
            "/admin/api-tokens/{id}",
            delete({
                let (deletes, valid) = (s.deletes.clone(), s.valid.clone());
                move |headers: HeaderMap| async move {
                    deletes.fetch_add(1, Ordering::SeqCst);
                    let sent = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if sent == format!("Bearer jwt-{}", valid.load(Ordering::SeqCst)) {
                        (StatusCode::OK, "{\"data\": {}}")
                    } else {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        (
                            StatusCode::UNAUTHORIZED,
                            "{\"error\": {\"message\": \"Unauthorized\"}}",
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeStrapi { url, ..s }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strapi_signs_in_again_once_after_a_401_and_shares_the_new_session() {
    let s = fake_strapi().await;
    let p = Arc::new(Strapi::new(&s.url, "admin@keyward.test:pw").unwrap());
    p.revoke_key("1").await.unwrap();
    p.revoke_key("2").await.unwrap();
    assert_eq!(p.logins(), 1, "one session for both calls");
    assert_eq!(s.deletes.load(Ordering::SeqCst), 2);

    // The session ends server-side. Four calls at once are all rejected with the old JWT: one
    // sign-in between them, and each call is repeated once with the new JWT.
    s.valid.store(0, Ordering::SeqCst);
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.revoke_key(&format!("{i}")).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(p.logins(), 2, "one new session, shared");
    assert_eq!(s.logins.load(Ordering::SeqCst), 2);
    assert_eq!(
        s.deletes.load(Ordering::SeqCst),
        2 + 4 + 4,
        "each call: rejected once, then accepted"
    );

    // A 401 that a new session does not cure is reported after one more sign-in, not looped.
    s.accept_new.store(false, Ordering::SeqCst);
    s.valid.store(0, Ordering::SeqCst);
    let before = s.deletes.load(Ordering::SeqCst);
    match p.revoke_key("9").await {
        Err(ProviderError::Rejected { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(p.logins(), 3);
    assert_eq!(s.deletes.load(Ordering::SeqCst) - before, 2);
}
