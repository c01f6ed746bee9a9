//! Fixtures for the plan's and the engine's unit tests: one policy `ns/p` with one key `k`
//! (GET, 30 days, Secret `ns/s`), its live key `id1` and its Secret as keyward wrote it, all at
//! a fixed "now" so versions and hashes are known values.

use super::diff::{diff, Action, Plan};
use crate::model::desired::DesiredState;
use crate::model::live::{LiveKey, LiveSettings};
use crate::model::secret::{ObservedSecret, ObservedSecrets};
use crate::policy::load::load_str;
use crate::policy::validate::resolve;
use crate::policy::ProviderKind;
use jiff::Timestamp;

pub const ENDPOINT: &str = "http://cms";

/// The fixed "now" of the fixtures.
pub fn now() -> Timestamp {
    "2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
}

/// The version of a key created at `now()`.
pub const VERSION: &str = "2030-01-01T00:00:00.000000Z";

/// `secret_spec_hash` of the fixture's Secret (`ns/s`, field `apiKey`, nothing else) for key
/// `id1` created at `now()`, on `ENDPOINT`: a known value, computed outside keyward as
/// `sha256('{"e":"http://cms","id":"id1","t":{"annotations":{},"extraFields":{},
/// "keyField":"apiKey","labels":{},"name":"s","namespace":"ns"},"v":"2030-01-01T00:00:00.000000Z"}')`
/// (no spaces), first 12 bytes in hex.
pub const FIXTURE_SPEC_HASH: &str = "aeb126c91901f9fd5d9daa3a";

/// The policy with `extra` spec lines (indented two spaces) and `key_extra` lines for the key
/// (indented six spaces; they may declare the key's `secret`).
pub fn desired_with(extra: &str, key_extra: &str) -> DesiredState {
    let secret = if key_extra.contains("      secret:") {
        ""
    } else {
        "      secret: {name: s}\n"
    };
    let yaml = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{extra}  keys:\n    - name: k\n      defaultPermissions: [GET]\n      expiresAfter: 30d\n{key_extra}{secret}"
    );
    let set = load_str("p.yaml", &yaml).unwrap();
    resolve(&set, now(), None, ProviderKind::Keyward)
        .unwrap()
        .desired
        .into_values()
        .next()
        .unwrap()
}

pub fn desired(extra: &str) -> DesiredState {
    desired_with(extra, "")
}

/// The live key of `d`'s first key, created at `now`, expiring 30 days later.
pub fn live_of(d: &DesiredState, now: Timestamp) -> LiveKey {
    let mut spec = d.keys[0].spec.clone();
    spec.expires_at = Some(now + crate::model::days(30));
    LiveKey {
        id: "id1".into(),
        spec,
        created_at: now,
        rotated_at: None,
    }
}

/// The Secret of `live_of(d, now())` as keyward wrote it.
pub fn secrets_for(live: &LiveKey) -> ObservedSecrets {
    assert_eq!(
        (live.id.as_str(), live.version().as_str()),
        ("id1", VERSION),
        "FIXTURE_SPEC_HASH is for this key"
    );
    ObservedSecrets::from([(
        ("ns".into(), "s".into()),
        ObservedSecret {
            key_id: Some("id1".into()),
            key_version: Some(VERSION.into()),
            spec_hash: Some(FIXTURE_SPEC_HASH.into()),
            has_value: true,
            content_intact: true,
            fingerprint: None,
        },
    )])
}

/// The plan for `d` against `live` and `secrets`, no settings, at `now()`.
pub fn plan_for(d: &DesiredState, live: &[LiveKey], secrets: &ObservedSecrets) -> Plan {
    diff(d, live, &LiveSettings::default(), secrets, ENDPOINT, now())
}

/// The action kinds planned for one live key observed with `secrets`.
pub fn kinds_for(d: &DesiredState, live: &LiveKey, secrets: &ObservedSecrets) -> Vec<&'static str> {
    kinds(&plan_for(d, std::slice::from_ref(live), secrets))
}

pub fn kinds(p: &Plan) -> Vec<&'static str> {
    p.actions.iter().map(kind).collect()
}

pub fn kind(a: &Action) -> &'static str {
    match a {
        Action::Create { .. } => "create",
        Action::Adopt { .. } => "adopt",
        Action::Update { .. } => "update",
        Action::Rotate { .. } => "rotate",
        Action::Replace { .. } => "replace",
        Action::WriteSecret { .. } => "secret",
        Action::Revoke { .. } => "revoke",
        Action::SetCors { .. } => "cors",
        Action::SetPublic { .. } => "public",
    }
}

/// Policy ns/p's settings changes: CORS origin `https://a.example`, and `public` as the public
/// operations of API `contact`.
pub fn settings_actions(public: &[crate::model::ContentOp]) -> [Action; 2] {
    [
        Action::SetCors {
            policy: "ns/p".into(),
            owner: "policy:ns.p".into(),
            observe_only: false,
            from: Default::default(),
            to: ["https://a.example".to_owned()].into(),
        },
        Action::SetPublic {
            policy: "ns/p".into(),
            owner: "policy:ns.p".into(),
            observe_only: false,
            api: "contact".into(),
            from: Default::default(),
            to: public.iter().copied().collect(),
        },
    ]
}
