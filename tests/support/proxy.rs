//! A fault-injecting HTTP proxy in front of a CMS. Every request is recorded; a rule may answer
//! it with a failure instead of forwarding it, or forward it and then lose the answer (the CMS
//! did the work, the client sees a failure). Tests count what reached the CMS, so "not retried"
//! is checked where it happens, not inferred from a failure the retry would also get.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::sync::{Arc, Mutex};

/// A request as the proxy saw it, and what became of it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// Whether it reached the CMS.
    pub forwarded: bool,
    /// The status the client got.
    pub status: u16,
}

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer this status without forwarding (`Retry-After` seconds if given).
    Answer(u16, Option<u64>),
    /// Forward, then answer this status instead of the CMS's answer.
    LoseAnswer(u16),
    /// Answer 200 with this body without forwarding (an endpoint that is not the CMS).
    Body(&'static str),
    /// Never answer (a CMS that hangs): the request is recorded, then held open.
    Stall,
}

/// A request about to be handled: its method and path, and how many calls (all, and writes)
/// came before it.
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub n: usize,
    pub writes: usize,
}

pub struct Proxy {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub async fn start(
        target: &str,
        rule: impl Fn(&Call) -> Option<Fault> + Clone + Send + Sync + 'static,
    ) -> Proxy {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let http = reqwest::Client::new();
        let target = target.to_owned();
        let log = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (http, target, rule, log) =
                    (http.clone(), target.clone(), rule.clone(), log.clone());
                async move {
                    let fault = {
                        let log = log.lock().unwrap();
                        let writes = log.iter().filter(|s| s.method != Method::GET).count();
                        rule(&Call {
                            method: &method,
                            path: uri.path(),
                            n: log.len(),
                            writes,
                        })
                    };
                    let record = |forwarded: bool, status: u16| {
                        log.lock().unwrap().push(Seen {
                            method: method.clone(),
                            path: uri.path().to_owned(),
                            forwarded,
                            status,
                        });
                    };
                    if let Some(Fault::Answer(status, retry_after)) = fault {
                        record(false, status);
                        return failure(status, retry_after);
                    }
                    if let Some(Fault::Stall) = fault {
                        record(false, 0);
                        std::future::pending::<()>().await;
                    }
                    if let Some(Fault::Body(body)) = fault {
                        record(false, 200);
                        return axum::response::Response::new(Body::from(body));
                    }
                    let mut rb = http
                        .request(method.clone(), format!("{target}{uri}"))
                        .body(body);
                    for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
                        rb = rb.header(k, v);
                    }
                    let r = rb.send().await.unwrap();
                    let status = r.status();
                    let bytes = r.bytes().await.unwrap();
                    if let Some(Fault::LoseAnswer(lost)) = fault {
                        record(true, lost);
                        return failure(lost, None);
                    }
                    record(true, status.as_u16());
                    let mut resp = axum::response::Response::new(Body::from(bytes));
                    *resp.status_mut() = status;
                    resp
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, seen }
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests with this method and path that reached the CMS.
    pub fn forwarded(&self, method: Method, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.forwarded && s.method == method && s.path == path)
            .count()
    }

    /// Requests with this method and path, forwarded or not.
    pub fn attempts(&self, method: Method, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

fn failure(status: u16, retry_after: Option<u64>) -> axum::response::Response {
    let mut resp = axum::response::Response::new(Body::from("{\"message\":\"injected failure\"}"));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    resp
}

/// A TCP forwarder to `target` that counts the connections made to it: a client that retries
/// opens another. Below TLS, so a certificate for `127.0.0.1` still matches.
pub async fn counting_tcp(target: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let target: std::net::SocketAddr = target.parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr.to_string(), count)
}
