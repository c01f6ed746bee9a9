//! The engine against an in-memory CMS and Secret store: what each action calls, what it
//! reports, how Secret writes are retried, and what happens to a value whose write fails.

use super::*;
use crate::model::secret::*;
use crate::model::{ContentOp, KeySpec};
use crate::plan::testkit::{desired, desired_with, live_of, now, settings_actions, ENDPOINT};
use crate::plan::Plan;
use crate::providers::{CallStats, IssuedKey, LiveSettings};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const VALUE: &str = "kw_0123456789abcdef_value";

/// A CMS in memory: keys by id; records every call; can be told to fail some.
#[derive(Default)]
struct FakeCms {
    keys: Mutex<BTreeMap<String, LiveKey>>,
    calls: Mutex<Vec<String>>,
    next: Mutex<u32>,
    stats: CallStats,
    /// Regenerate issues a new key (as Strapi's renewal does) instead of a new value.
    renew_as_new_key: bool,
    fail_revoke: bool,
    /// A status the next calls of this name answer.
    fail: Mutex<Option<(&'static str, u16)>>,
    expiries: Mutex<Vec<(String, Timestamp)>>,
    /// `parallel_creates`; above 1, each create takes a little while, so that they overlap.
    parallel: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    /// The key names whose create is refused.
    refuse_create: Vec<&'static str>,
}

impl FakeCms {
    fn with(keys: &[LiveKey]) -> FakeCms {
        let cms = FakeCms::default();
        for k in keys {
            cms.keys.lock().insert(k.id.clone(), k.clone());
        }
        cms
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    fn record(&self, call: String, name: &'static str) -> crate::providers::Result<()> {
        self.calls.lock().push(call);
        match *self.fail.lock() {
            Some((n, status)) if n == name => Err(ProviderError::Rejected {
                endpoint: ENDPOINT.into(),
                status,
                message: "refused".into(),
            }),
            _ => Ok(()),
        }
    }

    fn issue(&self, mut key: LiveKey) -> IssuedKey {
        let mut n = self.next.lock();
        *n += 1;
        key.id = format!("new{n}");
        key.created_at = now();
        self.keys.lock().insert(key.id.clone(), key.clone());
        IssuedKey {
            key,
            value: KeyValue::new(format!("{VALUE}{n}")),
        }
    }
}

#[async_trait]
impl CmsProvider for FakeCms {
    fn stats(&self) -> &CallStats {
        &self.stats
    }
    async fn check(&self) -> crate::providers::Result<()> {
        Ok(())
    }
    async fn list_keys(&self) -> crate::providers::Result<Vec<LiveKey>> {
        Ok(self.keys.lock().values().cloned().collect())
    }
    fn parallel_creates(&self) -> usize {
        self.parallel.max(1)
    }
    async fn create_key(&self, spec: &KeySpec) -> crate::providers::Result<IssuedKey> {
        use std::sync::atomic::Ordering::SeqCst;
        self.record(format!("create {}", spec.name), "create")?;
        // Refused at once, while the others are under way.
        if self.refuse_create.contains(&spec.name.as_str()) {
            return Err(ProviderError::Rejected {
                endpoint: ENDPOINT.into(),
                status: 503,
                message: "busy".into(),
            });
        }
        if self.parallel > 1 {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, SeqCst);
        }

        Ok(self.issue(LiveKey {
            id: String::new(),
            spec: spec.clone(),
            created_at: now(),
            rotated_at: None,
        }))
    }
    async fn update_key(&self, id: &str, spec: &KeySpec) -> crate::providers::Result<LiveKey> {
        self.record(format!("update {id}"), "update")?;
        let mut keys = self.keys.lock();
        let k = keys.get_mut(id).ok_or(ProviderError::NotFound(id.into()))?;
        k.spec = spec.clone();
        Ok(k.clone())
    }
    async fn rename_key(&self, id: &str, name: &str) -> crate::providers::Result<()> {
        self.record(format!("rename {id} {name}"), "rename")?;
        if let Some(k) = self.keys.lock().get_mut(id) {
            k.spec.name = name.to_owned();
        }
        Ok(())
    }
    async fn set_expiry(&self, id: &str, at: Timestamp) -> crate::providers::Result<()> {
        self.record(format!("expire {id}"), "expire")?;
        self.expiries.lock().push((id.to_owned(), at));
        if let Some(k) = self.keys.lock().get_mut(id) {
            k.spec.expires_at = Some(at);
        }
        Ok(())
    }
    async fn regenerate_key(
        &self,
        id: &str,
        how: crate::providers::Regeneration,
    ) -> crate::providers::Result<IssuedKey> {
        self.record(
            format!(
                "regenerate {id} grace={}s expiring={}",
                how.grace.as_secs(),
                how.expiring
            ),
            "regenerate",
        )?;
        let mut key = self.keys.lock()[id].clone();
        key.spec.expires_at = how.expires_at;
        if self.renew_as_new_key {
            return Ok(self.issue(key));
        }
        key.rotated_at = Some(now() + SignedDuration::from_secs(1));
        self.keys.lock().insert(id.to_owned(), key.clone());
        Ok(IssuedKey {
            key,
            value: KeyValue::new(format!("{VALUE}-regenerated")),
        })
    }
    async fn revoke_key(&self, id: &str) -> crate::providers::Result<()> {
        self.record(format!("revoke {id}"), "revoke")?;
        if self.fail_revoke {
            return Err(ProviderError::Unreachable {
                endpoint: ENDPOINT.into(),
                detail: "gone".into(),
            });
        }
        self.keys.lock().remove(id);
        Ok(())
    }
    async fn settings(
        &self,
        _apis: &BTreeSet<String>,
        _owner: Option<&str>,
    ) -> crate::providers::Result<LiveSettings> {
        Ok(LiveSettings::default())
    }
    async fn set_cors(
        &self,
        _owner: &str,
        origins: &BTreeSet<String>,
    ) -> crate::providers::Result<()> {
        self.record(format!("cors {origins:?}"), "cors")
    }
    async fn set_public(
        &self,
        _owner: &str,
        api: &str,
        ops: &BTreeSet<ContentOp>,
    ) -> crate::providers::Result<()> {
        self.record(format!("public {api} {}", ops.len()), "public")
    }
}

/// Secrets in memory; the next `failures` writes fail; every attempt is counted.
#[derive(Default)]
struct MemSink {
    secrets: Mutex<BTreeMap<(String, String), SecretMaterial>>,
    failures: Mutex<usize>,
    attempts: Mutex<usize>,
}

impl MemSink {
    fn failing(n: usize) -> MemSink {
        let s = MemSink::default();
        *s.failures.lock() = n;
        s
    }

    fn value(&self, name: &str) -> Option<String> {
        self.secrets
            .lock()
            .get(&("ns".to_owned(), name.to_owned()))
            .map(|m| m.value.expose().to_owned())
    }
}

#[async_trait]
impl SecretSink for MemSink {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        Ok(self
            .secrets
            .lock()
            .get(&(target.namespace.clone(), target.name.clone()))
            .map(|m| observed_from(&m.annotations, &m.data, &target.key_field)))
    }
    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        Ok(self
            .secrets
            .lock()
            .get(&(target.namespace.clone(), target.name.clone()))
            .map(|m| m.value.clone()))
    }
    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        *self.attempts.lock() += 1;
        let mut failures = self.failures.lock();
        if *failures > 0 {
            *failures -= 1;
            return Err(SinkError {
                namespace: m.target.namespace.clone(),
                name: m.target.name.clone(),
                detail: "disk full".into(),
                conflict: false,
            });
        }
        let key = (m.target.namespace.clone(), m.target.name.clone());
        let mut secrets = self.secrets.lock();
        let same = secrets
            .get(&key)
            .is_some_and(|old| old.data == m.data && old.annotations == m.annotations);
        secrets.insert(key, m.clone());
        Ok(!same)
    }
}

/// A clock whose "now" is the fixtures' `now()`.
fn fixture_clock() -> Clock {
    let c = Clock::system();
    c.advance(now().duration_since(Timestamp::now()));
    c
}

fn engine<'a>(cms: &'a FakeCms, sink: &'a MemSink) -> Engine<'a> {
    Engine {
        provider: cms,
        sink,
        endpoint: ENDPOINT.into(),
        clock: fixture_clock(),
        progress: None,
    }
}

fn plan(actions: Vec<Action>, live: &[LiveKey]) -> Plan {
    Plan {
        actions,
        problems: vec![],
        live: live.iter().map(|k| (k.id.clone(), k.clone())).collect(),
    }
}

/// `at` is within five seconds of `expected` (the engine reads the clock).
fn assert_about(expected: Timestamp, at: Timestamp) {
    assert!(
        at.duration_since(expected).as_secs().abs() <= 5,
        "{at} is not about {expected}"
    );
}

/// Key k of the fixture policy (with `extra` in its spec) as its Secret holds it.
pub(crate) fn material(extra: &str) -> SecretMaterial {
    let d = desired_with("", extra);
    SecretMaterial::new(
        &d.keys[0],
        &live_of(&d, now()),
        KeyValue::new(VALUE),
        ENDPOINT,
    )
}

#[test]
fn secret_material_debug_names_the_secret_and_hides_the_value() {
    let m = material("");
    assert_eq!(
        format!("{m:?}"),
        "SecretMaterial { secret: ns/s, key_id: \"id1\", value: KeyValue(sha256:95ee7510c4e92bcb), .. }"
    );
}

#[test]
fn secret_material_holds_the_value_templates_labels_and_annotations() {
    let m = material(
        "      secret:\n        name: s\n        keyField: KEY\n        extraFields: {URL: '{{ endpoint }}', ID: '{{ keyId }}', NAME: '{{ keyName }}', EXP: '{{ expiresAt }}'}\n        labels: {app: web}\n        annotations: {note: x}\n",
    );
    assert_eq!(
        m.data,
        BTreeMap::from([
            ("KEY".to_owned(), VALUE.to_owned()),
            ("URL".to_owned(), ENDPOINT.to_owned()),
            ("ID".to_owned(), "id1".to_owned()),
            ("NAME".to_owned(), "ns.p.k".to_owned()),
            ("EXP".to_owned(), "2030-01-31T00:00:00+00:00".to_owned()),
        ])
    );
    assert_eq!(
        m.labels,
        BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            (LABEL_MANAGED_BY.to_owned(), "keyward".to_owned()),
            (LABEL_SECRET_POLICY.to_owned(), "p".to_owned()),
        ])
    );
    assert_eq!(m.annotations["note"], "x");
    assert_eq!(m.annotations[ANN_KEY_ID], "id1");
    assert_eq!(
        m.annotations[ANN_KEY_VERSION],
        "2030-01-01T00:00:00.000000Z"
    );
    assert_eq!(m.annotations[ANN_FINGERPRINT], "sha256:95ee7510c4e92bcb");
    assert_eq!(
        m.annotations[ANN_SPEC_HASH],
        secret_spec_hash(&m.target, "id1", "2030-01-01T00:00:00.000000Z", ENDPOINT)
    );
    assert_eq!(m.annotations[ANN_CONTENT_HASH], content_hash(&m.data));
}

#[test]
fn the_selector_of_the_secrets_keyward_wrote_matches_what_it_writes() {
    let m = material("");
    let labels = manifest(&m).metadata.labels.unwrap_or_default();
    let selector = written_by_keyward();
    let (label, value) = selector.split_once('=').unwrap();
    assert_eq!(labels.get(label).map(String::as_str), Some(value));
    assert_eq!(selector, "app.kubernetes.io/managed-by=keyward");
}

#[test]
fn content_hash_is_a_known_value() {
    // sha256("URL\0http://cms\0apiKey\0kw_0123456789abcdef_value\0"), first 12 bytes, computed
    // outside keyward.
    let data = BTreeMap::from([
        ("URL".to_owned(), "http://cms".to_owned()),
        ("apiKey".to_owned(), VALUE.to_owned()),
    ]);
    assert_eq!(content_hash(&data), "d6f70f914e450e4e7884c48e");
}

#[test]
fn a_secret_says_what_it_holds_only_when_its_hashes_match() {
    let m = material("");
    let o = observed_from(&m.annotations, &m.data, "apiKey");
    assert_eq!(
        o,
        ObservedSecret {
            key_id: Some("id1".into()),
            key_version: Some("2030-01-01T00:00:00.000000Z".into()),
            spec_hash: Some(m.annotations[ANN_SPEC_HASH].clone()),
            has_value: true,
            content_intact: true,
            fingerprint: Some("sha256:95ee7510c4e92bcb".into()),
        }
    );
    // Another value under the key field: neither the value nor the content is trusted.
    let mut edited = m.data.clone();
    edited.insert("apiKey".into(), "kw_other".into());
    let o = observed_from(&m.annotations, &edited, "apiKey");
    assert!(!o.has_value && !o.content_intact);
    // An empty value is no value, even with a matching fingerprint.
    let mut ann = m.annotations.clone();
    ann.insert(ANN_FINGERPRINT.into(), crate::model::fingerprint(""));
    let mut empty = m.data.clone();
    empty.insert("apiKey".into(), String::new());
    assert!(!observed_from(&ann, &empty, "apiKey").has_value);
    // Another field edited: the value is still good, the content is not.
    let mut other = m.data.clone();
    other.insert("extra".into(), "x".into());
    let o = observed_from(&m.annotations, &other, "apiKey");
    assert!(o.has_value && !o.content_intact);
    // The value under another field name is not there.
    assert!(!observed_from(&m.annotations, &m.data, "KEY").has_value);
}

#[test]
fn rotation_is_due_renew_before_ahead_of_expiry() {
    let d = desired_with("", "      renewBefore: 3d\n");
    let live = live_of(&d, now());
    assert_eq!(
        rotation_due(&d.keys[0], &live),
        Some(now() + crate::model::days(27))
    );
    let mut forever = live;
    forever.spec.expires_at = None;
    assert_eq!(rotation_due(&d.keys[0], &forever), None);
}

#[tokio::test]
async fn a_create_gets_a_lifetime_from_the_clock_and_its_secret() {
    let d = desired("");
    let (cms, sink) = (FakeCms::default(), MemSink::default());
    let p = plan(
        vec![Action::Create {
            key: d.keys[0].clone(),
        }],
        &[],
    );
    let report = engine(&cms, &sink).apply(&p).await.unwrap();
    assert_eq!(
        report.done,
        ["created key ns/p/k (id new1) and wrote Secret ns/s"]
    );
    assert_eq!(report.secrets_written, 1);
    assert_eq!(cms.calls(), ["create ns.p.k"]);
    let key = &cms.keys.lock()["new1"];
    let expires = key.spec.expires_at.unwrap();
    assert_about(now() + crate::model::days(30), expires);
    assert_eq!(
        sink.value("s").as_deref(),
        Some(format!("{VALUE}1").as_str())
    );
}

#[tokio::test]
async fn every_action_calls_the_cms_once_and_says_what_it_did() {
    let d = desired("");
    let mut live = live_of(&d, now());
    live.spec.description = "drifted".into();
    let cms = FakeCms::with(std::slice::from_ref(&live));
    let sink = MemSink::default();
    // The Secret exists with the value; a field of it was edited.
    let mut edited = material("");
    edited.data.insert("extra".into(), "x".into());
    sink.write(&edited).await.unwrap();
    let key = d.keys[0].clone();
    let actions = vec![
        Action::Update {
            key: key.clone(),
            id: "id1".into(),
            diff: String::new(),
        },
        Action::WriteSecret {
            key: key.clone(),
            id: "id1".into(),
            reason: String::new(),
        },
        Action::Rotate {
            key: key.clone(),
            id: "id1".into(),
            reason: "lost".into(),
            grace_seconds: 60,
            expiring: false,
        },
    ];
    let [cors, public] = settings_actions(&[ContentOp::Create]);
    let actions = [
        actions,
        vec![
            cors,
            public,
            Action::Revoke {
                id: "id1".into(),
                name: "ns.p.k".into(),
                policy: "ns/p".into(),
                reason: "removed".into(),
                observe_only: false,
            },
        ],
    ]
    .concat();
    let report = engine(&cms, &sink)
        .apply(&plan(actions, std::slice::from_ref(&live)))
        .await
        .unwrap();
    assert_eq!(
        report.done,
        [
            "updated key ns/p/k (id id1)",
            "rewrote Secret ns/s",
            "rotated key ns/p/k (id id1: lost) and wrote Secret ns/s",
            "set CORS origins of ns/p to [https://a.example]",
            "set public endpoints of 'contact' for ns/p to [create]",
            "revoked key ns/p/k (id id1): removed",
        ]
    );
    assert_eq!(report.secrets_written, 2, "the rewrite and the rotation");
    assert_eq!(
        cms.calls(),
        [
            "update id1",
            "regenerate id1 grace=60s expiring=false",
            "cors {\"https://a.example\"}",
            "public contact 1",
            "revoke id1",
        ]
    );
    assert_eq!(
        sink.value("s").as_deref(),
        Some(format!("{VALUE}-regenerated").as_str())
    );
}

#[tokio::test]
async fn an_unchanged_secret_is_not_counted_as_written() {
    let d = desired("");
    let live = live_of(&d, now());
    let cms = FakeCms::with(std::slice::from_ref(&live));
    let sink = MemSink::default();
    sink.write(&material("")).await.unwrap();
    let rewrite = Action::WriteSecret {
        key: d.keys[0].clone(),
        id: "id1".into(),
        reason: String::new(),
    };
    let report = engine(&cms, &sink)
        .apply(&plan(vec![rewrite], &[live]))
        .await
        .unwrap();
    assert_eq!(report.done, ["rewrote Secret ns/s"]);
    assert_eq!(report.secrets_written, 0);
}

#[tokio::test]
async fn a_rewrite_needs_the_value_and_the_key_of_the_plan() {
    let d = desired("");
    let live = live_of(&d, now());
    let cms = FakeCms::with(std::slice::from_ref(&live));
    let sink = MemSink::default();
    let rewrite = Action::WriteSecret {
        key: d.keys[0].clone(),
        id: "id1".into(),
        reason: String::new(),
    };
    let e = engine(&cms, &sink)
        .apply(&plan(vec![rewrite.clone()], std::slice::from_ref(&live)))
        .await
        .unwrap_err();
    assert_eq!(
        e.cause.to_string(),
        "the Secret lost its value since the plan was made; run again"
    );
    assert!(e.transient);
    let e = engine(&cms, &sink)
        .apply(&plan(vec![rewrite], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.cause.to_string(), "key id1 vanished from the plan");
    assert!(!e.transient);
}

/// Ten creates for ten keys, each with its own Secret.
fn ten_creates() -> Vec<Action> {
    let d = desired("");
    (0..10)
        .map(|i| {
            let mut k = d.keys[0].clone();
            k.key = format!("k{i}");
            k.spec.name = format!("ns.p.k{i}");
            k.secret.name = format!("s{i}");
            Action::Create { key: k }
        })
        .collect()
}

#[tokio::test]
async fn creates_run_side_by_side_and_a_failure_lets_those_under_way_finish() {
    use std::sync::atomic::Ordering::SeqCst;
    let cms = FakeCms {
        parallel: 4,
        ..Default::default()
    };
    let sink = MemSink::default();
    let report = engine(&cms, &sink)
        .apply(&plan(ten_creates(), &[]))
        .await
        .unwrap();
    assert_eq!(report.secrets_written, 10);
    assert_eq!(cms.most_in_flight.load(SeqCst), 4);
    // k3 is refused: the first create goes alone, then four at a time; those under way when
    // k3 fails finish and keep their values, the rest are not attempted.
    let cms = FakeCms {
        parallel: 4,
        refuse_create: vec!["ns.p.k3"],
        ..Default::default()
    };
    let sink = MemSink::default();
    let e = engine(&cms, &sink)
        .apply(&plan(ten_creates(), &[]))
        .await
        .unwrap_err();
    assert_eq!(e.failed, "create key ns/p/k3");
    let mut done: Vec<&str> = e.done.iter().map(|d| &d[..20]).collect();
    done.sort();
    assert_eq!(
        done,
        [
            "created key ns/p/k0 ",
            "created key ns/p/k1 ",
            "created key ns/p/k2 ",
            "created key ns/p/k4 "
        ]
    );
    for s in ["s0", "s1", "s2", "s4"] {
        assert!(sink.value(s).is_some(), "{s} lost its value");
    }
    assert_eq!(
        e.not_attempted,
        (5..10)
            .map(|i| format!("create key ns/p/k{i}"))
            .collect::<Vec<_>>()
    );
}

/// Two creates of one batch refused: the first is the failure, the second is reported beside it
/// (`also_failed`, and in the report a person reads), those under way finish, the rest are not
/// attempted. `also_failed` was asserted nowhere.
#[tokio::test]
async fn several_creates_failing_in_one_batch_are_all_reported() {
    let cms = FakeCms {
        parallel: 4,
        refuse_create: vec!["ns.p.k2", "ns.p.k3"],
        ..Default::default()
    };
    let sink = MemSink::default();
    let e = engine(&cms, &sink)
        .apply(&plan(ten_creates(), &[]))
        .await
        .unwrap_err();
    assert_eq!(e.failed, "create key ns/p/k2");
    assert_eq!(
        e.also_failed
            .iter()
            .map(|(what, _)| what.as_str())
            .collect::<Vec<_>>(),
        ["create key ns/p/k3"]
    );
    assert!(e.transient, "503s: worth running again");
    let mut done: Vec<&str> = e.done.iter().map(|d| &d[..20]).collect();
    done.sort();
    assert_eq!(
        done,
        [
            "created key ns/p/k0 ",
            "created key ns/p/k1 ",
            "created key ns/p/k4 "
        ]
    );
    assert_eq!(
        e.not_attempted,
        (5..10)
            .map(|i| format!("create key ns/p/k{i}"))
            .collect::<Vec<_>>()
    );
    let told = e.report();
    assert!(
        told.contains("  failed:        create key ns/p/k2: ")
            && told.contains("  also failed:   create key ns/p/k3: "),
        "{told}"
    );
    assert!(
        e.to_string().contains("; also failed: create key ns/p/k3"),
        "{e}"
    );
}

#[tokio::test]
async fn a_failure_stops_the_apply_and_lists_the_rest() {
    let d = desired("");
    let live = live_of(&d, now());
    let cms = FakeCms::with(std::slice::from_ref(&live));
    *cms.fail.lock() = Some(("update", 503));
    let sink = MemSink::default();
    let key = d.keys[0].clone();
    let mut k2 = key.clone();
    k2.key = "k2".into();
    k2.spec.name = "ns.p.k2".into();
    let actions = vec![
        Action::Create { key: k2 },
        Action::Update {
            key: key.clone(),
            id: "id1".into(),
            diff: String::new(),
        },
        Action::SetCors {
            policy: "ns/p".into(),
            owner: "policy:ns.p".into(),
            observe_only: false,
            from: BTreeSet::new(),
            to: BTreeSet::new(),
        },
        Action::Revoke {
            id: "id1".into(),
            name: "ns.p.k".into(),
            policy: "ns/p".into(),
            reason: String::new(),
            observe_only: false,
        },
    ];
    let e = engine(&cms, &sink)
        .apply(&plan(actions, &[live]))
        .await
        .unwrap_err();
    assert_eq!(
        e.done,
        ["created key ns/p/k2 (id new1) and wrote Secret ns/s"]
    );
    assert_eq!(e.failed, "update key ns/p/k (id id1)");
    assert_eq!(e.cause.to_string(), "http://cms answered 503: refused");
    assert_eq!(
        e.not_attempted,
        ["set CORS origins of ns/p", "revoke key ns/p/k (id id1)"]
    );
    assert!(e.transient, "a 503 is worth retrying");
    assert_eq!(
        e.report(),
        "  done:          created key ns/p/k2 (id new1) and wrote Secret ns/s\n  failed:        update key ns/p/k (id id1): http://cms answered 503: refused\n  not attempted: set CORS origins of ns/p\n  not attempted: revoke key ns/p/k (id id1)\n"
    );
    assert_eq!(
        e.to_string(),
        "update key ns/p/k (id id1): http://cms answered 503: refused"
    );
    // A refusal is not transient.
    *cms.fail.lock() = Some(("update", 422));
    let e = engine(&cms, &sink)
        .apply(&plan(
            vec![Action::Update {
                key,
                id: "id1".into(),
                diff: String::new(),
            }],
            &[],
        ))
        .await
        .unwrap_err();
    assert!(!e.transient);
    assert!(e.not_attempted.is_empty());
}

#[tokio::test]
async fn the_other_actions_are_described_by_what_they_would_do() {
    let d = desired("");
    let key = d.keys[0].clone();
    let cms = FakeCms::default();
    *cms.fail.lock() = Some(("create", 500));
    let sink = MemSink::default();
    let actions = vec![
        Action::Create { key: key.clone() },
        Action::Replace {
            key: key.clone(),
            old_id: "id0".into(),
            diff: String::new(),
        },
        Action::Rotate {
            key: key.clone(),
            id: "id1".into(),
            reason: String::new(),
            grace_seconds: 0,
            expiring: false,
        },
        Action::WriteSecret {
            key,
            id: "id1".into(),
            reason: String::new(),
        },
        Action::SetPublic {
            policy: "ns/p".into(),
            owner: "policy:ns.p".into(),
            observe_only: false,
            api: "blog".into(),
            from: BTreeSet::new(),
            to: BTreeSet::new(),
        },
    ];
    let e = engine(&cms, &sink)
        .apply(&plan(actions, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.failed, "create key ns/p/k");
    assert_eq!(
        e.not_attempted,
        [
            "replace key ns/p/k (id id0)",
            "rotate key ns/p/k (id id1)",
            "rewrite Secret ns/s",
            "set public endpoints of 'blog' for ns/p",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_secret_write_is_tried_three_times_with_growing_waits() {
    let d = desired("");
    let create = || {
        plan(
            vec![Action::Create {
                key: d.keys[0].clone(),
            }],
            &[],
        )
    };
    // Two failures: the third attempt writes it, after waiting 200 ms then 400 ms (each with up
    // to as much again of jitter).
    let waited = |started: tokio::time::Instant| {
        let e = started.elapsed();
        assert!(
            e >= std::time::Duration::from_millis(600)
                && e <= std::time::Duration::from_millis(1200),
            "{e:?}"
        );
    };
    let (cms, sink) = (FakeCms::default(), MemSink::failing(2));
    let started = tokio::time::Instant::now();
    let report = engine(&cms, &sink).apply(&create()).await.unwrap();
    waited(started);
    assert_eq!(*sink.attempts.lock(), 3);
    assert_eq!(report.secrets_written, 1);
    assert!(sink.value("s").is_some());
    // Three failures: given up after the third attempt, without waiting after it.
    let (cms, sink) = (FakeCms::default(), MemSink::failing(3));
    let started = tokio::time::Instant::now();
    let e = engine(&cms, &sink).apply(&create()).await.unwrap_err();
    waited(started);
    assert_eq!(*sink.attempts.lock(), 3);
    assert_eq!(
        e.cause.to_string(),
        "created key new1 but could not write its Secret (Secret ns/s: disk full); the new key was revoked; the next run creates it again"
    );
    assert!(e.transient);
    assert_eq!(cms.calls(), ["create ns.p.k", "revoke new1"]);
    assert!(cms.keys.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_key_that_cannot_be_revoked_either_is_reported() {
    let d = desired("");
    let cms = FakeCms {
        fail_revoke: true,
        ..Default::default()
    };
    let sink = MemSink::failing(usize::MAX);
    let e = engine(&cms, &sink)
        .apply(&plan(
            vec![Action::Create {
                key: d.keys[0].clone(),
            }],
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.cause.to_string(),
        "created key new1 but could not write its Secret (Secret ns/s: disk full); revoking the new key failed too (cannot reach http://cms: gone); the next run regenerates it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_regenerated_value_that_cannot_be_written_keeps_its_key() {
    let d = desired("");
    let live = live_of(&d, now());
    let cms = FakeCms::with(std::slice::from_ref(&live));
    let sink = MemSink::failing(usize::MAX);
    let rotate = Action::Rotate {
        key: d.keys[0].clone(),
        id: "id1".into(),
        reason: String::new(),
        grace_seconds: 30,
        expiring: true,
    };
    let e = engine(&cms, &sink)
        .apply(&plan(vec![rotate], &[live]))
        .await
        .unwrap_err();
    assert_eq!(
        e.cause.to_string(),
        "regenerated key id1 but could not write its Secret (Secret ns/s: disk full); the old value stays valid 30s and the next run regenerates again"
    );
    assert_eq!(cms.calls(), ["regenerate id1 grace=30s expiring=true"]);
    assert!(cms.keys.lock().contains_key("id1"));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_issued_as_a_new_key_is_revoked_when_its_secret_cannot_be_written() {
    let d = desired("");
    let live = live_of(&d, now());
    let cms = FakeCms {
        renew_as_new_key: true,
        ..FakeCms::with(std::slice::from_ref(&live))
    };
    let rotate = Action::Rotate {
        key: d.keys[0].clone(),
        id: "id1".into(),
        reason: String::new(),
        grace_seconds: 0,
        expiring: true,
    };
    let sink = MemSink::failing(usize::MAX);
    let e = engine(&cms, &sink)
        .apply(&plan(vec![rotate.clone()], std::slice::from_ref(&live)))
        .await
        .unwrap_err();
    assert_eq!(
        e.cause.to_string(),
        "renewed key id1 as a new key new1 but could not write its Secret (Secret ns/s: disk full); the new key was revoked; the next run renews it again"
    );
    assert_eq!(
        cms.calls(),
        ["regenerate id1 grace=0s expiring=true", "revoke new1"]
    );
    // Written: the renewal's new key stays, and so does the old one (it expires on its own).
    let sink = MemSink::default();
    let report = engine(&cms, &sink)
        .apply(&plan(vec![rotate], &[live]))
        .await
        .unwrap();
    assert_eq!(report.secrets_written, 1);
    assert!(!cms.calls().contains(&"revoke new2".to_owned()));
    assert!(cms.keys.lock().contains_key("new2") && cms.keys.lock().contains_key("id1"));
    // The new value's expiry is the lifetime from the clock.
    let exp = cms.keys.lock()["new2"].spec.expires_at.unwrap();
    assert_about(now() + crate::model::days(30), exp);
}

#[tokio::test]
async fn a_replace_parks_the_old_key_and_lets_it_expire_after_the_overlap() {
    for (overlap, keep) in [
        ("      rotationOverlap: 10m\n", 605),
        // No overlap: the old key still gets a minute to be parked and expire.
        ("      rotationOverlap: 0s\n", 65),
        ("", 905),
    ] {
        let d = desired_with("", overlap);
        let mut live = live_of(&d, now());
        live.spec.key_type = crate::model::KeyType::Public;
        let cms = FakeCms::with(std::slice::from_ref(&live));
        let sink = MemSink::default();
        let replace = Action::Replace {
            key: d.keys[0].clone(),
            old_id: "id1".into(),
            diff: String::new(),
        };
        let report = engine(&cms, &sink)
            .apply(&plan(vec![replace], &[live]))
            .await
            .unwrap();
        assert_eq!(
            report.done,
            [format!(
                "replaced key ns/p/k (old id id1 expires in {keep}s, new id new1)"
            )]
        );
        assert_eq!(report.secrets_written, 1);
        assert_eq!(
            cms.calls(),
            [
                "rename id1 replaced.id1.ns.p.k",
                "create ns.p.k",
                "expire id1"
            ]
        );
        let (id, at) = cms.expiries.lock()[0].clone();
        assert_eq!(id, "id1");
        assert_about(now() + SignedDuration::from_secs(keep), at);
        let exp = cms.keys.lock()["new1"].spec.expires_at.unwrap();
        assert_about(now() + crate::model::days(30), exp);
    }
}

/// A replace that stops part way is finished by the next run, whichever step failed: the key
/// downgraded from service to public is revoked or expires within the overlap, and the
/// replacement's value is in its Secret. Before, a failure at the expiry step left the parked
/// old key working with its write rights for the rest of its lifetime, and no plan said so.
#[tokio::test]
async fn an_interrupted_replace_is_finished_by_the_next_plan() {
    let d = desired_with("", "      type: public\n");
    let keep = crate::plan::replace_overlap(&d.keys[0]);
    for step in ["rename", "create", "expire"] {
        let mut live = live_of(&d, now());
        live.spec.key_type = crate::model::KeyType::Service;
        let (cms, sink) = (FakeCms::with(&[live]), MemSink::default());
        let plan_now = |cms: &FakeCms, observed: ObservedSecrets| {
            let live = cms.keys.lock().values().cloned().collect::<Vec<_>>();
            crate::plan::diff(
                &d,
                &live,
                &LiveSettings::default(),
                &observed,
                ENDPOINT,
                now(),
            )
        };
        let first = plan_now(&cms, observe_secrets(&sink, &d.keys).await.unwrap());
        assert!(
            matches!(first.actions.as_slice(), [Action::Replace { .. }]),
            "{step}: {:?}",
            first.actions
        );
        *cms.fail.lock() = Some((step, 500));
        assert!(engine(&cms, &sink).apply(&first).await.is_err(), "{step}");
        *cms.fail.lock() = None;
        if step == "expire" {
            let old = cms.keys.lock()["id1"].spec.expires_at.unwrap();
            assert!(
                old > now() + crate::model::days(1),
                "the failed step left the old key's expiry as it was: {old}"
            );
        }
        let next = plan_now(&cms, observe_secrets(&sink, &d.keys).await.unwrap());
        engine(&cms, &sink).apply(&next).await.unwrap();
        let keys = cms.keys.lock().clone();
        let still = keys.get("id1").and_then(|k| k.spec.expires_at);
        assert!(
            still.is_none_or(|e| e <= now() + keep + SignedDuration::from_secs(5)),
            "{step}: the old key still works until {still:?}"
        );
        let replacement = keys
            .values()
            .find(|k| k.id != "id1" && k.spec.name == "ns.p.k")
            .unwrap_or_else(|| panic!("{step}: no replacement in {keys:?}"));
        assert_eq!(replacement.spec.key_type, crate::model::KeyType::Public);
        assert!(
            sink.value("s").is_some(),
            "{step}: the Secret holds the new value"
        );
        // And then the plan is empty: nothing left to finish.
        let after = plan_now(&cms, observe_secrets(&sink, &d.keys).await.unwrap());
        assert!(after.actions.is_empty(), "{step}: {:?}", after.actions);
    }
}

#[tokio::test]
async fn a_long_key_name_is_parked_under_a_name_the_cms_takes() {
    let d = desired("");
    let mut key = d.keys[0].clone();
    key.spec.name = "n".repeat(120);
    let mut live = live_of(&d, now());
    live.spec.key_type = crate::model::KeyType::Public;
    let cms = FakeCms::with(std::slice::from_ref(&live));
    let sink = MemSink::default();
    let replace = Action::Replace {
        key,
        old_id: "id1".into(),
        diff: String::new(),
    };
    engine(&cms, &sink)
        .apply(&plan(vec![replace], &[live]))
        .await
        .unwrap();
    let renamed = cms.calls()[0].clone();
    let parked = renamed.strip_prefix("rename id1 ").unwrap();
    assert_eq!(parked.chars().count(), 100);
    assert!(parked.starts_with("replaced.id1.nnn"));
}

#[tokio::test]
async fn observe_secrets_reads_each_desired_secret() {
    let d = desired("");
    let sink = MemSink::default();
    assert!(observe_secrets(&sink, &d.keys).await.unwrap().is_empty());
    sink.write(&material("")).await.unwrap();
    let seen = observe_secrets(&sink, &d.keys).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[&("ns".to_owned(), "s".to_owned())].has_value);
}

/// Lifetimes from manifests and expiries from CMS answers are hostile: whatever they are, and
/// whenever "now" is, validation, the plan, the renewal time and the engine answer with an
/// error or a result, never a panic (a panic in a reconcile would stop every tenant's).
mod hostile_times {
    use super::*;
    use crate::plan::diff;
    use crate::policy::load::load_str;
    use crate::policy::validate::resolve;
    use crate::policy::ProviderKind;
    use proptest::prelude::*;

    fn duration_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "([0-9]{1,4}[smhdwy]){1,6}",
            "([0-9]{1,19}[smhdwy]){1,3}",
            (1usize..120).prop_map(|n| "99y".repeat(n)),
            ".{0,40}",
        ]
    }

    fn instant() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            Just(Timestamp::MIN),
            Just(Timestamp::MAX),
            (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
                .prop_map(|s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)),
        ]
    }

    fn clock_at(at: Timestamp) -> Clock {
        let c = Clock::system();
        c.advance(at.duration_since(Timestamp::now()));
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200)
        ))]
        #[test]
        fn no_lifetime_or_expiry_panics(
            expires_after in duration_text(),
            renew_before in duration_text(),
            overlap in duration_text(),
            now in instant(),
            cms_expiry in instant(),
            created in instant(),
        ) {
            let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
            let yaml = format!(
                "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n  keys:\n    - name: k\n      defaultPermissions: [GET]\n      expiresAfter: {}\n      renewBefore: {}\n      rotationOverlap: {}\n      secret: {{name: s}}\n",
                quote(&expires_after), quote(&renew_before), quote(&overlap)
            );
            let Ok(set) = load_str("p.yaml", &yaml) else { return Ok(()) };
            let Ok(resolved) = resolve(&set, now, None, ProviderKind::Keyward) else {
                return Ok(())
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            for d in resolved.desired.values() {
                let mut spec = d.keys[0].spec.clone();
                spec.expires_at = Some(cms_expiry);
                let live = LiveKey { id: "id1".into(), spec, created_at: created, rotated_at: None };
                let _ = rotation_due(&d.keys[0], &live);
                for keys in [vec![], vec![live.clone()]] {
                    let plan = diff(d, &keys, &LiveSettings::default(), &ObservedSecrets::new(), ENDPOINT, now);
                    let (cms, sink) = (FakeCms::with(&keys), MemSink::default());
                    let engine = Engine { provider: &cms, sink: &sink, endpoint: ENDPOINT.into(), clock: clock_at(now), progress: None };
                    let _ = rt.block_on(engine.apply(&plan));
                }
            }
        }
    }
}
