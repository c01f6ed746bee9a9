//! A value that was generated reaches its Secret, or the new key is revoked: the Secret write
//! fails on every path that generates a value (create, regenerate of a lost value, rotation,
//! replace), through the shared engine against the real reference CMS. The operator's Secret
//! write is in `tests/operator.rs`.

mod support;

use keyward::engine::{observe_secrets, ApplyError, ApplyReport, Clock, Engine, StepFailure};
use keyward::model::desired::ConnectionId;
use keyward::plan::{diff, Action, Plan};
use keyward::policy::ProviderKind;
use keyward::providers::reference::ReferenceCms;
use keyward::providers::CmsProvider;
use reqwest::{Method, StatusCode};
use std::path::Path;
use support::sinks::FailingSink;
use support::{manifest, secret_field, Answers, Cms};

const READER: &str = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  keys:\n    - name: reader\n      defaultPermissions: [GET]\n      expiresAfter: 2m\n      renewBefore: 60s\n      rotationOverlap: 30s\n      secret: {name: reader}\n";

/// The engine's write attempts per Secret before it gives up.
const WRITE_ATTEMPTS: usize = 3;

/// Plans `file` against the CMS with `sink`'s Secrets at `clock`'s time, then applies the plan.
async fn run(
    cms: &Cms,
    file: &Path,
    sink: &FailingSink,
    clock: &Clock,
) -> (Plan, Result<ApplyReport, ApplyError>) {
    let set = keyward::policy::load::load(&[file.to_path_buf()]).unwrap();
    let resolved =
        keyward::policy::validate::resolve(&set, clock.now(), None, ProviderKind::Keyward).unwrap();
    let state = &resolved.desired[&ConnectionId::Default];
    let provider = ReferenceCms::new(&cms.url, support::ADMIN);
    let live = provider.list_keys().await.unwrap();
    let settings = provider.settings(&Default::default(), None).await.unwrap();
    let observed = observe_secrets(sink, &state.keys).await.unwrap();
    let plan = diff(state, &live, &settings, &observed, &cms.url, clock.now());
    let engine = Engine {
        provider: &provider,
        sink,
        endpoint: cms.url.clone(),
        clock: clock.clone(),
        progress: None,
    };
    let result = engine.apply(&plan).await;
    (plan, result)
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Create { .. } => "create",
            Action::Adopt { .. } => "adopt",
            Action::Update { .. } => "update",
            Action::Rotate { .. } => "rotate",
            Action::Replace { .. } => "replace",
            Action::WriteSecret { .. } => "secret",
            Action::Revoke { .. } => "revoke",
            Action::SetCors { .. } => "cors",
            Action::SetPublic { .. } => "public",
        })
        .collect()
}

async fn keys(cms: &Cms) -> Vec<serde_json::Value> {
    cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
        .as_array()
        .unwrap()
        .clone()
}

fn value(out: &Path) -> Option<String> {
    secret_field(out, "shop", "reader", "apiKey")
}

struct Setup {
    cms: Cms,
    dir: tempfile::TempDir,
    sink: FailingSink,
    clock: Clock,
}

async fn setup() -> Setup {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = FailingSink::new(dir.path().join("out"));
    Setup {
        cms,
        dir,
        sink,
        clock: Clock::system(),
    }
}

impl Setup {
    fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }

    fn policy(&self, text: &str) -> std::path::PathBuf {
        manifest(self.dir.path(), "p.yaml", text)
    }

    /// Applies `file` with a healthy sink; the value it wrote.
    async fn applied(&self, file: &Path) -> String {
        let (_, r) = run(&self.cms, file, &self.sink, &self.clock).await;
        r.unwrap();
        value(&self.out()).unwrap()
    }
}

#[tokio::test]
async fn create_a_failed_write_revokes_the_new_key_and_the_next_run_creates_it() {
    let s = setup().await;
    let m = s.policy(READER);
    s.sink.fail_next(usize::MAX);
    let (plan, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["create"]);
    let e = r.unwrap_err();
    assert_eq!(e.failed, "create key shop/web/reader", "{}", e.report());
    assert!(e.done.is_empty() && e.not_attempted.is_empty(), "{e:?}");
    assert!(e.transient);
    assert!(
        matches!(&e.cause, StepFailure::NewValueUnwritten { undo, .. }
            if undo == "the new key was revoked; the next run creates it again"),
        "{}",
        e.cause
    );
    assert_eq!(s.sink.attempts(), WRITE_ATTEMPTS, "the write was retried");
    assert!(keys(&s.cms).await.is_empty(), "no key nobody has");
    assert!(value(&s.out()).is_none());

    s.sink.fail_next(0);
    let v = s.applied(&m).await;
    assert_eq!(keys(&s.cms).await.len(), 1);
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &v).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn create_a_write_that_fails_twice_is_retried_into_place() {
    let s = setup().await;
    let m = s.policy(READER);
    s.sink.fail_next(WRITE_ATTEMPTS - 1);
    let (_, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    let report = r.unwrap();
    assert_eq!(report.secrets_written, 1);
    assert_eq!(s.sink.attempts(), WRITE_ATTEMPTS);
    let v = value(&s.out()).unwrap();
    assert_eq!(keys(&s.cms).await.len(), 1);
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &v).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn regenerate_a_lost_value_whose_write_fails_is_regenerated_by_the_next_run() {
    let s = setup().await;
    let m = s.policy(READER);
    let old = s.applied(&m).await;
    std::fs::remove_file(s.out().join("shop.reader.yaml")).unwrap();
    s.sink.fail_next(usize::MAX);
    let before = s.sink.attempts();
    let (plan, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["rotate"]);
    let e = r.unwrap_err();
    let id = keys(&s.cms).await[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(e.failed, format!("rotate key shop/web/reader (id {id})"));
    assert!(
        matches!(&e.cause, StepFailure::RegeneratedValueUnwritten { id: i, .. } if *i == id),
        "{}",
        e.cause
    );
    assert_eq!(s.sink.attempts() - before, WRITE_ATTEMPTS);
    assert_eq!(keys(&s.cms).await.len(), 1, "the same key, no duplicate");
    assert!(value(&s.out()).is_none());

    s.sink.fail_next(0);
    let (plan, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["rotate"], "still no value in a Secret");
    r.unwrap();
    let new = value(&s.out()).unwrap();
    assert_ne!(new, old);
    assert_eq!(keys(&s.cms).await[0]["id"], id.as_str());
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotate_a_failed_write_keeps_the_old_value_in_its_secret_working() {
    let s = setup().await;
    let m = s.policy(READER);
    let old = s.applied(&m).await;
    // Within renewBefore (60 s before the 2 min expiry).
    s.clock.advance(jiff::SignedDuration::from_secs(61));
    s.sink.fail_next(usize::MAX);
    let (plan, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    let Action::Rotate {
        expiring,
        grace_seconds,
        ..
    } = &plan.actions[0]
    else {
        panic!("{plan:?}")
    };
    assert!(*expiring);
    assert_eq!(*grace_seconds, 30);
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e.cause,
            StepFailure::RegeneratedValueUnwritten {
                grace_seconds: 30,
                ..
            }
        ),
        "{}",
        e.cause
    );
    assert!(e
        .cause
        .to_string()
        .contains("the old value stays valid 30s"));
    assert_eq!(value(&s.out()).as_deref(), Some(old.as_str()), "untouched");
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK,
        "the old value works during the overlap"
    );

    // The next run sees a Secret whose value is no longer current and writes a new one.
    s.sink.fail_next(0);
    let (plan, r) = run(&s.cms, &m, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["rotate"]);
    r.unwrap();
    let new = value(&s.out()).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(keys(&s.cms).await.len(), 1);
}

#[tokio::test]
async fn replace_a_failed_write_revokes_the_new_key_and_the_old_one_keeps_working() {
    let s = setup().await;
    let m = s.policy(READER);
    let old = s.applied(&m).await;
    let old_id = keys(&s.cms).await[0]["id"].as_str().unwrap().to_owned();
    let public = s.policy(&READER.replace(
        "      defaultPermissions",
        "      type: public\n      defaultPermissions",
    ));
    s.sink.fail_next(usize::MAX);
    let (plan, r) = run(&s.cms, &public, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["replace"]);
    let e = r.unwrap_err();
    assert_eq!(
        e.failed,
        format!("replace key shop/web/reader (id {old_id})")
    );
    assert!(
        matches!(&e.cause, StepFailure::NewValueUnwritten { undo, .. }
            if undo.starts_with("the new key was revoked")
                && undo.ends_with(&format!("the old key {old_id} still works"))),
        "{}",
        e.cause
    );
    let left = keys(&s.cms).await;
    assert_eq!(left.len(), 1, "only the old key is left: {left:?}");
    assert_eq!(left[0]["id"], old_id.as_str());
    assert_eq!(left[0]["type"], "service");
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK
    );
    assert_eq!(value(&s.out()).as_deref(), Some(old.as_str()));

    // The next run replaces it again, this time into its Secret.
    s.sink.fail_next(0);
    let (plan, r) = run(&s.cms, &public, &s.sink, &s.clock).await;
    assert_eq!(kinds(&plan), ["replace"]);
    r.unwrap();
    let new = value(&s.out()).unwrap();
    assert_ne!(new, old);
    let now = keys(&s.cms).await;
    let types: Vec<&str> = now.iter().map(|k| k["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 2, "{now:?}");
    assert!(types.contains(&"public") && types.contains(&"service"));
    assert_eq!(
        s.cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
}
