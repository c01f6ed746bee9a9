//! Property tests of the reference CMS over real HTTP, on stable Rust (proptest):
//!
//! - random methods, paths, queries, headers and JSON bodies never make a handler panic or
//!   answer 5xx, every error answer is JSON, and the server still answers afterwards;
//! - random sequences of create / patch / regenerate / revoke keep the key invariants: a revoked
//!   value answers 401, a value past its grace answers 401, a current value is accepted, and no
//!   key can do what its creator cannot.
//!
//! Case counts are bounded so that both run in the test suite (`PROPTEST_CASES` raises them).

mod support;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::time::Duration;
use support::{Cms, ADMIN};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- request fuzzing ---------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("*"),
            Just("keys:manage"),
            Just("content:read"),
            Just("management"),
            Just("personal"),
            Just("public"),
            Just("production"),
            Just("blog"),
            Just("2026-12-01T00:00:00Z"),
            Just("+275760-09-13T00:00:00Z"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(40, 200, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name".to_owned()),
        Just("kind".to_owned()),
        Just("type".to_owned()),
        Just("scopes".to_owned()),
        Just("defaultPermissions".to_owned()),
        Just("apiPermissions".to_owned()),
        Just("api".to_owned()),
        Just("permissions".to_owned()),
        Just("environments".to_owned()),
        Just("managementPermissions".to_owned()),
        Just("owner".to_owned()),
        Just("expiresAt".to_owned()),
        Just("labels".to_owned()),
        Just("graceSeconds".to_owned()),
        Just("origins".to_owned()),
        Just("operations".to_owned()),
        Just("role".to_owned()),
        Just("contentPermissions".to_owned()),
        "[a-zA-Z]{1,12}",
        ".{0,12}",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("blog".to_owned()),
        Just("nope".to_owned()),
        Just("0123456789abcdef".to_owned()),
        "[a-z0-9_-]{1,20}",
        "[%a-zA-Z0-9._~-]{0,30}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let templates = prop_oneof![
        Just("/v1/keys"),
        Just("/v1/keys/{}"),
        Just("/v1/keys/{}/regenerate"),
        Just("/v1/apis"),
        Just("/v1/apis/{}"),
        Just("/v1/apis/{}/public"),
        Just("/v1/cors"),
        Just("/v1/members"),
        Just("/v1/members/{}"),
        Just("/v1/roles"),
        Just("/v1/roles/{}"),
        Just("/v1/export"),
        Just("/v1/cache/purge"),
        Just("/v1/webhooks/replay"),
        Just("/v1/openapi.json"),
        Just("/api/{}"),
        Just("/api/{}/{}"),
        Just("/api/{}/{}/publish"),
        Just("/api/{}/{}/close"),
        Just("/environments/{}/api/{}"),
        Just("/environments/{}/api/{}/{}"),
        Just("/healthz"),
        Just("/{}"),
    ];
    (templates, prop::collection::vec(segment(), 3)).prop_map(|(t, segs)| {
        let mut out = String::new();
        let mut segs = segs.into_iter();
        for (i, part) in t.split("{}").enumerate() {
            if i > 0 {
                out.push_str(&segs.next().unwrap_or_default());
            }
            out.push_str(part);
        }
        out
    })
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("limit"),
        Just("offset"),
        Just("drafts"),
        Just("closed"),
        Just("filters"),
        Just("q"),
        Just("draftKey"),
        Just("status"),
        Just("environment"),
        Just("label"),
    ];
    let value = prop_oneof![
        Just("-1".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("true".to_owned()),
        Just("draft".to_owned()),
        Just("title[equals]x[and]n[greater_than]3".to_owned()),
        Just("a=b".to_owned()),
        "[%a-zA-Z0-9._~\\[\\]=-]{0,30}",
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

#[derive(Clone, Debug)]
enum Credential {
    None,
    Admin,
    Reader,
    Garbage(String),
}

#[derive(Clone, Debug)]
struct FuzzRequest {
    method: Method,
    path: String,
    query: String,
    credential: Credential,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

fn request() -> impl Strategy<Value = FuzzRequest> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
    ];
    let credential = prop_oneof![
        Just(Credential::None),
        Just(Credential::Admin),
        Just(Credential::Reader),
        "[ -~]{0,80}".prop_map(Credential::Garbage),
        "kw_[0-9a-f]{16}_[A-Za-z0-9_-]{43}".prop_map(Credential::Garbage),
    ];
    let body = prop_oneof![
        Just(None),
        json_value().prop_map(|v| Some(v.to_string().into_bytes())),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        (1usize..80).prop_map(|d| Some(("[".repeat(d) + &"]".repeat(d)).into_bytes())),
    ];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        "[ -~]{0,30}".prop_map(Some),
    ];
    (method, path(), query(), credential, content_type, body).prop_map(
        |(method, path, query, credential, content_type, body)| FuzzRequest {
            method,
            path,
            query,
            credential,
            content_type,
            body,
        },
    )
}

async fn send(cms: &Cms, reader: &str, r: &FuzzRequest) -> Option<(StatusCode, String, String)> {
    let url = if r.query.is_empty() {
        format!("{}{}", cms.url, r.path)
    } else {
        format!("{}{}?{}", cms.url, r.path, r.query)
    };
    let mut rb = cms.http.request(r.method.clone(), url);
    match &r.credential {
        Credential::None => {}
        Credential::Admin => rb = rb.bearer_auth(ADMIN),
        Credential::Reader => rb = rb.header("x-api-key", reader),
        Credential::Garbage(g) => rb = rb.header("authorization", format!("Bearer {g}")),
    }
    if let Some(ct) = &r.content_type {
        rb = rb.header("content-type", ct.as_str());
    }
    if let Some(b) = &r.body {
        rb = rb.body(b.clone());
    }
    // A request the client library itself refuses to build is not a server test.
    let resp = rb.send().await.ok()?;
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    Some((status, ct, text))
}

#[test]
fn random_requests_never_panic_or_answer_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cms, reader) = rt.block_on(async {
        let cms = Cms::start().await;
        cms.api("blog").await;
        cms.entry("blog", json!({"title": "t"})).await;
        let (_, reader) = cms
            .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
            .await;
        (cms, reader)
    });
    let mut runner = TestRunner::new(Config {
        cases: cases(400),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&request(), |r| {
            let Some((status, ct, text)) = rt.block_on(send(&cms, &reader, &r)) else {
                return Ok(());
            };
            prop_assert!(status.as_u16() < 500, "{r:?} -> {status}: {text}");
            if status.is_client_error() && r.method != Method::HEAD {
                prop_assert!(
                    ct.starts_with("application/json"),
                    "{r:?} -> {status} {ct}: {text}"
                );
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                prop_assert!(v["error"].is_string(), "{r:?} -> {status}: {text}");
            }
            prop_assert!(!text.contains(&reader), "a key value in an answer: {text}");
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        let r = cms.req(Method::GET, "/api/blog", Some(&reader), None).await;
        assert_eq!(r.status, StatusCode::OK, "still serving: {}", r.text);
    });
}

#[test]
fn random_bytes_on_the_wire_never_stop_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cms = rt.block_on(Cms::start());
    let addr = cms.running.as_ref().unwrap().addr;
    let wire = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        "[ -~\r\n]{0,400}".prop_map(String::into_bytes),
        ("[A-Z]{1,7}", "[ -~]{0,300}", "[ -~\r\n]{0,300}")
            .prop_map(|(m, p, h)| format!("{m} /{p} HTTP/1.1\r\n{h}\r\n\r\n").into_bytes()),
    ];
    let mut runner = TestRunner::new(Config {
        cases: cases(200),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&wire, |bytes| {
            let (answer, closed) = rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
                let mut out = Vec::new();
                // Answered and closed, or reset: either ends the read. Still open 5 s after the
                // client said all it had to say is a connection the server holds for nothing.
                let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                    .await
                    .is_ok();
                (String::from_utf8_lossy(&out).into_owned(), closed)
            });
            prop_assert!(
                closed,
                "{:?}: the server kept the connection open",
                String::from_utf8_lossy(&bytes)
            );
            prop_assert!(
                !answer.starts_with("HTTP/1.1 5"),
                "{:?} -> {answer}",
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        let r = cms.admin(Method::GET, "/healthz", None).await;
        assert_eq!(r.status, StatusCode::OK);
    });
}

// ---- key invariants ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Create a key with these rights, by the admin (None) or by key number `by`.
    Create {
        by: Option<usize>,
        rights: Rights,
    },
    Patch {
        key: usize,
        by: Option<usize>,
        rights: Rights,
    },
    Regenerate {
        key: usize,
        grace_ms: u64,
    },
    Revoke {
        key: usize,
    },
}

#[derive(Clone, Debug)]
struct Rights {
    default: Vec<&'static str>,
    blog: Option<Vec<&'static str>>,
    scopes: Vec<&'static str>,
    environments: Vec<&'static str>,
    management: Vec<&'static str>,
}

impl Rights {
    fn body(&self, name: &str) -> Value {
        let mut b = if self.management.is_empty() {
            json!({"defaultPermissions": self.default, "scopes": self.scopes})
        } else {
            json!({"kind": "management", "managementPermissions": self.management})
        };
        if self.management.is_empty() {
            if let Some(p) = &self.blog {
                b["apiPermissions"] = json!([{"api": "blog", "permissions": p}]);
            }
        }
        b["environments"] = json!(self.environments);
        if !name.is_empty() {
            b["name"] = json!(name);
        }
        b
    }
}

fn rights() -> impl Strategy<Value = Rights> {
    let perms = prop::sample::subsequence(vec!["GET", "POST", "DELETE"], 0..=3);
    let scopes = prop::sample::subsequence(vec!["content:read", "export:write", "*"], 0..=2);
    let envs = prop::sample::subsequence(vec!["production", "staging"], 0..=2);
    let mgmt = prop_oneof![
        3 => Just(vec![]),
        1 => prop::sample::subsequence(vec!["keys:manage", "content:read", "content:write"], 1..=3),
    ];
    (perms.clone(), prop::option::of(perms), scopes, envs, mgmt).prop_map(
        |(default, blog, scopes, environments, management)| Rights {
            default,
            blog,
            scopes,
            environments,
            management,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop::option::of(0usize..8), rights()).prop_map(|(by, rights)| Op::Create { by, rights }),
        2 => (0usize..8, prop::option::of(0usize..8), rights())
            .prop_map(|(key, by, rights)| Op::Patch { key, by, rights }),
        2 => (0usize..8, prop_oneof![Just(0u64), 1u64..400]).prop_map(|(key, grace_ms)| Op::Regenerate { key, grace_ms }),
        1 => (0usize..8).prop_map(|key| Op::Revoke { key }),
    ]
}

/// What the test knows of a key it made.
struct Known {
    id: String,
    current: String,
    /// Values replaced with a grace period, and when it ends.
    previous: Vec<(String, Timestamp)>,
    /// Values that must be refused from now on.
    dead: Vec<String>,
    revoked: bool,
}

/// What a value may do, probed over HTTP: content in two environments, and key management.
async fn abilities(cms: &Cms, value: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (method, path) in [
        (Method::GET, "/api/blog"),
        (Method::POST, "/api/blog"),
        (Method::GET, "/api/news"),
        (Method::DELETE, "/api/news/x"),
        (Method::GET, "/environments/staging/api/blog"),
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/export?environment=staging"),
    ] {
        let body = (method == Method::POST && path.starts_with("/api")).then(|| json!({"t": 1}));
        let status = cms
            .req(method.clone(), path, Some(value), body)
            .await
            .status;
        // 404 (no such entry) still means the right was granted.
        let allowed = !matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED);
        out.push((format!("{method} {path}"), allowed));
    }
    out
}

async fn run_sequence(ops: Vec<Op>) -> Result<(), String> {
    // Dead values are probed again and again: no throttling of Argon2id checks here.
    let cms =
        Cms::start_with(|c| c.verify_rate = keyward::cms::Rate::new(1_000_000).unwrap()).await;
    cms.api("blog").await;
    cms.api("news").await;
    let mut keys: Vec<Known> = Vec::new();
    let live = |keys: &Vec<Known>, i: usize| -> Option<usize> {
        let live: Vec<usize> = (0..keys.len()).filter(|k| !keys[*k].revoked).collect();
        (!live.is_empty()).then(|| live[i % live.len()])
    };
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create { by, rights } => {
                let creator = by.and_then(|b| live(&keys, b));
                let value = creator.map_or(ADMIN.to_owned(), |c| keys[c].current.clone());
                let r = cms
                    .req(
                        Method::POST,
                        "/v1/keys",
                        Some(&value),
                        Some(rights.body(&format!("k{n}"))),
                    )
                    .await;
                if r.status == StatusCode::CREATED {
                    let new = r.body["key"].as_str().unwrap().to_owned();
                    if creator.is_some() {
                        let mine = abilities(&cms, &value).await;
                        let theirs = abilities(&cms, &new).await;
                        for ((what, c), (_, t)) in mine.iter().zip(&theirs) {
                            if *t && !c {
                                return Err(format!("key k{n} may {what}, its creator may not"));
                            }
                        }
                    }
                    keys.push(Known {
                        id: r.body["id"].as_str().unwrap().to_owned(),
                        current: new,
                        previous: vec![],
                        dead: vec![],
                        revoked: false,
                    });
                } else if r.status.is_server_error() {
                    return Err(format!("create answered {}: {}", r.status, r.text));
                }
            }
            Op::Patch { key, by, rights } => {
                let Some(k) = live(&keys, key) else { continue };
                let caller = by
                    .and_then(|b| live(&keys, b))
                    .map_or(ADMIN.to_owned(), |c| keys[c].current.clone());
                let before = abilities(&cms, &caller).await;
                let r = cms
                    .req(
                        Method::PATCH,
                        &format!("/v1/keys/{}", keys[k].id),
                        Some(&caller),
                        Some(rights.body("")),
                    )
                    .await;
                if r.status.is_server_error() {
                    return Err(format!("patch answered {}: {}", r.status, r.text));
                }
                if r.status == StatusCode::OK && caller != ADMIN {
                    let after = abilities(&cms, &keys[k].current).await;
                    for ((what, c), (_, t)) in before.iter().zip(&after) {
                        if *t && !c {
                            return Err(format!(
                                "a patch gave a key '{what}', which its changer lacks"
                            ));
                        }
                    }
                }
            }
            Op::Regenerate { key, grace_ms } => {
                let Some(k) = live(&keys, key) else { continue };
                let r = cms
                    .admin(
                        Method::POST,
                        &format!("/v1/keys/{}/regenerate", keys[k].id),
                        Some(json!({"graceSeconds": grace_ms as f64 / 1000.0})),
                    )
                    .await;
                // Four earlier values in their grace at most: a fifth is refused, nothing changes.
                let in_grace = keys[k]
                    .previous
                    .iter()
                    .filter(|(_, until)| *until > Timestamp::now())
                    .count();
                if r.status == StatusCode::CONFLICT && grace_ms > 0 && in_grace >= 4 {
                    continue;
                }
                if r.status != StatusCode::OK {
                    return Err(format!("regenerate answered {}: {}", r.status, r.text));
                }
                let old = std::mem::replace(
                    &mut keys[k].current,
                    r.body["key"].as_str().unwrap().to_owned(),
                );
                match r.body["previousValidUntil"].as_str() {
                    // Earlier values keep the grace they were promised.
                    Some(until) => {
                        let until = until.parse::<Timestamp>().unwrap();
                        keys[k].previous.push((old, until));
                    }
                    // Without grace every earlier value stops now.
                    None => {
                        keys[k].dead.push(old);
                        let earlier: Vec<String> =
                            keys[k].previous.drain(..).map(|(v, _)| v).collect();
                        keys[k].dead.extend(earlier);
                    }
                }
            }
            Op::Revoke { key } => {
                let Some(k) = live(&keys, key) else { continue };
                let r = cms
                    .admin(Method::DELETE, &format!("/v1/keys/{}", keys[k].id), None)
                    .await;
                if r.status != StatusCode::NO_CONTENT {
                    return Err(format!("revoke answered {}: {}", r.status, r.text));
                }
                keys[k].revoked = true;
            }
        }
        check(&cms, &keys).await?;
    }
    Ok(())
}

async fn check(cms: &Cms, keys: &[Known]) -> Result<(), String> {
    let unauthorized = |value: &str| {
        let value = value.to_owned();
        async move {
            cms.req(Method::GET, "/api/blog", Some(&value), None)
                .await
                .status
        }
    };
    for k in keys {
        let mut must_fail: Vec<&String> = k.dead.iter().collect();
        if k.revoked {
            must_fail.push(&k.current);
            must_fail.extend(k.previous.iter().map(|(v, _)| v));
        } else {
            // A value past its grace (with room for the clocks of test and server).
            let now = Timestamp::now();
            must_fail.extend(
                k.previous
                    .iter()
                    .filter(|(_, until)| now > *until + SignedDuration::from_millis(50))
                    .map(|(v, _)| v),
            );
            let s = unauthorized(&k.current).await;
            if s == StatusCode::UNAUTHORIZED {
                return Err(format!("the current value of {} is refused", k.id));
            }
        }
        for v in must_fail {
            let s = unauthorized(v).await;
            if s != StatusCode::UNAUTHORIZED {
                return Err(format!("a dead value of {} answered {s}", k.id));
            }
        }
    }
    Ok(())
}

#[test]
fn random_key_lifecycles_keep_the_invariants() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: cases(12),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..14), |ops| {
            let r = rt.block_on(run_sequence(ops.clone()));
            prop_assert!(r.is_ok(), "{}\n{ops:#?}", r.unwrap_err());
            Ok(())
        })
        .unwrap();
}
