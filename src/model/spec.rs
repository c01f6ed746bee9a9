//! A key's declared settings and the offline rules of the seeds that every key must satisfy.

use super::rights::{ContentPermission, ManagementPermission, Scope};
use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Kontent.ai's key kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Delivery / content keys: content permissions and scopes.
    #[default]
    Content,
    /// Management keys: a fixed set of management permissions.
    Management,
    /// Personal keys: inherit their owning member's role at request time.
    Personal,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Management => "management",
            Self::Personal => "personal",
        }
    }
}

/// The scoped CMS's key types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// For browsers: may hold read rights only.
    Public,
    /// For servers.
    #[default]
    Service,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Service => "service",
        }
    }
}

/// Individual permissions for one API; they replace the defaults for that API entirely.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ApiPermission {
    /// The API (a content type's endpoint name, e.g. `blog`).
    pub api: String,
    /// What the key may do on that API, each once (GET_ALL_DRAFTS and GET_ALL_CLOSED need
    /// GET); empty: nothing, even where the defaults allow it.
    #[schemars(
        length(max = 7),
        extend(
            "x-kubernetes-list-type" = "set",
            "x-kubernetes-validations" = [DRAFTS_NEED_GET]
        )
    )]
    pub permissions: Vec<ContentPermission>,
}

/// The CRD's CEL rule on a permission list: what `check_permission_set` checks.
pub const DRAFTS_NEED_GET: CelRule = CelRule {
    rule: "!self.exists(p, p == 'GET_ALL_DRAFTS' || p == 'GET_ALL_CLOSED') || self.exists(p, p == 'GET')",
    message: "GET_ALL_DRAFTS and GET_ALL_CLOSED require GET in the same set",
};

/// A CEL validation rule of the CRD (`x-kubernetes-validations`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CelRule {
    pub rule: &'static str,
    pub message: &'static str,
}

/// Every setting of a key that its owner declares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: KeyKind,
    #[serde(default, rename = "type")]
    pub key_type: KeyType,
    #[serde(default)]
    pub default_permissions: Vec<ContentPermission>,
    #[serde(default)]
    pub api_permissions: Vec<ApiPermission>,
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Empty means every environment.
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub management_permissions: Vec<ManagementPermission>,
    /// The member who owns a personal key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Absent means the kind's default lifetime from creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Free-form tags, e.g. the identity of the policy that owns the key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A rule of the key model that a spec breaks, with the field it is about. The value that
/// broke it is kept apart from the reason: a manifest's author is shown it (`explained`), a
/// caller of the reference CMS never is (what it sent could be a key pasted in the wrong field).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SpecError {
    pub path: String,
    pub reason: String,
    /// The offending value, shown only where it came from a file (see `explained`).
    pub value: Option<String>,
}

impl SpecError {
    pub fn new(path: impl Into<String>, reason: impl fmt::Display) -> Self {
        SpecError {
            path: path.into(),
            reason: reason.to_string(),
            value: None,
        }
    }

    /// A rule that `value` breaks; `reason` says why without repeating it.
    pub fn about(path: impl Into<String>, value: &str, reason: impl fmt::Display) -> Self {
        SpecError {
            value: Some(value.to_owned()),
            ..SpecError::new(path, reason)
        }
    }

    /// The reason with the value it is about, for a person fixing a manifest.
    pub fn explained(&self) -> String {
        match &self.value {
            Some(v) => format!("'{v}' {}", self.reason),
            None => self.reason.clone(),
        }
    }
}

/// Default and allowed lifetimes of a key kind (Kontent.ai's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryRules {
    pub default: SignedDuration,
    pub min: SignedDuration,
    pub max: SignedDuration,
}

pub fn expiry_rules(kind: KeyKind) -> ExpiryRules {
    match kind {
        KeyKind::Content => ExpiryRules {
            default: super::days(365),
            min: SignedDuration::from_mins(1),
            max: super::days(5 * 365 + 1),
        },
        KeyKind::Management | KeyKind::Personal => ExpiryRules {
            default: super::days(182),
            min: SignedDuration::from_mins(1),
            max: super::days(2 * 365),
        },
    }
}

/// Slack for the time a request takes between a client computing an expiry and us checking it.
const EXPIRY_SLACK: SignedDuration = SignedDuration::from_secs(5);

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

/// API and environment names: lowercase slugs, as they appear in URL paths.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Sorted, deduplicated lists: two specs that mean the same compare equal.
pub fn normalize(mut s: KeySpec) -> KeySpec {
    s.default_permissions.sort();
    s.default_permissions.dedup();
    for a in &mut s.api_permissions {
        a.permissions.sort();
        a.permissions.dedup();
    }
    s.api_permissions.sort();
    s.scopes.sort();
    s.scopes.dedup();
    s.environments.sort();
    s.environments.dedup();
    s.management_permissions.sort();
    s.management_permissions.dedup();
    s
}

/// Most labels a key may carry.
pub const MAX_LABELS: usize = 64;

/// A Kubernetes label name segment or value: at most 63 characters, alphanumerics at both ends,
/// `-`, `_` and `.` between (a value may also be empty).
fn valid_label_segment(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain of at most 253 characters.
pub fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_label_segment(name)
}

/// A Kubernetes label value.
pub fn valid_label_value(v: &str) -> bool {
    valid_label_segment(v)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if labels.len() > MAX_LABELS {
        return Err(SpecError::new(
            "labels",
            format!("at most {MAX_LABELS} labels, not {}", labels.len()),
        ));
    }
    for (k, v) in labels {
        if !valid_label_key(k) {
            return Err(SpecError::new(
                "labels",
                "a label key must be [prefix/]name: a DNS subdomain prefix and a name of at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends",
            ));
        }
        if !valid_label_value(v) {
            return Err(SpecError::new(
                format!("labels.{k}"),
                "a label value must be at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends",
            ));
        }
    }
    Ok(())
}

impl KeySpec {
    /// The content permissions this key's scopes grant on every API.
    pub fn scope_grants(&self) -> BTreeSet<ContentPermission> {
        self.scopes
            .iter()
            .flat_map(|s| {
                ContentPermission::ALL
                    .into_iter()
                    .filter(move |p| s.content_grants().contains(*p))
            })
            .collect()
    }

    /// This spec as a CMS that holds only rights (no scopes, no expiry) reports it back, with
    /// the rights it reports.
    pub fn held_as_rights(
        &self,
        default_permissions: Vec<ContentPermission>,
        api_permissions: Vec<ApiPermission>,
    ) -> KeySpec {
        normalize(KeySpec {
            description: self.description.trim().to_owned(),
            default_permissions,
            api_permissions,
            scopes: Vec::new(),
            expires_at: None,
            ..self.clone()
        })
    }

    /// The rights on `api` before scopes: individual permissions replace the defaults.
    pub fn permissions_for(&self, api: &str) -> &[ContentPermission] {
        self.api_permissions
            .iter()
            .find(|a| a.api == api)
            .map(|a| a.permissions.as_slice())
            .unwrap_or(&self.default_permissions)
    }

    /// Checks every rule that needs no live state; `now` anchors the expiry range.
    pub fn validate(&self, now: Timestamp) -> Result<(), SpecError> {
        match self.problems(now).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every broken rule (the first of each field), for a person who wants to fix them all.
    pub fn problems(&self, now: Timestamp) -> Vec<SpecError> {
        let mut out = Vec::new();
        if !valid_name(&self.name) {
            out.push(SpecError::new(
                "name",
                "must be 1-100 characters of letters, digits, space, '-', '_' or '.'",
            ));
        }
        if self.description.len() > 1000 {
            out.push(SpecError::new(
                "description",
                "must be at most 1000 characters",
            ));
        }
        out.extend(check_permission_set("defaultPermissions", &self.default_permissions).err());
        let mut apis = BTreeSet::new();
        for (i, ap) in self.api_permissions.iter().enumerate() {
            if !valid_slug(&ap.api) {
                out.push(SpecError::about(
                    format!("apiPermissions[{i}].api"),
                    &ap.api,
                    "is not an API name (lowercase letters, digits, '-', '_')",
                ));
            } else if !apis.insert(ap.api.as_str()) {
                out.push(SpecError::about(
                    format!("apiPermissions[{i}].api"),
                    &ap.api,
                    "is listed twice (each API once)",
                ));
            }
            out.extend(
                check_permission_set(&format!("apiPermissions[{i}].permissions"), &ap.permissions)
                    .err(),
            );
        }
        out.extend(check_unique("scopes", &self.scopes).err());
        out.extend(check_unique("managementPermissions", &self.management_permissions).err());
        out.extend(check_unique("environments", &self.environments).err());
        for (i, env) in self.environments.iter().enumerate() {
            if !valid_slug(env) {
                out.push(SpecError::about(
                    format!("environments[{i}]"),
                    env,
                    "is not an environment name (lowercase letters, digits, '-', '_')",
                ));
            }
        }
        out.extend(check_labels(&self.labels).err());
        out.extend(self.check_kind().err());
        out.extend(self.check_type().err());
        out.extend(self.check_expiry(now).err());
        out
    }

    fn check_expiry(&self, now: Timestamp) -> Result<(), SpecError> {
        if let Some(at) = self.expires_at {
            let rules = expiry_rules(self.kind);
            let life = at.duration_since(now);
            if life < rules.min - EXPIRY_SLACK || life > rules.max + EXPIRY_SLACK {
                return Err(SpecError::new(
                    "expiresAt",
                    format!(
                        "{} keys must expire between {} and {} from now; {} is {}",
                        self.kind.as_str(),
                        human(rules.min),
                        human(rules.max),
                        super::rfc3339(at),
                        if life < rules.min {
                            "too soon"
                        } else {
                            "too far away"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn has_content_rights(&self) -> bool {
        !self.default_permissions.is_empty()
            || !self.api_permissions.is_empty()
            || !self.scopes.is_empty()
    }

    fn check_kind(&self) -> Result<(), SpecError> {
        match self.kind {
            KeyKind::Content => {
                if !self.management_permissions.is_empty() {
                    return Err(SpecError::new(
                        "managementPermissions",
                        "content keys cannot hold management permissions; use kind: management",
                    ));
                }
            }
            KeyKind::Management => {
                if self.management_permissions.is_empty() {
                    return Err(SpecError::new(
                        "managementPermissions",
                        "a management key needs at least one management permission",
                    ));
                }
                if self.has_content_rights() {
                    return Err(SpecError::new(
                        "defaultPermissions",
                        "management keys hold management permissions only, not content permissions or scopes",
                    ));
                }
            }
            KeyKind::Personal => {
                if self.owner.as_deref().is_none_or(str::is_empty) {
                    return Err(SpecError::new(
                        "owner",
                        "a personal key needs the member who owns it",
                    ));
                }
                if self.has_content_rights() || !self.management_permissions.is_empty() {
                    return Err(SpecError::new(
                        "kind",
                        "personal keys inherit their owner's role and cannot declare permissions or scopes",
                    ));
                }
            }
        }
        if self.kind != KeyKind::Personal && self.owner.is_some() {
            return Err(SpecError::new("owner", "only personal keys have an owner"));
        }
        Ok(())
    }

    fn check_type(&self) -> Result<(), SpecError> {
        if self.key_type != KeyType::Public {
            return Ok(());
        }
        if self.kind != KeyKind::Content {
            return Err(SpecError::new(
                "type",
                "public keys must be content keys (read rights only)",
            ));
        }
        let write = |perms: &[ContentPermission]| perms.iter().find(|p| p.is_write()).copied();
        if let Some(p) = write(&self.default_permissions) {
            return Err(SpecError::new(
                "defaultPermissions",
                format!("a public key may hold read rights only, not {p}"),
            ));
        }
        for (i, ap) in self.api_permissions.iter().enumerate() {
            if let Some(p) = write(&ap.permissions) {
                return Err(SpecError::new(
                    format!("apiPermissions[{i}].permissions"),
                    format!("a public key may hold read rights only, not {p}"),
                ));
            }
        }
        if let Some(s) = self.scopes.iter().find(|s| s.is_write()) {
            return Err(SpecError::new(
                "scopes",
                format!("a public key may hold read rights only, not scope '{s}'"),
            ));
        }
        Ok(())
    }
}

fn check_permission_set(path: &str, perms: &[ContentPermission]) -> Result<(), SpecError> {
    check_unique(path, perms)?;
    if !perms.contains(&ContentPermission::Get) {
        for needs_get in [
            ContentPermission::GetAllDrafts,
            ContentPermission::GetAllClosed,
        ] {
            if perms.contains(&needs_get) {
                return Err(SpecError::new(
                    path,
                    format!("{needs_get} requires GET in the same set"),
                ));
            }
        }
    }
    Ok(())
}

fn check_unique<T: PartialEq + fmt::Debug>(path: &str, items: &[T]) -> Result<(), SpecError> {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(SpecError::new(
                format!("{path}[{i}]"),
                format!("{item:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// A duration as a person says it: "1 minute", "2 years".
pub fn human(d: SignedDuration) -> String {
    let mins = d.as_mins();
    let (n, unit) = if mins % (365 * 24 * 60) == 0 || mins > 400 * 24 * 60 {
        (mins / (365 * 24 * 60), "year")
    } else if mins % (24 * 60) == 0 {
        (mins / (24 * 60), "day")
    } else if mins % 60 == 0 {
        (mins / 60, "hour")
    } else {
        (mins, "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_kubernetes_rules() {
        for k in ["app", "keyward.dev/policy", "a.b-c/x_y.z", "A1"] {
            assert!(valid_label_key(k), "{k}");
        }
        for k in [
            "",
            "-a",
            "a-",
            "a b",
            "/x",
            "Upper.Case/x",
            &"a".repeat(64),
            "a/b/c",
        ] {
            assert!(!valid_label_key(k), "{k}");
        }
        for v in ["", "shop.web", "A_b-c.1", &"v".repeat(63)] {
            assert!(valid_label_value(v), "{v}");
        }
        for v in ["shop/web", "-x", "x.", "a b", &"v".repeat(64)] {
            assert!(!valid_label_value(v), "{v}");
        }
        let mut spec = KeySpec {
            name: "k".into(),
            ..Default::default()
        };
        spec.labels = (0..65).map(|i| (format!("l{i}"), "v".into())).collect();
        assert_eq!(spec.validate(Timestamp::now()).unwrap_err().path, "labels");
        spec.labels = BTreeMap::from([("app".to_owned(), "x/y".to_owned())]);
        assert_eq!(
            spec.validate(Timestamp::now()).unwrap_err().path,
            "labels.app"
        );
    }
    use ContentPermission::*;

    fn spec() -> KeySpec {
        KeySpec {
            name: "k".into(),
            ..Default::default()
        }
    }

    #[test]
    fn individual_permissions_replace_defaults() {
        let s = KeySpec {
            default_permissions: vec![Get],
            api_permissions: vec![ApiPermission {
                api: "contact".into(),
                permissions: vec![Post, Put],
            }],
            ..spec()
        };
        assert_eq!(s.permissions_for("contact"), &[Post, Put]);
        assert_eq!(s.permissions_for("blog"), &[Get]);
    }

    #[test]
    fn drafts_and_closed_need_get() {
        let now = Timestamp::now();
        let s = KeySpec {
            default_permissions: vec![GetAllDrafts],
            ..spec()
        };
        let e = s.validate(now).unwrap_err();
        assert_eq!(e.path, "defaultPermissions");
        assert!(e.reason.contains("GET_ALL_DRAFTS requires GET"), "{e}");
        let s = KeySpec {
            api_permissions: vec![ApiPermission {
                api: "a".into(),
                permissions: vec![GetAllClosed],
            }],
            ..spec()
        };
        assert_eq!(
            s.validate(now).unwrap_err().path,
            "apiPermissions[0].permissions"
        );
        let ok = KeySpec {
            default_permissions: vec![Get, GetAllDrafts, GetAllClosed],
            ..spec()
        };
        ok.validate(now).unwrap();
    }

    #[test]
    fn public_keys_are_read_only() {
        let now = Timestamp::now();
        let s = KeySpec {
            key_type: KeyType::Public,
            scopes: vec![Scope::ContentWrite],
            ..spec()
        };
        assert_eq!(s.validate(now).unwrap_err().path, "scopes");
        let s = KeySpec {
            key_type: KeyType::Public,
            default_permissions: vec![Get, Post],
            ..spec()
        };
        assert!(s.validate(now).unwrap_err().reason.contains("POST"));
        let s = KeySpec {
            key_type: KeyType::Public,
            scopes: vec![Scope::ContentRead],
            ..spec()
        };
        s.validate(now).unwrap();
    }

    #[test]
    fn expiry_ranges_per_kind() {
        let now = Timestamp::now();
        let s = KeySpec {
            expires_at: Some(now + crate::model::days(4 * 365)),
            ..spec()
        };
        s.validate(now).unwrap();
        let s = KeySpec {
            kind: KeyKind::Management,
            management_permissions: vec![ManagementPermission::KeysManage],
            expires_at: Some(now + crate::model::days(3 * 365)),
            ..spec()
        };
        let e = s.validate(now).unwrap_err();
        assert_eq!(e.path, "expiresAt");
        assert!(e.reason.contains("2 years"), "{e}");
        let s = KeySpec {
            expires_at: Some(now + SignedDuration::from_secs(10)),
            ..spec()
        };
        assert!(s.validate(now).unwrap_err().reason.contains("too soon"));
    }

    #[test]
    fn kinds_hold_their_own_rights() {
        let now = Timestamp::now();
        let s = KeySpec {
            management_permissions: vec![ManagementPermission::KeysManage],
            ..spec()
        };
        assert_eq!(s.validate(now).unwrap_err().path, "managementPermissions");
        let s = KeySpec {
            kind: KeyKind::Personal,
            ..spec()
        };
        assert_eq!(s.validate(now).unwrap_err().path, "owner");
        let s = KeySpec {
            kind: KeyKind::Personal,
            owner: Some("ann".into()),
            scopes: vec![Scope::All],
            ..spec()
        };
        assert_eq!(s.validate(now).unwrap_err().path, "kind");
    }
}
