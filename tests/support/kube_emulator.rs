//! An in-process Kubernetes API emulator: a tower service that a real `kube::Client` talks to.
//!
//! It keeps objects as JSON and implements what keyward's operator and kube-runtime use:
//! list and watch with resourceVersions (history replay, bookmarks, an in-stream 410 for a
//! compacted version), metadata-only lists and watches, the status subresource, merge /
//! strategic-merge (built-in types only: 415 for custom resources) / JSON / apply patches
//! (apply with per-manager field ownership and 409 conflicts without `force`), finalizers with
//! deletionTimestamp, asynchronous ownerReference garbage collection (owners elsewhere are absent), label
//! selectors, generation, 409 on stale resourceVersions, and no-op writes that neither bump
//! resourceVersion nor emit an event.
#![allow(dead_code)]

#[path = "strategic_merge.rs"]
mod strategic_merge;

use super::kube_rbac::{self, Attributes, Grants};
use super::kube_schema::Schemas;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

pub type RespBody = UnsyncBoxBody<Bytes, Infallible>;

/// Where an object lives: `(resource path prefix, namespace, name)`; prefix like
/// `api/v1/secrets` or `apis/keyward.dev/v1alpha1/apikeypolicies`.
type Key = (String, String, String);

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
    /// The object before a MODIFIED change: a watch with a selector tells from it whether the
    /// object just started or stopped matching.
    previous: Option<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Per object and field manager: the leaf paths it owns (server-side apply).
    managed: HashMap<Key, BTreeMap<String, String>>,
    history: VecDeque<Arc<Change>>,
    /// The oldest resourceVersion a watch may resume from.
    compacted_before: u64,
    /// The uid of every object, with its namespace (empty: cluster-scoped): where the garbage
    /// collector looks for owners without reading every object.
    uids: std::collections::HashSet<(String, String)>,
}

fn uid_of(o: &Value) -> Option<String> {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Counts of requests, for "zero writes" assertions.
#[derive(Default)]
pub struct Counters {
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    by_resource: Mutex<BTreeMap<String, u64>>,
    gets_by_resource: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// GETs of single objects of one resource (e.g. `secrets`): what a reconcile read.
    pub fn gets_of(&self, plural: &str) -> u64 {
        self.gets_by_resource
            .lock()
            .unwrap()
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// GETs of single objects of every resource, by resource.
    pub fn gets(&self) -> BTreeMap<String, u64> {
        self.gets_by_resource.lock().unwrap().clone()
    }

    /// Mutating requests to one resource (e.g. `secrets`, `apikeypolicies`), answered or not.
    pub fn writes_to(&self, plural: &str) -> u64 {
        self.by_resource
            .lock()
            .unwrap()
            .get(plural)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct Emulator {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Arc<Change>>,
    pub counters: Arc<Counters>,
    bookmark_every: Duration,
    /// Injected failures: per resource plural, the status and how many more writes get it.
    faults: Arc<Mutex<HashMap<String, (u16, usize)>>>,
    /// Every list and watch: (resource, metadata only, label selector).
    reads_of_collections: Arc<Mutex<Vec<(String, bool, String)>>>,
    cluster_wide: Arc<Mutex<Vec<String>>>,
    /// Ends the open watches of a resource plural with an in-stream 410 (`drop_watches`).
    drops: broadcast::Sender<String>,
    /// The operator's RBAC grants, once enforced (`enforce_rbac`).
    rbac: Arc<Mutex<Option<Grants>>>,
    /// Every request the operator was refused by RBAC: "verb resource namespace".
    denied: Arc<Mutex<Vec<String>>>,
    /// keyward's CRD schemas, applied to writes of its resources.
    schemas: Arc<Schemas>,
}

const CLUSTER_SCOPED: [&str; 6] = [
    "namespaces",
    "clustercmsconnections",
    "clusterroles",
    "clusterrolebindings",
    "customresourcedefinitions",
    "nodes",
];

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "secrets" => "Secret",
        "namespaces" => "Namespace",
        "configmaps" => "ConfigMap",
        "apikeypolicies" => "ApiKeyPolicy",
        "cmsconnections" => "CmsConnection",
        "clustercmsconnections" => "ClusterCmsConnection",
        "roles" => "Role",
        "rolebindings" => "RoleBinding",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "leases" => "Lease",
        "events" => "Event",
        _ => "Object",
    }
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message.into(), "reason": reason, "code": code})
}

fn respond(code: StatusCode, body: &Value) -> Response<RespBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn err(code: u16, reason: &str, message: impl Into<String>) -> Response<RespBody> {
    respond(
        StatusCode::from_u16(code).unwrap(),
        &status(code, reason, message),
    )
}

/// A parsed request path.
struct Target {
    /// `api/v1/secrets`
    resource: String,
    plural: String,
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest, prefix) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest, format!("api/{v}")),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest, format!("apis/{g}/{v}")),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        other => (None, other),
    };
    let (plural, name, sub) = match rest {
        [p] => (p.to_string(), None, None),
        [p, n] => (p.to_string(), Some(n.to_string()), None),
        [p, n, s] => (p.to_string(), Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Target {
        resource: format!("{prefix}/{plural}"),
        plural,
        api_version,
        namespace,
        name,
        subresource: sub,
    })
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality- and set-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
/// `a notin (x)`.
pub fn selector_matches(selector: &str, labels: &Map<String, Value>) -> bool {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                get(k) == Some(v.trim())
            } else if let Some((k, set)) = t.split_once(" notin ") {
                let set: Vec<&str> = set
                    .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                    .split(',')
                    .map(str::trim)
                    .collect();
                get(k).is_none_or(|v| !set.contains(&v))
            } else if let Some((k, set)) = t.split_once(" in ") {
                let set: Vec<&str> = set
                    .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                    .split(',')
                    .map(str::trim)
                    .collect();
                get(k).is_some_and(|v| set.contains(&v))
            } else if let Some(k) = t.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(t).is_some()
            }
        })
}

fn labels_of(o: &Value) -> Map<String, Value> {
    o.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The fields a field selector may name: `metadata.name` and `metadata.namespace` for every
/// resource, and a few per type (pkg/registry/core/secret/strategy.go SelectableFields for
/// Secrets' `type`). Anything else the API server refuses: 400 "field label not supported".
fn field_value<'a>(plural: &str, field: &str, o: &'a Value) -> Result<Option<&'a str>, String> {
    let at = match (plural, field) {
        (_, "metadata.name") => "/metadata/name",
        (_, "metadata.namespace") => "/metadata/namespace",
        ("secrets", "type") => "/type",
        _ => return Err(format!("field label not supported: {field}")),
    };
    Ok(o.pointer(at).and_then(Value::as_str))
}

/// Whether `o` passes `selector` (`a=b`, `a==b`, `a!=b`, comma-separated).
fn field_matches(plural: &str, selector: &str, o: &Value) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (field, want, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            ));
        };
        let got = field_value(plural, field.trim(), o)?.unwrap_or_default();
        if (got == want.trim()) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A field selector the API server would refuse, checked against an empty object.
fn bad_field_selector(plural: &str, q: &HashMap<String, String>) -> Option<Response<RespBody>> {
    let selector = q.get("fieldSelector")?;
    field_matches(plural, selector, &json!({}))
        .err()
        .map(|e| err(400, "BadRequest", e))
}

/// Only apiVersion/kind/metadata, as `PartialObjectMetadata`.
fn metadata_only(o: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"].clone()})
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// The object without the fields the server maintains, to detect no-op writes.
fn comparable(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// The lists of object metadata that server-side apply merges element by element rather than
/// replacing whole: `ownerReferences` is a map keyed by `uid` and `finalizers` a set
/// (`+listType=map`, `+listMapKey=uid` and `+listType=set` in
/// staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go; managedFields names their
/// elements `k:{"uid":...}` and `v:"..."`).
const LIST_MAPS: [&str; 2] = ["/metadata/ownerReferences", "/metadata/finalizers"];

/// An element's name within its list-map: `k:<uid>` or `v:<value>`.
fn element_key(list: &str, element: &Value) -> String {
    if list == "/metadata/ownerReferences" {
        format!("k:{}", element["uid"].as_str().unwrap_or_default())
    } else {
        format!("v:{}", element.as_str().unwrap_or_default())
    }
}

/// The value at `path`, where a list-map element is named by its key.
fn value_at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    for list in LIST_MAPS {
        if let Some(key) = path.strip_prefix(list).and_then(|k| k.strip_prefix('/')) {
            return doc
                .pointer(list)?
                .as_array()?
                .iter()
                .find(|e| element_key(list, e) == key);
        }
    }
    doc.pointer(path)
}

/// Merges the applied list-maps of `applied` into `base` element by element: an element this
/// apply names is set, one only `dropped` names (applied before by this manager, not now)
/// goes, the others' elements stay.
fn merge_list_maps(base: &mut Value, applied: &Value, dropped: &[String]) {
    for list in LIST_MAPS {
        let mut merged: Vec<Value> = base
            .pointer(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        merged.retain(|e| !dropped.contains(&format!("{list}/{}", element_key(list, e))));
        for e in applied
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = element_key(list, e);
            match merged.iter_mut().find(|m| element_key(list, m) == key) {
                Some(m) => *m = e.clone(),
                None => merged.push(e.clone()),
            }
        }
        let field = list.rsplit('/').next().unwrap_or_default();
        if merged.is_empty() {
            if let Some(m) = base["metadata"].as_object_mut() {
                m.remove(field);
            }
        } else {
            base["metadata"][field] = Value::Array(merged);
        }
    }
}

/// Leaf paths of a JSON value (objects recurse; arrays and scalars are leaves, but for the
/// list-maps of metadata, whose elements are leaves each).
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    if let (true, Some(list)) = (LIST_MAPS.contains(&prefix), v.as_array()) {
        for e in list {
            out.insert(format!("{prefix}/{}", element_key(prefix, e)), e.clone());
        }
        return;
    }
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                leaves(
                    child,
                    &format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// The owner recorded for a field set by `manager` through a POST, PUT or non-apply PATCH (an
/// Update operation; a manager's applies and updates are owned apart, as managedFields keeps
/// one entry per manager and operation).
fn update_owner(manager: &str) -> String {
    format!("{manager}\u{0}update")
}

/// Records the fields `obj` sets as `manager`'s (an Update); nothing for an unnamed manager.
fn record_update(st: &mut State, key: &Key, obj: &Value, manager: &str) {
    if manager.is_empty() {
        return;
    }
    let mut set = BTreeMap::new();
    leaves(obj, "", &mut set);
    let owners = st.managed.entry(key.clone()).or_default();
    for path in set
        .keys()
        .filter(|p| !p.starts_with("/metadata/resourceVersion"))
    {
        owners.insert(path.clone(), update_owner(manager));
    }
}

/// Removes the field at `pointer`, and each map above it that this leaves empty: a manager
/// that stops applying every field of a struct stops applying the struct (server-side apply
/// removes a field "no longer present in the applied configuration" that only this manager
/// owned, https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management;
/// a map the applier created is its field too, `f:connection: {.: {}, ...}` in managedFields).
/// An empty struct left behind would not even decode (`status.connection: {}` has no kind).
fn remove_pointer(doc: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let now_empty = match doc.pointer_mut(parent).and_then(Value::as_object_mut) {
        Some(m) => {
            m.remove(&last);
            m.is_empty()
        }
        None => false,
    };
    // The object itself and its metadata stay, empty or not.
    if now_empty && !parent.is_empty() && parent != "/metadata" {
        remove_pointer(doc, parent);
    }
}

/// JSON patch where a `test` of a missing path against `null` passes (kube's finalizer helper).
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let mut kept = Vec::new();
    for op in ops.as_array().ok_or("a JSON patch must be an array")? {
        let is_null_test = op["op"] == "test" && op["value"].is_null();
        let path = op["path"].as_str().unwrap_or("");
        if is_null_test {
            match doc.pointer(path) {
                None | Some(Value::Null) => continue,
                Some(_) => return Err(format!("test failed: {path} is not null")),
            }
        }
        kept.push(op.clone());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(kept)).map_err(|e| e.to_string())?;
    json_patch::patch(doc, &patch).map_err(|e| e.to_string())
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Emulator {
    pub fn new() -> Emulator {
        let (tx, _) = broadcast::channel(8192);
        Emulator {
            state: Arc::new(Mutex::new(State {
                rv: 1,
                ..Default::default()
            })),
            tx,
            counters: Arc::new(Counters::default()),
            bookmark_every: Duration::from_millis(500),
            faults: Arc::default(),
            reads_of_collections: Arc::default(),
            cluster_wide: Arc::default(),
            drops: broadcast::channel(64).0,
            rbac: Arc::default(),
            denied: Arc::default(),
            schemas: Arc::new(Schemas::keyward()),
        }
    }

    /// Ends every open watch of resources named `plural` with an in-stream ERROR 410 Expired,
    /// as an API server does when it restarts or compacts past a watcher: the client must list
    /// again (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
    pub fn drop_watches(&self, plural: &str) {
        let _ = self.drops.send(plural.to_owned());
    }

    /// The next `times` writes to the object `name` of `plural` get `status` (one object's
    /// failure, the others unaffected).
    pub fn fail_writes_to(&self, plural: &str, name: &str, status: u16, times: usize) {
        self.faults
            .lock()
            .unwrap()
            .insert(format!("{plural}/{name}"), (status, times));
    }

    /// The next `times` reads (GET of one object or a list; not watches) of `plural` get
    /// `status`.
    pub fn fail_reads(&self, plural: &str, status: u16, times: usize) {
        self.faults
            .lock()
            .unwrap()
            .insert(format!("read:{plural}"), (status, times));
    }

    /// Every request not confined to a namespace ("GET apis/keyward.dev/v1alpha1/...."): what a
    /// client needed cluster-wide rights for.
    pub fn cluster_wide_requests(&self) -> Vec<String> {
        self.cluster_wide.lock().unwrap().clone()
    }

    /// Every list and watch so far, as (resource, metadata only, label selector): which
    /// collections a client read in full.
    pub fn collection_reads(&self) -> Vec<(String, bool, String)> {
        self.reads_of_collections.lock().unwrap().clone()
    }

    /// The next `times` writes (any method but GET) to resources named `plural` get `status`
    /// (`usize::MAX`: every write, until `heal`).
    pub fn fail_writes(&self, plural: &str, status: u16, times: usize) {
        self.faults
            .lock()
            .unwrap()
            .insert(plural.to_owned(), (status, times));
    }

    /// Ends the injected failures of `plural` (writes, reads, and each of its objects').
    pub fn heal(&self, plural: &str) {
        let read = format!("read:{plural}");
        let one = format!("{plural}/");
        self.faults
            .lock()
            .unwrap()
            .retain(|k, _| k != plural && *k != read && !k.starts_with(&one));
    }

    fn injected(&self, plural: &str) -> Option<u16> {
        let mut faults = self.faults.lock().unwrap();
        let (status, left) = faults.get_mut(plural)?;
        if *left == 0 {
            return None;
        }
        if *left != usize::MAX {
            *left -= 1;
        }
        Some(*status)
    }

    /// A `kube::Client` whose every request this emulator answers.
    pub fn client(&self) -> kube::Client {
        let this = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// A client that is the operator's service account: under [`Emulator::enforce_rbac`], what
    /// the chart's RBAC does not allow it is refused (403), as the API server refuses it.
    pub fn operator_client(&self) -> kube::Client {
        let this = self.clone();
        let svc = tower::service_fn(move |mut req: Request<kube::client::Body>| {
            let this = this.clone();
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {}", kube_rbac::OPERATOR_TOKEN)
                    .parse()
                    .unwrap(),
            );
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// From now on, requests of the operator's service account are authorized against
    /// `grants` (the chart's: [`Grants::chart`]).
    pub fn enforce_rbac(&self, grants: Grants) {
        *self.rbac.lock().unwrap() = Some(grants);
    }

    /// The operator's requests refused by RBAC so far, as "verb resource in namespace".
    pub fn denied(&self) -> Vec<String> {
        self.denied.lock().unwrap().clone()
    }

    /// The API server's authorization: a request of the operator's service account that its
    /// grants do not allow is 403 Forbidden, in the API server's words; and a Role or
    /// RoleBinding it writes may not grant more than it holds (RBAC escalation prevention).
    fn authorize(
        &self,
        req: &http::request::Parts,
        t: &Target,
        q: &HashMap<String, String>,
        body: &[u8],
    ) -> Option<Response<RespBody>> {
        let is_operator = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {}", kube_rbac::OPERATOR_TOKEN));
        if !is_operator {
            return None;
        }
        let grants = self.rbac.lock().unwrap().clone()?;
        let verb = match (&req.method, &t.name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                "watch"
            }
            (&Method::GET, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => "unknown",
        };
        let group = t
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_owned();
        let resource = match &t.subresource {
            Some(sub) => format!("{}/{sub}", t.plural),
            None => t.plural.clone(),
        };
        let asked = Attributes {
            verb,
            group: group.clone(),
            resource: resource.clone(),
            namespace: t.namespace.as_deref(),
            name: t.name.as_deref(),
        };
        let user = kube_rbac::OPERATOR_USER;
        if !grants.allows(&asked) {
            let place = match &t.namespace {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".to_owned(),
            };
            self.denied
                .lock()
                .unwrap()
                .push(format!("{verb} {resource}{place}"));
            let what = match &t.name {
                Some(n) => format!("{} \"{n}\"", t.plural),
                None => t.plural.clone(),
            };
            return Some(err(
                403,
                "Forbidden",
                format!("{what} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{place}"),
            ));
        }
        // Escalation prevention, for the Roles and RoleBindings it writes.
        let ns = t.namespace.as_deref()?;
        if group != "rbac.authorization.k8s.io" || !matches!(verb, "create" | "update" | "patch") {
            return None;
        }
        let written: Value = serde_json::from_slice(body).ok()?;
        let rules = match t.plural.as_str() {
            "roles" => kube_rbac::rules_of(&written)?,
            "rolebindings" => {
                let role = written.pointer("/roleRef/name")?.as_str()?;
                let st = self.state.lock().unwrap();
                let stored = st.objects.get(&(
                    "apis/rbac.authorization.k8s.io/v1/roles".to_owned(),
                    ns.to_owned(),
                    role.to_owned(),
                ))?;
                kube_rbac::rules_of(stored)?
            }
            _ => return None,
        };
        let missing = grants.not_held(ns, &rules)?;
        self.denied
            .lock()
            .unwrap()
            .push(format!("escalate {} in the namespace \"{ns}\"", t.plural));
        Some(err(
            403,
            "Forbidden",
            format!("{} \"{}\" is forbidden: user \"{user}\" is attempting to grant RBAC permissions not currently held: {missing}", t.plural, t.name.as_deref().unwrap_or_default()),
        ))
    }

    /// Serves the emulator over plain HTTP on loopback, for a `keyward operator` process (its
    /// kubeconfig names this address). Returns the base URL.
    pub async fn serve_http(&self) -> String {
        let this = self.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let this = this.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let resp = this
                    .handle(Request::from_parts(parts, kube::client::Body::from(bytes)))
                    .await;
                let (parts, body) = resp.into_parts();
                axum::response::Response::from_parts(parts, axum::body::Body::new(body))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// A kubeconfig that points at [`Emulator::serve_http`]'s URL, as the operator's service
    /// account.
    pub fn kubeconfig(url: &str) -> String {
        let token = kube_rbac::OPERATOR_TOKEN;
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: emu, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: emu, user: {{token: {token}}}}}]\ncontexts: [{{name: emu, context: {{cluster: emu, user: emu, namespace: default}}}}]\ncurrent-context: emu\n"
        )
    }

    /// A write of one of keyward's resources made to conform to its CRD schema (pruned,
    /// defaulted), or 422 naming every field that does not.
    fn conform(
        &self,
        t: &Target,
        name: &str,
        obj: &mut Value,
        status_only: bool,
        old: Option<&Value>,
    ) -> Option<Response<RespBody>> {
        let errors = self
            .schemas
            .conform(&t.plural, obj, status_only, old)
            .err()?;
        let kind = kind_of(&t.plural);
        let group = t
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or_default();
        let list = if errors.len() == 1 {
            errors[0].clone()
        } else {
            format!("[{}]", errors.join(", "))
        };
        Some(err(
            422,
            "Invalid",
            format!("{kind}.{group} \"{name}\" is invalid: {list}"),
        ))
    }

    /// Stores `obj` (apiVersion, kind, metadata.name and namespace set) as it is, past
    /// admission and the schema: an object stored before its CRD's schema was tightened, which
    /// the API server serves as stored and never validates again.
    pub fn store_as_is(&self, path: &str, mut obj: Value) {
        let t = parse_path(path).expect("a collection path");
        let ns = t.namespace.clone().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let mut st = self.state.lock().unwrap();
        self.fill_new(&mut obj, &t, &ns, &name);
        let key = (t.resource.clone(), ns, name);
        self.commit(&mut st, &key, obj, "ADDED");
    }

    /// Creates the namespace `name` (what `kubectl create namespace` does), for setups.
    pub fn add_namespace(&self, name: &str) {
        let mut st = self.state.lock().unwrap();
        let key = (NAMESPACES.to_owned(), String::new(), name.to_owned());
        if st.objects.contains_key(&key) {
            return;
        }
        let t = parse_path(&format!("/api/v1/namespaces/{name}")).unwrap();
        let mut n = json!({"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"}});
        self.fill_new(&mut n, &t, "", name);
        self.commit(&mut st, &key, n, "ADDED");
    }

    /// Forgets history up to now: watches from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut st = self.state.lock().unwrap();
        st.compacted_before = st.rv;
        st.history.clear();
    }

    pub fn current_rv(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    /// A stored object, for assertions.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Field managers that applied fields of an object (server-side apply).
    pub fn managers_of(&self, resource: &str, namespace: &str, name: &str) -> BTreeSet<String> {
        let st = self.state.lock().unwrap();
        st.managed
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .map(|m| {
                m.values()
                    .map(|owner| owner.split('\u{0}').next().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many objects of `resource` `pred` holds for, read in place (a benchmark that
    /// polls must not copy every object on the cores it measures).
    #[allow(dead_code)]
    pub fn count(&self, resource: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, v)| k.0 == resource && pred(v))
            .count()
    }

    pub fn list(&self, resource: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<RespBody> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let Some(t) = parse_path(parts.uri.path()) else {
            return err(404, "NotFound", format!("no route {}", parts.uri.path()));
        };
        let q = query(&parts.uri);
        let accept = parts
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let meta_only = accept.contains("as=PartialObjectMetadata");
        if let Some(refused) = self.authorize(&parts, &t, &q, &body) {
            return refused;
        }
        let ns_scoped = !CLUSTER_SCOPED.contains(&t.plural.as_str());
        if parts.method != Method::GET {
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
            *self
                .counters
                .by_resource
                .lock()
                .unwrap()
                .entry(t.plural.clone())
                .or_default() += 1;
            // A create names its object in the body, not the path.
            let named = t.name.clone().or_else(|| {
                serde_json::from_slice::<Value>(&body)
                    .ok()?
                    .pointer("/metadata/name")?
                    .as_str()
                    .map(str::to_owned)
            });
            let one = named.map(|n| format!("{}/{n}", t.plural));
            let code = one
                .and_then(|k| self.injected(&k))
                .or_else(|| self.injected(&t.plural));
            if let Some(code) = code {
                return err(code, "InternalError", "injected failure");
            }
        } else {
            let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            if !watching {
                if let Some(code) = self.injected(&format!("read:{}", t.plural)) {
                    return err(code, "InternalError", "injected failure");
                }
            }
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            if t.name.is_some() {
                *self
                    .counters
                    .gets_by_resource
                    .lock()
                    .unwrap()
                    .entry(t.plural.clone())
                    .or_default() += 1;
            }
        }
        let ns = if ns_scoped {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        if parts.method == Method::GET && t.name.is_none() {
            self.reads_of_collections.lock().unwrap().push((
                t.resource.clone(),
                meta_only,
                q.get("labelSelector").cloned().unwrap_or_default(),
            ));
        }
        if t.namespace.is_none() {
            self.cluster_wide
                .lock()
                .unwrap()
                .push(format!("{} {}", parts.method, t.resource));
        }
        if parts.method == Method::GET && t.name.is_none() {
            if let Some(bad) = bad_field_selector(&t.plural, &q) {
                return bad;
            }
        }
        match (&parts.method, &t.name) {
            (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&t, &q, meta_only)
            }
            (&Method::GET, None) => self.list_response(&t, &q, meta_only),
            (&Method::GET, Some(name)) => match self.get(&t.resource, &ns, name) {
                Some(o) if meta_only => respond(StatusCode::OK, &metadata_only(&o)),
                Some(o) => respond(StatusCode::OK, &o),
                None => err(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", t.plural),
                ),
            },
            (&Method::POST, None) => {
                let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                    return err(400, "BadRequest", "body is not JSON");
                };
                let manager = q.get("fieldManager").cloned().unwrap_or_default();
                self.create(&t, &ns, obj, &manager)
            }
            (&Method::PUT, Some(name)) => {
                let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                    return err(400, "BadRequest", "body is not JSON");
                };
                let manager = q.get("fieldManager").cloned().unwrap_or_default();
                self.replace(&t, &ns, name, obj, &manager)
            }
            (&Method::PATCH, Some(name)) => {
                let ct = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return err(400, "BadRequest", "body is not JSON");
                };
                let manager = q.get("fieldManager").cloned().unwrap_or_default();
                let force = q.get("force").is_some_and(|f| f == "true");
                self.patch(&t, &ns, name, &ct, patch, &manager, force)
            }
            (&Method::DELETE, Some(name)) => {
                let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                self.delete(&t.resource, &ns, name, &options["preconditions"])
            }
            _ => err(405, "MethodNotAllowed", "not supported by the emulator"),
        }
    }

    fn list_response(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        meta_only: bool,
    ) -> Response<RespBody> {
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, _)| k.0 == t.resource && t.namespace.as_ref().is_none_or(|ns| &k.1 == ns))
            .map(|(_, o)| o)
            .filter(|o| {
                q.get("labelSelector")
                    .is_none_or(|s| selector_matches(s, &labels_of(o)))
            })
            .filter(|o| {
                q.get("fieldSelector")
                    .is_none_or(|s| field_matches(&t.plural, s, o).unwrap_or(false))
            })
            .map(|o| {
                if meta_only {
                    metadata_only(o)
                } else {
                    o.clone()
                }
            })
            .collect();
        // Pages, as the API server gives them for `limit` (kube's watcher asks for 500): the
        // `continue` token is where the next page starts, in name order.
        let start: usize = match q.get("continue").map(|c| c.parse()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return err(400, "BadRequest", "invalid continue token"),
        };
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(items.len());
        let more = end < items.len();
        let items: Vec<Value> = items.get(start.min(end)..end).unwrap_or_default().to_vec();
        let mut list_meta = json!({"resourceVersion": st.rv.to_string()});
        if more {
            list_meta["continue"] = json!(end.to_string());
        }
        let (api_version, kind) = if meta_only {
            (
                "meta.k8s.io/v1".to_owned(),
                "PartialObjectMetadataList".to_owned(),
            )
        } else {
            (t.api_version.clone(), format!("{}List", kind_of(&t.plural)))
        };
        respond(
            StatusCode::OK,
            &json!({"apiVersion": api_version, "kind": kind, "metadata": list_meta, "items": items}),
        )
    }

    fn watch(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        meta_only: bool,
    ) -> Response<RespBody> {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(300));
        let (backlog, mut rx, gone, kind) = {
            let st = self.state.lock().unwrap();
            let gone = from != 0 && from < st.compacted_before;
            let backlog: Vec<Arc<Change>> = if from == 0 {
                // "Any" version: start with the current objects as ADDED.
                st.objects
                    .iter()
                    .filter(|(k, _)| k.0 == t.resource)
                    .map(|(k, o)| {
                        Arc::new(Change {
                            rv: st.rv,
                            resource: k.0.clone(),
                            namespace: k.1.clone(),
                            kind: "ADDED",
                            object: o.clone(),
                            previous: None,
                        })
                    })
                    .collect()
            } else {
                st.history.iter().filter(|c| c.rv > from).cloned().collect()
            };
            (backlog, self.tx.subscribe(), gone, kind_of(&t.plural))
        };
        let resource = t.resource.clone();
        let namespace = t.namespace.clone();
        let labels = q.get("labelSelector").cloned();
        let fields = q.get("fieldSelector").cloned();
        let api_version = if meta_only {
            "meta.k8s.io/v1".to_owned()
        } else {
            t.api_version.clone()
        };
        let bookmark_kind = if meta_only {
            "PartialObjectMetadata"
        } else {
            kind
        };
        let every = self.bookmark_every;
        let state = self.state.clone();
        let mut dropped = self.drops.subscribe();
        let plural = t.plural.clone();
        let stream = async_stream::stream! {
            // Watches are answered in-process: yield once, so a client that re-watches at once
            // (e.g. while the runtime shuts down and timers fire immediately) cannot spin.
            tokio::task::yield_now().await;
            if gone {
                let ev = json!({"type": "ERROR", "object": status(410, "Expired", format!("too old resource version: {from}"))});
                yield Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(format!("{ev}\n"))));
                return;
            }
            let passes = |o: &Value| {
                labels.as_ref().is_none_or(|s| selector_matches(s, &labels_of(o)))
                    && fields.as_ref().is_none_or(|s| field_matches(&plural, s, o).unwrap_or(false))
            };
            // What a watch with selectors sees of a change, as the API server's watch cache
            // tells it (staging/src/k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go,
            // convertToWatchEvent): an object that starts matching is ADDED, one that stops
            // matching is DELETED (with its previous content at the event's resourceVersion),
            // one that matches before and after is MODIFIED, anything else is not sent.
            let seen = |c: &Change| -> Option<(&'static str, Value)> {
                if c.resource != resource || namespace.as_ref().is_some_and(|ns| &c.namespace != ns) {
                    return None;
                }
                let now = c.kind != "DELETED" && passes(&c.object);
                let before = match (c.kind, &c.previous) {
                    ("DELETED", _) => passes(&c.object),
                    (_, Some(p)) => passes(p),
                    _ => false,
                };
                match (before, now) {
                    (false, true) if c.kind == "MODIFIED" => Some(("ADDED", c.object.clone())),
                    (_, true) => Some((c.kind, c.object.clone())),
                    (true, false) => {
                        let mut old = c.previous.clone().unwrap_or_else(|| c.object.clone());
                        old["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                        Some(("DELETED", old))
                    }
                    (false, false) => None,
                }
            };
            let render = |kind: &str, object: &Value| {
                let object = if meta_only { metadata_only(object) } else { object.clone() };
                Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
            };
            let mut last = from;
            for c in backlog.iter() {
                if let Some((kind, object)) = seen(c) {
                    last = last.max(c.rv);
                    yield Ok(http_body::Frame::data(render(kind, &object)));
                }
            }
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let tick = tokio::time::sleep(every);
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    got = rx.recv() => match got {
                        Ok(c) if c.rv > last => {
                            if let Some((kind, object)) = seen(&c) {
                                last = c.rv;
                                yield Ok(http_body::Frame::data(render(kind, &object)));
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                    },
                    d = dropped.recv() => {
                        if d.is_ok_and(|p| p == plural) {
                            let ev = json!({"type": "ERROR", "object": status(410, "Expired", "the watch was dropped (too old resource version)")});
                            yield Ok(http_body::Frame::data(Bytes::from(format!("{ev}\n"))));
                            return;
                        }
                    }
                    _ = tick, if bookmarks => {
                        let rv = state.lock().unwrap().rv;
                        let ev = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": bookmark_kind, "metadata": {"resourceVersion": rv.to_string()}}});
                        yield Ok(http_body::Frame::data(Bytes::from(format!("{ev}\n"))));
                    }
                }
            }
        };
        let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    }

    /// Stores `obj` (already complete), bumping resourceVersion and recording the change.
    fn commit(&self, st: &mut State, key: &Key, mut obj: Value, kind: &'static str) -> Value {
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let change = Change {
            rv: st.rv,
            resource: key.0.clone(),
            namespace: key.1.clone(),
            kind,
            object: obj.clone(),
            previous: (kind == "MODIFIED")
                .then(|| st.objects.get(key).cloned())
                .flatten(),
        };
        if kind == "DELETED" {
            if let Some(uid) = st.objects.remove(key).as_ref().and_then(uid_of) {
                st.uids.remove(&(key.1.clone(), uid));
            }
            st.managed.remove(key);
        } else {
            if let Some(uid) = uid_of(&obj) {
                st.uids.insert((key.1.clone(), uid));
            }
            st.objects.insert(key.clone(), obj.clone());
        }
        let change = Arc::new(change);
        st.history.push_back(change.clone());
        if st.history.len() > 20_000 {
            if let Some(old) = st.history.pop_front() {
                st.compacted_before = old.rv + 1;
            }
        }
        let _ = self.tx.send(change);
        if kind == "DELETED" && !key.1.is_empty() {
            self.finish_namespace(st, &key.1);
        }
        // A deletion may leave dependents without owners anywhere; a written dependent may
        // have none of its own (the API server's collector follows its graph; so does this,
        // instead of reading every object after every write).
        if kind == "DELETED" {
            self.schedule_gc(None);
        } else if obj.pointer("/metadata/ownerReferences").is_some() {
            self.schedule_gc(Some(key.clone()));
        }
        obj
    }

    /// A namespace being deleted goes once nothing is left in it.
    fn finish_namespace(&self, st: &mut State, ns: &str) {
        let ns_key = (NAMESPACES.to_owned(), String::new(), ns.to_owned());
        let Some(n) = st.objects.get(&ns_key).cloned() else {
            return;
        };
        if n.pointer("/metadata/deletionTimestamp").is_none()
            || st.objects.keys().any(|k| k.1 == ns)
        {
            return;
        }
        self.commit(st, &ns_key, n, "DELETED");
    }

    /// Namespace deletion as the API server does it: the namespace turns `Terminating`, all
    /// its content is deleted (what has finalizers waits for them), and the namespace goes when
    /// it is empty.
    fn delete_namespace(&self, st: &mut State, key: &Key, old: &Value) -> Value {
        let mut n = old.clone();
        if n.pointer("/metadata/deletionTimestamp").is_none() {
            n["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::from_second(
                jiff::Timestamp::now().as_second()
            )
            .unwrap()
            .to_string());
            n["status"] = json!({"phase": "Terminating"});
            n = self.commit(st, key, n, "MODIFIED");
        }
        let contents: Vec<Key> = st
            .objects
            .keys()
            .filter(|k| k.1 == key.2)
            .cloned()
            .collect();
        for k in contents {
            if let Some(current) = st.objects.get(&k).cloned() {
                self.delete_locked(st, &k, &current);
            }
        }
        self.finish_namespace(st, &key.2);
        st.objects.get(key).cloned().unwrap_or(n)
    }

    /// A POST. The fields it sets are recorded as the manager's (an Update operation): the API
    /// server "tracks managed fields for all newly created objects" and for every write, not
    /// only applies (https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management).
    fn create(&self, t: &Target, ns: &str, mut obj: Value, manager: &str) -> Response<RespBody> {
        let mut st = self.state.lock().unwrap();
        let name = match obj.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => match obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) => format!("{prefix}{:05x}", st.rv),
                None => return err(422, "Invalid", "metadata.name is required"),
            },
        };
        let key = (t.resource.clone(), ns.to_owned(), name.clone());
        if let Some(refused) = namespace_refuses(&st, ns, &t.plural, &name) {
            return refused;
        }
        if let Some(invalid) = invalid_write(&t.plural, &name, None, &obj) {
            return invalid;
        }
        if let Some(invalid) = self.conform(t, &name, &mut obj, false, None) {
            return invalid;
        }
        if st.objects.contains_key(&key) {
            return err(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", t.plural),
            );
        }
        record_update(&mut st, &key, &obj, manager);
        self.fill_new(&mut obj, t, ns, &name);
        let obj = self.commit(&mut st, &key, obj, "ADDED");
        respond(StatusCode::CREATED, &obj)
    }

    fn fill_new(&self, obj: &mut Value, t: &Target, ns: &str, name: &str) {
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if !ns.is_empty() {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!("uid-{}-{}", name, rand_suffix()));
        meta["creationTimestamp"] = json!(jiff::Timestamp::from_second(
            jiff::Timestamp::now().as_second()
        )
        .unwrap()
        .to_string());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
        }
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(t.api_version);
        }
        if obj.get("kind").is_none() {
            obj["kind"] = json!(kind_of(&t.plural));
        }
    }

    /// Writes `new` over `old` (both complete): keeps server fields, bumps generation on spec
    /// changes, and does nothing at all when nothing changed.
    fn update(
        &self,
        st: &mut State,
        key: &Key,
        old: &Value,
        mut new: Value,
        status_only: bool,
    ) -> Value {
        if status_only {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "namespace",
                "name",
            ] {
                match old["metadata"].get(f) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            if spec_part(&new) != spec_part(old) {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
        if comparable(&new) == comparable(old) {
            return old.clone();
        }
        // The last finalizer of an object being deleted is gone: delete it for real.
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_left = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            return self.commit(st, key, new, "DELETED");
        }
        self.commit(st, key, new, "MODIFIED")
    }

    /// A PUT; the fields it sets become the manager's (an Update operation), as for a POST.
    fn replace(
        &self,
        t: &Target,
        ns: &str,
        name: &str,
        obj: Value,
        manager: &str,
    ) -> Response<RespBody> {
        let mut st = self.state.lock().unwrap();
        let key = (t.resource.clone(), ns.to_owned(), name.to_owned());
        let Some(old) = st.objects.get(&key).cloned() else {
            return err(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", t.plural),
            );
        };
        if let Some(conflict) = stale(&obj, &old) {
            return conflict;
        }
        let status_only = t.subresource.as_deref() == Some("status");
        if !status_only {
            if let Some(invalid) = invalid_write(&t.plural, name, Some(&old), &obj) {
                return invalid;
            }
        }
        let mut obj = obj;
        if let Some(invalid) = self.conform(t, name, &mut obj, status_only, Some(&old)) {
            return invalid;
        }
        record_update(&mut st, &key, &obj, manager);
        let out = self.update(&mut st, &key, &old, obj, status_only);
        respond(StatusCode::OK, &out)
    }

    #[allow(clippy::too_many_arguments)]
    fn patch(
        &self,
        t: &Target,
        ns: &str,
        name: &str,
        content_type: &str,
        patch: Value,
        manager: &str,
        force: bool,
    ) -> Response<RespBody> {
        // The API server has no merge keys for custom resources: refused before anything else.
        if content_type.starts_with("application/strategic-merge-patch")
            && t.resource.starts_with("apis/keyward.dev/")
        {
            return err(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            );
        }
        let mut st = self.state.lock().unwrap();
        let key = (t.resource.clone(), ns.to_owned(), name.to_owned());
        let status_only = t.subresource.as_deref() == Some("status");
        let existing = st.objects.get(&key).cloned();
        // A subresource belongs to an object: without the object there is nothing to apply to.
        if status_only && existing.is_none() {
            return err(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", t.plural),
            );
        }
        if content_type.starts_with("application/apply-patch") {
            // A resourceVersion in the applied object is a precondition: "if the resource
            // version does not match, the request fails with a conflict"
            // (https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts, and
            // the apiserver's optimistic concurrency for every write with a resourceVersion).
            if let Some(want) = patch.pointer("/metadata/resourceVersion") {
                let stored = existing
                    .as_ref()
                    .and_then(|o| o.pointer("/metadata/resourceVersion"));
                if stored != Some(want) {
                    return err(
                        409,
                        "Conflict",
                        format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", t.plural),
                    );
                }
            }
            let mut base = match &existing {
                Some(o) => o.clone(),
                None => {
                    let mut o = json!({"metadata": {}});
                    self.fill_new(&mut o, t, ns, name);
                    o
                }
            };
            let mut applied = BTreeMap::new();
            leaves(&patch, "", &mut applied);
            for p in [
                "/apiVersion",
                "/kind",
                "/metadata/name",
                "/metadata/namespace",
                "/metadata/resourceVersion",
            ] {
                applied.remove(p);
            }
            let owners = st.managed.entry(key.clone()).or_default();
            if !force {
                for (path, value) in &applied {
                    if let Some(owner) = owners.get(path) {
                        let current = value_at(&base, path);
                        if owner != manager && current.is_some() && current != Some(value) {
                            let who = owner.split('\u{0}').next().unwrap_or_default();
                            return err(
                                409,
                                "Conflict",
                                format!(
                                    "Apply failed with 1 conflict: conflict with \"{who}\": {path}"
                                ),
                            );
                        }
                    }
                }
            }
            // Fields this manager applied before and no longer applies are removed.
            let dropped: Vec<String> = owners
                .iter()
                .filter(|(p, m)| *m == manager && !applied.contains_key(*p))
                .map(|(p, _)| p.clone())
                .collect();
            for p in &dropped {
                owners.remove(p);
                if !LIST_MAPS.iter().any(|l| p.starts_with(&format!("{l}/"))) {
                    remove_pointer(&mut base, p);
                }
            }
            for path in applied.keys() {
                owners.insert(path.clone(), manager.to_owned());
            }
            let mut rest = patch.clone();
            if let Some(m) = rest.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("ownerReferences");
                m.remove("finalizers");
            }
            json_patch::merge(&mut base, &rest);
            merge_list_maps(&mut base, &patch, &dropped);
            if let Some(invalid) = invalid_write(&t.plural, name, existing.as_ref(), &base) {
                return invalid;
            }
            if let Some(invalid) = self.conform(t, name, &mut base, status_only, existing.as_ref())
            {
                return invalid;
            }
            return match existing {
                None => {
                    if let Some(refused) = namespace_refuses(&st, ns, &t.plural, name) {
                        return refused;
                    }
                    let obj = self.commit(&mut st, &key, base, "ADDED");
                    respond(StatusCode::CREATED, &obj)
                }
                Some(old) => {
                    let out = self.update(&mut st, &key, &old, base, status_only);
                    respond(StatusCode::OK, &out)
                }
            };
        }
        let Some(old) = existing else {
            return err(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", t.plural),
            );
        };
        let mut new = old.clone();
        if content_type.starts_with("application/json-patch") {
            if let Err(e) = json_patch(&mut new, &patch) {
                return err(422, "Invalid", e);
            }
        } else if content_type.starts_with("application/strategic-merge-patch") {
            strategic_merge::apply(&mut new, &patch);
        } else {
            json_patch::merge(&mut new, &patch);
        }
        if let Some(conflict) = stale(&patch, &old) {
            return conflict;
        }
        if let Some(invalid) = invalid_write(&t.plural, name, Some(&old), &new) {
            return invalid;
        }
        if let Some(invalid) = self.conform(t, name, &mut new, status_only, Some(&old)) {
            return invalid;
        }
        reassign_ownership(&mut st, &key, &old, &new, manager);
        let out = self.update(&mut st, &key, &old, new, status_only);
        respond(StatusCode::OK, &out)
    }

    /// A DELETE; `preconditions` (uid, resourceVersion) that the stored object does not meet
    /// are a 409 Conflict, as the API server answers (`DeleteOptions.preconditions`,
    /// https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/delete-options/).
    fn delete(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        preconditions: &Value,
    ) -> Response<RespBody> {
        let mut st = self.state.lock().unwrap();
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        let Some(old) = st.objects.get(&key).cloned() else {
            return err(404, "NotFound", format!("\"{name}\" not found"));
        };
        for (field, at) in [
            ("uid", "/metadata/uid"),
            ("resourceVersion", "/metadata/resourceVersion"),
        ] {
            if let Some(want) = preconditions.get(field).filter(|v| !v.is_null()) {
                if old.pointer(at) != Some(want) {
                    return err(
                        409,
                        "Conflict",
                        format!("Precondition failed: {field} in precondition: {want}, {field} in object meta: {}", old.pointer(at).cloned().unwrap_or_default()),
                    );
                }
            }
        }
        let out = self.delete_locked(&mut st, &key, &old);
        respond(StatusCode::OK, &out)
    }

    fn delete_locked(&self, st: &mut State, key: &Key, old: &Value) -> Value {
        if key.0 == NAMESPACES {
            return self.delete_namespace(st, key, old);
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return old.clone();
            }
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::from_second(
                jiff::Timestamp::now().as_second()
            )
            .unwrap()
            .to_string());
            // The API server counts a deletion request as a change of the object's intent.
            if let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
                new["metadata"]["generation"] = json!(g + 1);
            }
            return self.commit(st, key, new, "MODIFIED");
        }
        self.commit(st, key, old.clone(), "DELETED")
    }

    /// Background garbage collection, as the API server's garbage collector does it: apart
    /// from the write, a moment later. A dependent whose every owner is absent is deleted. An
    /// owner is absent when no object has its uid where it may live: a namespaced dependent's
    /// owner must be cluster-scoped or in the dependent's namespace, a cluster-scoped
    /// dependent's owner cluster-scoped; an owner elsewhere "is treated as absent, and the
    /// dependent is subject to deletion once all owners are verified absent"
    /// (https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/).
    /// After `GC_DELAY`: every object (`None`, after a deletion), or only the dependent `key`
    /// that was written.
    fn schedule_gc(&self, only: Option<Key>) {
        let this = self.clone();
        let run = move |this: &Emulator| {
            let mut st = this.state.lock().unwrap();
            match &only {
                Some(key) => {
                    let orphan = st
                        .objects
                        .get(key)
                        .filter(|o| is_orphan(&st.uids, key, o))
                        .cloned();
                    if let Some(o) = orphan {
                        this.delete_locked(&mut st, key, &o);
                        this.collect_garbage(&mut st);
                    }
                }
                None => this.collect_garbage(&mut st),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(GC_DELAY).await;
                    run(&this);
                });
            }
            Err(_) => run(&this),
        }
    }

    fn collect_garbage(&self, st: &mut State) {
        loop {
            let orphans: Vec<(Key, Value)> = st
                .objects
                .iter()
                .filter(|(k, o)| is_orphan(&st.uids, k, o))
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            if orphans.is_empty() {
                return;
            }
            for (k, o) in orphans {
                self.delete_locked(st, &k, &o);
            }
        }
    }
}

/// Whether `o` (at `key`) has owners and none of them is where it may live (`uids`: every
/// object's namespace and uid), and is not being deleted already.
fn is_orphan(uids: &std::collections::HashSet<(String, String)>, key: &Key, o: &Value) -> bool {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let refs = o
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let owner_present = |r: &Value| {
        let uid = r["uid"].as_str().unwrap_or_default().to_owned();
        uids.contains(&(String::new(), uid.clone()))
            || (!key.1.is_empty() && uids.contains(&(key.1.clone(), uid)))
    };
    !refs.is_empty() && !refs.iter().any(owner_present)
}

/// How long after a write the garbage collector acts on it (the API server's is asynchronous
/// too: a dependent is not gone the moment its owner is).
const GC_DELAY: Duration = Duration::from_millis(50);

/// Where namespaces are kept (cluster-scoped: no namespace in their key).
const NAMESPACES: &str = "api/v1/namespaces";

/// A create in a namespace that does not exist is 404, in one being deleted 403, as the API
/// server's NamespaceLifecycle admission plugin answers
/// (plugin/pkg/admission/namespace/lifecycle/admission.go): for a POST and for an apply that
/// would create alike.
fn namespace_refuses(st: &State, ns: &str, plural: &str, name: &str) -> Option<Response<RespBody>> {
    if ns.is_empty() {
        return None;
    }
    let ns_key = (NAMESPACES.to_owned(), String::new(), ns.to_owned());
    match st.objects.get(&ns_key) {
        None => Some(err(404, "NotFound", format!("namespaces \"{ns}\" not found"))),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Some(err(
            403,
            "Forbidden",
            format!("{plural} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"),
        )),
        Some(_) => None,
    }
}

/// What the API server's validation refuses of a write (422 Invalid), where keyward could
/// meet it: more than one controller reference (ValidateOwnerReferences in
/// staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go), a Secret's `type`
/// changed, and the content of a Secret or ConfigMap marked `immutable: true` changed
/// (ValidateSecretUpdate / ValidateConfigMapUpdate in pkg/apis/core/validation/validation.go).
fn invalid_write(
    plural: &str,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> Option<Response<RespBody>> {
    let kind = kind_of(plural);
    let controllers: Vec<&str> = new
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r["controller"] == true)
        .map(|r| r["name"].as_str().unwrap_or_default())
        .collect();
    if controllers.len() > 1 {
        return Some(err(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: metadata.ownerReferences: Invalid value: Only one reference can have Controller set to true. Found \"true\" in references for {}", controllers.join(" and ")),
        ));
    }
    let old = old?;
    if plural == "secrets" && old.get("type") != new.get("type") && new.get("type").is_some() {
        return Some(err(
            422,
            "Invalid",
            format!(
                "Secret \"{name}\" is invalid: type: Invalid value: {}: field is immutable",
                new["type"]
            ),
        ));
    }
    if (plural == "secrets" || plural == "configmaps") && old["immutable"] == true {
        let content = |o: &Value| {
            (
                o.get("data").cloned(),
                o.get("binaryData").cloned(),
                o.get("immutable").cloned(),
            )
        };
        if content(old) != content(new) {
            return Some(err(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: data: Forbidden: field is immutable when `immutable` is set"),
            ));
        }
    }
    None
}

/// A 409 when a write names a resourceVersion other than the stored one (optimistic concurrency).
fn stale(write: &Value, stored: &Value) -> Option<Response<RespBody>> {
    let given = write
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)?;
    let current = stored
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    (Some(given) != current).then(|| {
        err(409, "Conflict", format!("the object has been modified; please apply your changes to the latest version (resourceVersion {given})"))
    })
}

/// A non-apply write takes the fields it changed (removed fields are owned by no one), as the
/// API server records an `Update` manager.
fn reassign_ownership(st: &mut State, key: &Key, old: &Value, new: &Value, manager: &str) {
    let Some(owners) = st.managed.get_mut(key) else {
        return;
    };
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    leaves(old, "", &mut before);
    leaves(new, "", &mut after);
    owners.retain(|path, _| after.contains_key(path));
    for (path, v) in &after {
        if before.get(path) != Some(v) && owners.contains_key(path) {
            owners.insert(path.clone(), manager.to_owned());
        }
    }
}

fn rand_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:08x}", N.fetch_add(1, Ordering::Relaxed) ^ 0x5eed)
}

/// Objects named in a set, for tests.
pub fn names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| {
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}
