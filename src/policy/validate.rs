//! Offline validation: every rule of the seeds that needs no CMS, checked before any call, with
//! the manifest, the object, the field path and the reason.

use super::connection::{connection_id, dereference, Admission, Connection, ConnectionError};
use super::duration;
use super::load::{ManifestSet, Origin, Sourced};
use super::locate::FieldMap;
use super::{ApiKeyPolicy, ApiKeyPolicySpec, ConnectionKind, ManagementPolicy, ProviderKind};
use crate::model::capabilities::{Capabilities, Lifetimes};
use crate::model::desired::{
    ConnectionId, DesiredKey, DesiredSettings, DesiredState, PolicyId, PolicySettings,
    SecretTarget, LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID,
};
use crate::model::template::check_template;
use crate::model::{
    check_origin, expiry_rules, human, normalize, valid_slug, ContentOp, KeyKind, KeySpec, Tier,
};
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found in a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: Option<Origin>,
    /// `Kind namespace/name`.
    pub object: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        write!(f, "{}: ", self.object)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The longest rotation overlap a CMS grace period allows.
const MAX_OVERLAP: SignedDuration = crate::model::days(30);
/// `rotationOverlap` when a key declares none: long enough for a workload to roll out the new
/// Secret before the old value stops working.
pub const DEFAULT_ROTATION_OVERLAP: SignedDuration = SignedDuration::from_mins(15);

/// What a valid set of manifests asks for, per connection.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub desired: BTreeMap<ConnectionId, DesiredState>,
    pub connections: BTreeMap<ConnectionId, Connection>,
    pub warnings: Vec<Diagnostic>,
}

/// Default rotation lead time (Kontent.ai's reminder schedule): a lifetime over a week renews a
/// week ahead, 1-7 days a day ahead; under a day, halfway (rotating "at once" would loop).
pub fn default_renew_before(lifetime: SignedDuration) -> SignedDuration {
    if lifetime > crate::model::days(7) {
        crate::model::days(7)
    } else if lifetime >= crate::model::days(1) {
        crate::model::days(1)
    } else {
        lifetime / 2
    }
}

/// The CMS name of a key. One-to-one because neither the namespace nor the key name can hold a
/// dot (both are DNS labels): the policy name is whatever lies between the first and last dot.
pub fn cms_key_name(policy: &PolicyId, key: &str) -> String {
    format!("{}.{}.{}", policy.namespace, policy.name, key)
}

/// Where a policy came from: its file and the line of each of its fields.
pub type Source<'a> = (&'a Origin, &'a FieldMap);

struct Ctx<'a> {
    source: Option<Source<'a>>,
    object: String,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(&mut self, severity: Severity, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let origin = match self.source {
            // Only a consequence of a field already reported as malformed: said once.
            Some((_, fields)) if fields.follows_from_dropped(&path) => return,
            Some((origin, fields)) => Some(origin.at_line(fields.line_of(&path))),
            None => None,
        };
        self.out.push(Diagnostic {
            severity,
            origin,
            object: self.object.clone(),
            path,
            message: message.into(),
        });
    }
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }
}

/// One policy's keys and settings, checked on their own. Diagnostics may hold warnings only.
pub fn policy_keys(
    policy: &ApiKeyPolicy,
    source: Option<Source<'_>>,
    now: Timestamp,
) -> (PolicyId, Vec<DesiredKey>, Vec<Diagnostic>) {
    let id = policy.policy_id();
    let mut cx = Ctx {
        source,
        object: format!("ApiKeyPolicy {id}"),
        out: Vec::new(),
    };
    check_policy_names(&id, &mut cx);
    let spec = &policy.spec;
    check_bounds(spec, &mut cx);
    check_cors(spec, &mut cx);
    check_public_endpoints(spec, &mut cx);
    let observe_only = spec.management_policy == ManagementPolicy::ObserveOnly;
    let mut keys = Vec::new();
    let mut names = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for (i, k) in spec.keys.iter().enumerate() {
        let at = |f: &str| format!("spec.keys[{i}].{f}");
        check_key_name(k, &at, &mut cx);
        if !names.insert(k.name.as_str()) {
            cx.error(
                at("name"),
                format!("key '{}' is declared twice in this policy", k.name),
            );
        }
        if !secrets.insert(k.secret.name.as_str()) {
            cx.error(
                at("secret.name"),
                format!(
                    "Secret '{}' is used by two keys of this policy",
                    k.secret.name
                ),
            );
        }
        check_secret(&k.secret, &at, &mut cx);
        let times = key_times(k, &at, &mut cx);
        let key_spec = key_spec(&id, k, now, times.lifetime);
        check_key_spec(k, &key_spec, now, times.lifetime, &at, &mut cx);
        keys.push(DesiredKey {
            policy: id.clone(),
            key: k.name.clone(),
            spec: normalize(KeySpec {
                expires_at: None,
                ..key_spec
            }),
            lifetime: Some(times.lifetime),
            renew_before: times.renew_before,
            rotation_overlap: times.overlap,
            secret: SecretTarget {
                namespace: id.namespace.clone(),
                name: k.secret.name.clone(),
                key_field: k.secret.key_field.clone(),
                extra_fields: k.secret.extra_fields.clone(),
                labels: k.secret.labels.clone(),
                annotations: k.secret.annotations.clone(),
                retain: match k.secret.deletion_policy {
                    Some(p) => p == super::SecretDeletionPolicy::Retain,
                    // The keys stay and work: so do their Secrets.
                    None => spec.deletion_policy == super::DeletionPolicy::Orphan,
                },
            },
            observe_only,
            index: i,
            adopt: adoption(k, &at, &mut cx),
        });
    }
    (id, keys, cx.out)
}

/// The policy's namespace and name: DNS names, as in a cluster (no dots in a namespace, so
/// `namespace.policy.key` names stay unambiguous).
fn check_policy_names(id: &PolicyId, cx: &mut Ctx<'_>) {
    if !dns_label(&id.namespace, 63) {
        cx.error(
            "metadata.namespace",
            format!(
                "'{}' is not a valid namespace (lowercase DNS label: letters, digits and '-', at most 63)",
                id.namespace
            ),
        );
    }
    if !dns_subdomain(&id.name) {
        cx.error(
            "metadata.name",
            format!(
                "'{}' is not a valid name (lowercase DNS subdomain: DNS labels joined by '.', at most 253)",
                id.name
            ),
        );
    }
}

/// The CRD's bounds on a policy's lists (the API server needs them to cost its rules).
fn check_bounds(spec: &super::ApiKeyPolicySpec, cx: &mut Ctx<'_>) {
    for (path, n, max) in [
        ("spec.keys", spec.keys.len(), super::MAX_KEYS),
        (
            "spec.publicEndpoints",
            spec.public_endpoints.len(),
            super::MAX_LIST,
        ),
    ] {
        if n > max {
            cx.error(
                path,
                format!("{n} entries; a policy holds at most {max} (put more in another policy)"),
            );
        }
    }
    for (i, k) in spec.keys.iter().enumerate() {
        let n = k.api_permissions.len();
        if n > super::MAX_LIST {
            cx.error(
                format!("spec.keys[{i}].apiPermissions"),
                format!("{n} entries; a key holds at most {}", super::MAX_LIST),
            );
        }
    }
}

fn check_cors(spec: &super::ApiKeyPolicySpec, cx: &mut Ctx<'_>) {
    let Some(cors) = &spec.cors else {
        return;
    };
    for (i, o) in cors.origins.iter().enumerate() {
        if let Err(reason) = check_origin(o) {
            cx.error(format!("spec.cors.origins[{i}]"), format!("'{o}' {reason}"));
        } else if o == "*" {
            cx.push(
                Severity::Warning,
                format!("spec.cors.origins[{i}]"),
                "'*' lets every web page read the CMS's responses; list the origins instead",
            );
        }
    }
}

fn check_public_endpoints(spec: &super::ApiKeyPolicySpec, cx: &mut Ctx<'_>) {
    let mut apis = BTreeSet::new();
    for (i, pe) in spec.public_endpoints.iter().enumerate() {
        if !valid_slug(&pe.api) {
            cx.error(
                format!("spec.publicEndpoints[{i}].api"),
                format!("'{}' is not an API name", pe.api),
            );
        }
        if !apis.insert(&pe.api) {
            cx.error(
                format!("spec.publicEndpoints[{i}].api"),
                format!("API '{}' is listed twice", pe.api),
            );
        }
        for (j, op) in pe.operations.iter().enumerate() {
            if !ContentOp::PUBLIC_OPERATIONS.contains(op) {
                cx.error(
                    format!("spec.publicEndpoints[{i}].operations[{j}]"),
                    format!(
                        "'{}' cannot be public (list, get, create, update, delete, publish)",
                        op.as_str()
                    ),
                );
            }
        }
    }
}

fn check_key_name(k: &super::KeyDecl, at: &dyn Fn(&str) -> String, cx: &mut Ctx<'_>) {
    if !dns_label(&k.name, 40) {
        cx.error(
            at("name"),
            format!(
                "'{}' is not a valid key name (lowercase DNS label: letters, digits and '-', no '.', at most 40)",
                k.name
            ),
        );
    }
}

/// A key's Secret: its name, data fields, labels, annotations and templates.
fn check_secret(s: &super::SecretSpec, at: &dyn Fn(&str) -> String, cx: &mut Ctx<'_>) {
    if !dns_subdomain(&s.name) {
        cx.error(
            at("secret.name"),
            format!(
                "'{}' is not a valid Secret name (lowercase DNS subdomain)",
                s.name
            ),
        );
    }
    if !secret_data_key(&s.key_field) {
        cx.error(at("secret.keyField"), SECRET_KEY_RULE);
    }
    for (field, reason) in metadata_problems(&s.labels, &s.annotations) {
        cx.error(at(&format!("secret.{field}")), reason);
    }
    for (field, template) in &s.extra_fields {
        if !secret_data_key(field) {
            cx.error(at(&format!("secret.extraFields.{field}")), SECRET_KEY_RULE);
        }
        if *field == s.key_field {
            cx.error(
                at(&format!("secret.extraFields.{field}")),
                "collides with secret.keyField",
            );
        }
        if let Err(m) = check_template(template) {
            cx.error(at(&format!("secret.extraFields.{field}")), m);
        }
    }
}

/// A key's lifetime, lead time and overlap, as declared or by default.
struct KeyTimes {
    lifetime: SignedDuration,
    renew_before: SignedDuration,
    overlap: SignedDuration,
}

/// A key's times, each checked: parsed, the lead time shorter than the lifetime, the overlap
/// shorter and at most 30 days.
fn key_times(k: &super::KeyDecl, at: &dyn Fn(&str) -> String, cx: &mut Ctx<'_>) -> KeyTimes {
    let rules = expiry_rules(k.kind);
    let mut parse = |field: &str, v: &Option<String>| match v.as_deref().map(duration::parse) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(m)) => {
            cx.error(at(field), m);
            None
        }
    };
    let lifetime = parse("expiresAfter", &k.expires_after).unwrap_or(rules.default);
    let renew_before =
        parse("renewBefore", &k.renew_before).unwrap_or_else(|| default_renew_before(lifetime));
    let overlap = parse("rotationOverlap", &k.rotation_overlap).unwrap_or(DEFAULT_ROTATION_OVERLAP);
    if renew_before >= lifetime {
        cx.error(
            at("renewBefore"),
            format!(
                "{} is not shorter than the key's lifetime ({})",
                human(renew_before),
                human(lifetime)
            ),
        );
    }
    if overlap > MAX_OVERLAP || overlap >= lifetime {
        cx.error(
            at("rotationOverlap"),
            format!(
                "must be shorter than the lifetime and at most 30 days, not {}",
                human(overlap)
            ),
        );
    }
    KeyTimes {
        lifetime,
        renew_before,
        overlap,
    }
}

/// The key as the CMS holds it, tagged with its policy (and the policy's UID in a cluster).
fn key_spec(
    id: &PolicyId,
    k: &super::KeyDecl,
    now: Timestamp,
    lifetime: SignedDuration,
) -> KeySpec {
    let mut labels = BTreeMap::from([
        (LABEL_POLICY.to_owned(), id.label_value()),
        (LABEL_KEY.to_owned(), k.name.clone()),
    ]);
    if let Some(uid) = &id.uid {
        labels.insert(LABEL_POLICY_UID.to_owned(), uid.clone());
    }
    KeySpec {
        name: cms_key_name(id, &k.name),
        description: k.description.clone(),
        kind: k.kind,
        key_type: k.key_type,
        default_permissions: k.default_permissions.clone(),
        api_permissions: k.api_permissions.clone(),
        scopes: k.scopes.clone(),
        environments: k.environments.clone(),
        management_permissions: k.management_permissions.clone(),
        owner: k.owner.clone(),
        expires_at: crate::model::later(now, lifetime),
        labels,
    }
}

/// The key model's own rules (`KeySpec::problems`), named by the manifest's fields.
fn check_key_spec(
    k: &super::KeyDecl,
    key_spec: &KeySpec,
    now: Timestamp,
    lifetime: SignedDuration,
    at: &dyn Fn(&str) -> String,
    cx: &mut Ctx<'_>,
) {
    let rules = expiry_rules(k.kind);
    let cms_name = &key_spec.name;
    if key_spec.expires_at.is_none() {
        cx.error(
            at("expiresAfter"),
            "ends past the last instant a time can hold",
        );
    }
    if cms_name.len() > 100 {
        cx.error(at("name"), format!("the CMS key name '{cms_name}' (namespace.policy.key) is longer than 100 characters"));
    }
    for e in key_spec.problems(now) {
        if e.path == "name" && cms_name.len() > 100 {
            continue;
        }
        let path = match e.path.as_str() {
            "expiresAt" => "expiresAfter".to_owned(),
            other => other.to_owned(),
        };
        let reason = if path == "expiresAfter" {
            format!(
                "{} keys must live between {} and {}, not {}",
                k.kind.as_str(),
                human(rules.min),
                human(rules.max),
                human(lifetime)
            )
        } else {
            e.explained()
        };
        cx.error(at(&path), reason);
    }
    if k.kind == KeyKind::Personal && k.key_type == crate::model::KeyType::Public {
        cx.error(at("type"), "personal keys are service keys");
    }
}

/// A key entry's `adopt`: by id or by name, one of them.
fn adoption(
    k: &super::KeyDecl,
    at: &dyn Fn(&str) -> String,
    cx: &mut Ctx<'_>,
) -> Option<crate::model::desired::Adoption> {
    use crate::model::desired::{AdoptBy, Adoption};
    let a = k.adopt.as_ref()?;
    let by = match (&a.id, &a.name) {
        (Some(id), None) if !id.trim().is_empty() => AdoptBy::Id(id.trim().to_owned()),
        (None, Some(name)) if !name.trim().is_empty() => AdoptBy::Name(name.trim().to_owned()),
        _ => {
            cx.error(
                at("adopt"),
                "names the key by id or by name: one of them, not empty".to_owned(),
            );
            return None;
        }
    };
    let expires_at = match a.expires_at.as_deref().map(str::parse::<jiff::Timestamp>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            cx.error(
                at("adopt.expiresAt"),
                "is not an RFC 3339 time (e.g. 2027-06-30T00:00:00Z)".to_owned(),
            );
            None
        }
    };
    Some(Adoption {
        by,
        value: None,
        keeps_value: a.value_from.is_some(),
        expires_at,
    })
}

/// What a policy asks of a CMS that the CMS's key model cannot hold, as (field path, reason),
/// each naming the provider: the provider's `capabilities()` decide, nothing else of it. A key
/// without `expiresAfter` on a CMS whose keys may never expire gets no lifetime.
pub fn fit_to_provider(
    kind: ProviderKind,
    spec: &ApiKeyPolicySpec,
    keys: &mut [DesiredKey],
) -> Vec<(String, String)> {
    let caps = kind.capabilities();
    let mut out = Vec::new();
    if spec.cors.is_some() {
        push_reason(&mut out, "spec.cors", caps.cors);
    }
    if !spec.public_endpoints.is_empty() {
        push_reason(&mut out, "spec.publicEndpoints", caps.public_endpoints);
    }
    if spec.management_policy != ManagementPolicy::ObserveOnly {
        push_reason(&mut out, "spec.managementPolicy", caps.key_api);
    }
    for (i, decl) in spec.keys.iter().enumerate() {
        let at = |f: &str| format!("spec.keys[{i}].{f}");
        let declared = KeySpec {
            kind: decl.kind,
            key_type: decl.key_type,
            default_permissions: decl.default_permissions.clone(),
            api_permissions: decl.api_permissions.clone(),
            scopes: decl.scopes.clone(),
            environments: decl.environments.clone(),
            management_permissions: decl.management_permissions.clone(),
            owner: decl.owner.clone(),
            ..KeySpec::default()
        };
        for (field, reason) in caps.key_refusals(&declared) {
            out.push((at(&field), reason));
        }
        fit_lifetime(caps, decl, keys.get_mut(i), &at, &mut out);
        // No overlap on this CMS: the default becomes 0s (the plan says the old value ends at
        // once); only an overlap the policy asks for is refused.
        if let (Some(_), None, Some(k)) = (
            caps.rotation_overlap,
            &decl.rotation_overlap,
            keys.get_mut(i),
        ) {
            k.rotation_overlap = SignedDuration::ZERO;
        }
        if let Some(o) = decl
            .rotation_overlap
            .as_deref()
            .and_then(|o| duration::parse(o).ok())
        {
            if o > SignedDuration::ZERO {
                push_reason(&mut out, &at("rotationOverlap"), caps.rotation_overlap);
            }
        }
        fit_adoption(caps, decl, &at, &mut out);
        if let (Some(fits), Some(k)) = (caps.description, keys.get(i)) {
            if let Some(reason) = fits(&k.spec) {
                out.push((at("description"), reason));
            }
        }
    }
    out.into_iter()
        .map(|(path, reason)| {
            let reason = format!(
                "the {} provider cannot express this: {reason}",
                caps.provider
            );
            (path, reason)
        })
        .collect()
}

/// A key entry's `adopt` on this CMS: on one without a key API, every key is a console-made
/// key tracked with the value in use; elsewhere the value must be one the CMS can check, and
/// the old value must survive a new one.
fn fit_adoption(
    caps: &Capabilities,
    decl: &super::KeyDecl,
    at: &dyn Fn(&str) -> String,
    out: &mut Vec<(String, String)>,
) {
    if let Some(reason) = caps.key_api {
        // Only tracking: each key is one made in the console, with the value in use.
        if decl.adopt.as_ref().is_none_or(|a| a.value_from.is_none()) {
            out.push((at("adopt.valueFrom"), reason.to_owned()));
        }
    } else if decl.adopt.as_ref().is_some_and(|a| a.expires_at.is_some()) {
        out.push((
            at("adopt.expiresAt"),
            "this CMS reports each key's expiry; adopt.expiresAt is for CMSes without a key API"
                .to_owned(),
        ));
    } else if let Some(a) = &decl.adopt {
        match &a.value_from {
            Some(_) => push_reason(out, &at("adopt.valueFrom"), caps.value_check),
            // A new value, and the old one would stop at once: whatever uses it breaks.
            None => push_reason(
                out,
                &at("adopt"),
                caps.rotation_overlap
                    .map(|_| "adopting without adopt.valueFrom gives the key a new value, and the old one would stop at once (no rotationOverlap here); give its current value with adopt.valueFrom"),
            ),
        }
    }
}

fn push_reason(out: &mut Vec<(String, String)>, path: &str, reason: Option<&str>) {
    if let Some(r) = reason {
        out.push((path.to_owned(), r.to_owned()));
    }
}

/// Lifetimes the CMS can set: a declared one it cannot hold is refused; with only fixed
/// lifetimes, a key without `expiresAfter` never expires (and has nothing to renew).
fn fit_lifetime(
    caps: &Capabilities,
    decl: &super::KeyDecl,
    key: Option<&mut DesiredKey>,
    at: &dyn Fn(&str) -> String,
    out: &mut Vec<(String, String)>,
) {
    let Lifetimes::Days {
        allowed,
        reason,
        renew_without_expiry,
    } = caps.lifetimes
    else {
        return;
    };
    match decl.expires_after.as_deref().map(duration::parse) {
        None => {
            if let Some(k) = key {
                k.lifetime = None;
            }
            if decl.renew_before.is_some() {
                out.push((at("renewBefore"), renew_without_expiry.to_owned()));
            }
        }
        Some(Ok(d)) if !allowed.iter().any(|n| crate::model::days(*n) == d) => {
            out.push((at("expiresAfter"), format!("{reason}, not {}", human(d))));
        }
        _ => {}
    }
}

/// An RFC 1123 label: lowercase letters, digits and '-', starting and ending alphanumeric.
fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: labels joined by '.', at most 253 characters.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| dns_label(l, 63))
}

const SECRET_KEY_RULE: &str =
    "not a valid Secret data key (letters, digits, '-', '_' and '.', at most 253)";

/// Kubernetes' rule for the keys of a Secret's `data`.
fn secret_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A label value or the name part of a label or annotation key: at most 63 of letters, digits,
/// '-', '_' and '.', starting and ending alphanumeric (a value may be empty).
fn qualified_part(s: &str, may_be_empty: bool) -> bool {
    if s.is_empty() {
        return may_be_empty;
    }
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && qualified_part(name, false),
        None => qualified_part(k, false),
    }
}

/// The Secret's labels and annotations against Kubernetes' rules and size limit, as (field,
/// reason); values are not repeated (an annotation may hold anything).
fn metadata_problems(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in labels {
        if !qualified_key(k) {
            out.push((format!("labels.{k}"), "not a valid label key ([prefix/]name, the name at most 63 of letters, digits, '-', '_', '.')".into()));
        } else if !qualified_part(v, true) {
            out.push((format!("labels.{k}"), "not a valid label value (at most 63 of letters, digits, '-', '_', '.', starting and ending alphanumeric)".into()));
        }
    }
    for k in annotations.keys().filter(|k| !qualified_key(k)) {
        out.push((format!("annotations.{k}"), "not a valid annotation key ([prefix/]name, the name at most 63 of letters, digits, '-', '_', '.')".into()));
    }
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 256 * 1024 {
        out.push((
            "annotations".into(),
            format!("{size} bytes in all; Kubernetes allows 256 KiB"),
        ));
    }
    out
}

/// The keys on ClusterCmsConnection `name` of `p` and of the policies of its namespace before it
/// in the manifests (for `maxKeysPerNamespace`: the policy that goes over it is refused, not
/// the ones that were there first).
fn keys_on_cluster_connection(set: &ManifestSet, p: &Sourced<ApiKeyPolicy>, name: &str) -> usize {
    let ns = |q: &Sourced<ApiKeyPolicy>| {
        q.object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let upto = set
        .policies
        .iter()
        .position(|q| std::ptr::eq(q, p))
        .map_or(set.policies.len(), |i| i + 1);
    set.policies[..upto]
        .iter()
        .filter(|q| ns(q) == ns(p))
        .filter(|q| {
            q.object
                .spec
                .connection_ref
                .as_ref()
                .is_some_and(|r| r.kind == ConnectionKind::ClusterCmsConnection && r.name == name)
        })
        .map(|q| q.object.spec.keys.len())
        .sum()
}

/// Validates a whole manifest set and groups what it asks for by connection. `default_plan` is
/// the quota of the CLI's own connection, if known.
/// Each connection's endpoint, checked before anything uses it (the endpoint is never
/// repeated: it could hold a password).
fn connection_endpoints(set: &ManifestSet) -> Vec<Diagnostic> {
    let namespaced = set.connections.iter().map(|c| {
        let m = &c.object.metadata;
        let name = m.name.clone().unwrap_or_default();
        let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
        let what = format!("CmsConnection {ns}/{name}");
        (what, c.object.spec.endpoint.as_str(), &c.origin, &c.fields)
    });
    let cluster = set.cluster_connections.iter().map(|c| {
        let name = c.object.metadata.name.clone().unwrap_or_default();
        let what = format!("ClusterCmsConnection {name}");
        (what, c.object.spec.endpoint.as_str(), &c.origin, &c.fields)
    });
    let mut out = Vec::new();
    for (object, endpoint, origin, fields) in namespaced.chain(cluster) {
        if let Err(reason) = crate::model::check_endpoint(endpoint) {
            let mut cx = Ctx {
                source: Some((origin, fields)),
                object,
                out: Vec::new(),
            };
            cx.error("spec.endpoint", reason);
            out.extend(cx.out);
        }
    }
    out
}

pub fn resolve(
    set: &ManifestSet,
    now: Timestamp,
    default_plan: Option<Tier>,
    default_provider: ProviderKind,
) -> Result<Resolved, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut resolved = Resolved::default();
    diags.extend(connection_endpoints(set));
    let mut secret_owner: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut policy_names = BTreeSet::new();
    for p in &set.policies {
        let source = Some((&p.origin, &p.fields));
        let (id, mut keys, mut d) = policy_keys(&p.object, source, now);
        let mut cx = Ctx {
            source,
            object: format!("ApiKeyPolicy {id}"),
            out: Vec::new(),
        };
        if !policy_names.insert(id.to_string()) {
            cx.error("metadata.name", "this policy is declared twice");
        }
        check_secret_owners(&id, &keys, &mut secret_owner, &mut cx);
        let conn = policy_connection(set, p, &id, &mut resolved.connections, &mut cx);
        let provider = match &conn {
            Some(ConnectionId::Default) => Some(default_provider),
            Some(c) => resolved.connections.get(c).map(|c| c.provider),
            None => None,
        };
        if let Some(kind) = provider {
            for (path, reason) in fit_to_provider(kind, &p.object.spec, &mut keys) {
                cx.error(path, reason);
            }
        }
        d.extend(cx.out);
        let has_errors = d.iter().any(|x| x.severity == Severity::Error);
        diags.extend(d);
        let (Some(conn), false) = (conn, has_errors) else {
            continue;
        };
        add_policy(
            resolved.desired.entry(conn).or_default(),
            &id,
            &p.object.spec,
            keys,
        );
    }
    diags.extend(plan_quotas(set, &resolved, default_plan));
    let (errors, warnings): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(errors);
    }
    resolved.warnings = warnings;
    Ok(resolved)
}

/// One Secret, one policy: a Secret another policy of the run writes already is refused.
fn check_secret_owners(
    id: &PolicyId,
    keys: &[DesiredKey],
    secret_owner: &mut BTreeMap<(String, String), String>,
    cx: &mut Ctx<'_>,
) {
    for (i, k) in keys.iter().enumerate() {
        let slot = (k.secret.namespace.clone(), k.secret.name.clone());
        match secret_owner.get(&slot) {
            Some(other) if *other != id.to_string() => cx.error(
                format!("spec.keys[{i}].secret.name"),
                format!(
                    "Secret {}/{} is already written by ApiKeyPolicy {other}",
                    slot.0, slot.1
                ),
            ),
            _ => {
                secret_owner.insert(slot, id.to_string());
            }
        }
    }
}

/// The connection a policy uses (recorded in `connections`), or `None` when it cannot have
/// one (said in `cx`, unless what it names could not be loaded, or its endpoint is wrong: both
/// are reported already). A shared connection's ceilings are checked here too.
fn policy_connection(
    set: &ManifestSet,
    p: &Sourced<ApiKeyPolicy>,
    id: &PolicyId,
    connections: &mut BTreeMap<ConnectionId, Connection>,
    cx: &mut Ctx<'_>,
) -> Option<ConnectionId> {
    let cid = connection_id(&p.object, Some(&ConnectionId::Default))?;
    if cid == ConnectionId::Default {
        return Some(cid);
    }
    let c = match dereference(set, &cid, &id.namespace, Admission::Required) {
        Ok(c) => c,
        Err(ConnectionError::NotFound(_)) => {
            let (kind, ns, name) = match &cid {
                ConnectionId::CmsConnection { namespace, name } => {
                    ("CmsConnection", Some(namespace.as_str()), name)
                }
                ConnectionId::ClusterCmsConnection { name } => ("ClusterCmsConnection", None, name),
                ConnectionId::Default => return None,
            };
            if !set.failed_to_load(kind, ns, name) {
                cx.error("spec.connectionRef", format!("{cid} is not in the manifests (a policy may only use a CmsConnection of its own namespace)"));
            }
            return None;
        }
        Err(ConnectionError::InvalidEndpoint { .. }) => return None,
        Err(e) => {
            cx.error("spec.connectionRef", e.to_string());
            return None;
        }
    };
    if let (Some(allow), ConnectionId::ClusterCmsConnection { name }) = (&c.allow, &cid) {
        let keys_here = keys_on_cluster_connection(set, p, name);
        for (path, reason) in super::ceilings::over_ceilings(allow, name, &p.object.spec, keys_here)
        {
            cx.error(path, reason);
        }
    }
    connections.insert(cid.clone(), c);
    Some(cid)
}

/// A valid policy's keys, settings and its own settings entry (CORS origins, public endpoints),
/// in its connection's desired state: the one definition of a policy's desired state, for the
/// CLI (every policy of a connection in one state) and the operator (one policy's).
pub fn add_policy(
    state: &mut DesiredState,
    id: &PolicyId,
    spec: &super::ApiKeyPolicySpec,
    keys: Vec<DesiredKey>,
) {
    state.policies.insert(
        id.clone(),
        PolicySettings {
            orphan: spec.deletion_policy == super::DeletionPolicy::Orphan,
            observe_only: spec.management_policy == ManagementPolicy::ObserveOnly,
            gone: false,
        },
    );
    state.settings.insert(
        id.settings_owner(),
        DesiredSettings {
            policy: id.to_string(),
            want: spec.declared_settings(),
            observe_only: spec.management_policy == ManagementPolicy::ObserveOnly,
        },
    );
    state.keys.extend(keys);
}

/// Plan quotas (the CMS pricing tier's key limit), per connection, before any call.
fn plan_quotas(
    set: &ManifestSet,
    resolved: &Resolved,
    default_plan: Option<Tier>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (cid, state) in &resolved.desired {
        let plan = match cid {
            ConnectionId::Default => default_plan,
            other => resolved.connections.get(other).and_then(|c| c.plan),
        };
        let Some(plan) = plan.filter(|p| state.keys.len() > p.key_limit()) else {
            continue;
        };
        let first = state.keys.get(plan.key_limit());
        let origin = first.and_then(|k| {
            set.policies
                .iter()
                .find(|p| p.object.metadata.name.as_deref() == Some(&k.policy.name))
                .map(|p| p.origin.clone())
        });
        out.push(Diagnostic {
            severity: Severity::Error,
            origin,
            object: first
                .map(|k| format!("ApiKeyPolicy {}", k.policy))
                .unwrap_or_default(),
            path: "spec.keys".into(),
            message: format!(
                "{cid} is on the {} plan, which allows {} key(s); these manifests declare {}",
                plan.as_str(),
                plan.key_limit(),
                state.keys.len()
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::load_str;

    /// What `resolve` says about a manifest: `Err` with the errors that stop it, or `Ok` with
    /// the warnings it applies with.
    fn check(yaml: &str) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
        let set = load_str("p.yaml", yaml).expect("loads");
        resolve(&set, Timestamp::now(), None, ProviderKind::Keyward).map(|r| r.warnings)
    }

    fn policy(keys: &str) -> String {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  keys:\n{keys}"
        )
    }

    fn key(extra: &str) -> String {
        format!("    - name: k\n      secret: {{name: s}}\n{extra}")
    }

    /// The manifest is refused (nothing of it would be applied) with an error containing
    /// `needle`; every diagnostic names the file, line and object.
    fn refused(yaml: &str, needle: &str) {
        let errs = check(yaml).expect_err("refused, not applied with a warning");
        let hit = errs
            .iter()
            .find(|e| e.to_string().contains(needle))
            .unwrap_or_else(|| panic!("no error containing {needle:?} in {errs:#?}"));
        assert_eq!(hit.severity, Severity::Error, "{hit}");
        assert!(
            errs.iter().all(|e| {
                let line = e.origin.as_ref().map(|o| o.line).unwrap_or(0);
                e.severity == Severity::Error
                    && line >= 1
                    && e.to_string()
                        .starts_with(&format!("p.yaml:{line}: ApiKeyPolicy shop/p: "))
            }),
            "{errs:#?}"
        );
    }

    #[test]
    fn adopt_names_one_key_and_is_refused_where_the_provider_cannot_hold_it() {
        refused(
            &policy(&key("      adopt: {id: a, name: b}\n")),
            "spec.keys[0].adopt: names the key by id or by name",
        );
        refused(
            &policy(&key("      adopt: {}\n")),
            "spec.keys[0].adopt: names the key by id or by name",
        );
        let fits = |provider: ProviderKind, adopt: &str| {
            let set = load_str("p.yaml", &policy(&key(adopt))).expect("loads");
            let p = &set.policies[0].object;
            let (_, mut keys, _) = policy_keys(p, None, Timestamp::now());
            fit_to_provider(provider, &p.spec, &mut keys)
        };
        let by_id = "      adopt: {id: '7'}\n";
        let kept = "      adopt: {id: '7', valueFrom: {name: now}}\n";
        assert!(fits(ProviderKind::Keyward, by_id).is_empty());
        assert!(fits(ProviderKind::Keyward, kept).is_empty());
        let strapi = fits(ProviderKind::Strapi, by_id);
        assert_eq!(strapi[0].0, "spec.keys[0].adopt", "{strapi:?}");
        assert!(
            strapi[0].1.contains("the old one would stop at once"),
            "{strapi:?}"
        );
        let strapi = fits(ProviderKind::Strapi, kept);
        assert_eq!(strapi[0].0, "spec.keys[0].adopt.valueFrom", "{strapi:?}");
        assert_eq!(
            fits(ProviderKind::Directus, kept)[0].0,
            "spec.keys[0].adopt.valueFrom"
        );
        // The expiry a console shows is only for a CMS that cannot tell it.
        let dated =
            "      adopt: {id: '7', valueFrom: {name: now}, expiresAt: '2027-06-30T00:00:00Z'}\n";
        for provider in [ProviderKind::Keyward, ProviderKind::Strapi] {
            let got = fits(provider, dated);
            assert_eq!(got[0].0, "spec.keys[0].adopt.expiresAt", "{got:?}");
        }
        assert!(fits(ProviderKind::Kontent, dated)
            .iter()
            .all(|(path, _)| path == "spec.managementPolicy"));
        refused(
            &policy(&key("      adopt: {id: '7', expiresAt: 'next june'}\n")),
            "spec.keys[0].adopt.expiresAt: is not an RFC 3339 time",
        );
    }

    #[test]
    fn seed_rules_are_checked_offline_with_field_paths() {
        let cases = [
            (
                key("      defaultPermissions: [GET_ALL_DRAFTS]\n"),
                "spec.keys[0].defaultPermissions: GET_ALL_DRAFTS requires GET",
            ),
            (
                key("      type: public\n      defaultPermissions: [GET, DELETE]\n"),
                "spec.keys[0].defaultPermissions: a public key may hold read rights only, not DELETE",
            ),
            (
                key("      type: public\n      scopes: [content:write]\n"),
                "spec.keys[0].scopes: a public key may hold read rights only",
            ),
            (
                key("      expiresAfter: 6y\n"),
                "spec.keys[0].expiresAfter: content keys must live between 1 minute and 5 years",
            ),
            (
                key("      kind: management\n      managementPermissions: [keys:manage]\n      expiresAfter: 3y\n"),
                "management keys must live between 1 minute and 2 years",
            ),
            (
                key("      expiresAfter: 30d\n      renewBefore: 30d\n"),
                "spec.keys[0].renewBefore: 30 days is not shorter than the key's lifetime (30 days)",
            ),
            (
                key("      expiresAfter: soon\n"),
                "spec.keys[0].expiresAfter: 'soon' is not a duration",
            ),
            (
                format!("{}{}", key(""), key("")),
                "spec.keys[1].name: key 'k' is declared twice",
            ),
            (
                format!("{}    - name: k2\n      secret: {{name: s}}\n", key("")),
                "spec.keys[1].secret.name: Secret 's' is used by two keys",
            ),
            (
                key("      secret: {name: s, extraFields: {URL: '{{ nope }}'}}\n")
                    .replace("      secret: {name: s}\n", ""),
                "unknown placeholder",
            ),
        ];
        for (keys, needle) in cases {
            refused(&policy(&keys), needle);
        }
    }

    #[test]
    fn origins_and_wildcards() {
        let cors = |o: &str| {
            policy(&key("")).replace("spec:\n", &format!("spec:\n  cors: {{origins: ['{o}']}}\n"))
        };
        refused(
            &cors("https://shop.example.com/path"),
            "spec.cors.origins[0]: 'https://shop.example.com/path' is not an origin",
        );
        // A wildcard is allowed: the policy applies, with a warning.
        let w = check(&cors("*")).expect("a wildcard origin applies");
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].severity, Severity::Warning);
        assert_eq!(w[0].path, "spec.cors.origins[0]");
        assert!(
            w[0].to_string().starts_with("warning: p.yaml:5: "),
            "{}",
            w[0]
        );
        assert_eq!(check(&cors("http://localhost:3000")), Ok(vec![]));
    }

    #[test]
    fn duplicate_secret_names_across_policies() {
        let a = policy(&key(""));
        let b = a.replace("name: p,", "name: q,");
        let errs = check(&format!("{a}---\n{b}")).expect_err("refused");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].severity, Severity::Error);
        assert_eq!(errs[0].object, "ApiKeyPolicy shop/q");
        assert_eq!(errs[0].path, "spec.keys[0].secret.name");
        assert_eq!(
            errs[0].message,
            "Secret shop/s is already written by ApiKeyPolicy shop/p"
        );
    }

    const CONN: &str = "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: cms, namespace: shop}
spec:
  endpoint: http://cms:8780
  plan: hobby
  credentialsSecretRef: {name: cms-token}
";

    #[test]
    fn plan_quota_is_checked_before_any_call() {
        let p = policy(&format!(
            "{}    - name: k2\n      secret: {{name: s2}}\n",
            key("")
        ))
        .replace("spec:\n", "spec:\n  connectionRef: {name: cms}\n");
        let errs = check(&format!("{CONN}---\n{p}")).expect_err("refused");
        assert!(
            errs.iter().any(|e| e.severity == Severity::Error
                && e.path == "spec.keys"
                && e.message
                    .contains("hobby plan, which allows 1 key(s); these manifests declare 2")),
            "{errs:#?}"
        );
    }

    #[test]
    fn connections_must_exist_and_admit_the_namespace() {
        let p = policy(&key("")).replace("spec:\n", "spec:\n  connectionRef: {name: missing}\n");
        refused(
            &p,
            "spec.connectionRef: CmsConnection shop/missing is not in the manifests",
        );
        let cluster = "apiVersion: keyward.dev/v1alpha1
kind: ClusterCmsConnection
metadata: {name: main}
spec:
  endpoint: http://cms:8780
  credentialsSecretRef: {name: t, namespace: keyward}
  namespaceSelector: {matchLabels: {cms: allowed}}
";
        let p = policy(&key("")).replace(
            "spec:\n",
            "spec:\n  connectionRef: {kind: ClusterCmsConnection, name: main}\n",
        );
        let errs = check(&format!("{cluster}---\n{p}")).expect_err("refused");
        assert!(
            errs.iter().any(|e| e.severity == Severity::Error
                && e.path == "spec.connectionRef"
                && e.message
                    .contains("ClusterCmsConnection main does not admit namespace 'shop'")),
            "{errs:#?}"
        );
        let ns =
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {cms: allowed}}\n";
        let set = load_str("p.yaml", &format!("{cluster}---\n{ns}---\n{p}")).unwrap();
        let r = resolve(&set, Timestamp::now(), None, ProviderKind::Keyward).unwrap();
        assert!(r.desired.contains_key(&ConnectionId::ClusterCmsConnection {
            name: "main".into()
        }));
    }

    #[test]
    fn desired_keys_carry_ownership_and_defaults() {
        let set = load_str(
            "p.yaml",
            &policy(&key(
                "      defaultPermissions: [POST, GET]\n      expiresAfter: 90d\n",
            )),
        )
        .unwrap();
        let r = resolve(&set, Timestamp::now(), None, ProviderKind::Keyward).unwrap();
        let k = &r.desired[&ConnectionId::Default].keys[0];
        assert_eq!(k.spec.name, "shop.p.k");
        assert_eq!(k.spec.labels[LABEL_POLICY], "shop.p");
        assert_eq!(
            k.spec.default_permissions,
            vec![
                crate::model::ContentPermission::Get,
                crate::model::ContentPermission::Post
            ],
            "normalized"
        );
        assert_eq!(k.lifetime, Some(crate::model::days(90)));
        assert_eq!(
            k.renew_before,
            crate::model::days(7),
            "Kontent.ai's rule: a week ahead"
        );
        assert_eq!(
            default_renew_before(crate::model::days(3)),
            crate::model::days(1)
        );
        assert_eq!(
            default_renew_before(SignedDuration::from_hours(12)),
            SignedDuration::from_hours(6)
        );
    }

    #[test]
    fn a_namespace_is_a_dns_label() {
        for ns in ["a.b", "Shop", "-x", ""] {
            let yaml = format!(
                "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: p, namespace: '{ns}'}}\nspec:\n  keys:\n{}",
                key("")
            );
            let set = load_str("p.yaml", &yaml).expect("loads");
            let errs = resolve(&set, Timestamp::now(), None, ProviderKind::Keyward).unwrap_err();
            assert!(
                errs.iter().any(|d| d.severity == Severity::Error
                    && d.path == "metadata.namespace"
                    && d.message.contains("DNS label")),
                "{ns:?}: {errs:#?}"
            );
        }
        assert_eq!(check(&policy(&key(""))), Ok(Vec::new()));
    }

    #[test]
    fn names_and_secret_fields_follow_kubernetes_rules() {
        for (bad, needle) in [
            (
                "    - name: front.reader\n      secret: {name: s}\n",
                "spec.keys[0].name: 'front.reader' is not a valid key name",
            ),
            (
                "    - name: k\n      secret: {name: 'a..b'}\n",
                "spec.keys[0].secret.name: 'a..b' is not a valid Secret name",
            ),
            (
                "    - name: k\n      secret: {name: s, keyField: 'api key'}\n",
                "spec.keys[0].secret.keyField: not a valid Secret data key",
            ),
            (
                "    - name: k\n      secret: {name: s, extraFields: {'x/y': 'v'}}\n",
                "spec.keys[0].secret.extraFields.x/y: not a valid Secret data key",
            ),
            (
                "    - name: k\n      secret: {name: s, labels: {'-a': 'v'}}\n",
                "spec.keys[0].secret.labels.-a: not a valid label key",
            ),
            (
                "    - name: k\n      secret: {name: s, labels: {a: 'has space'}}\n",
                "spec.keys[0].secret.labels.a: not a valid label value",
            ),
            (
                "    - name: k\n      secret: {name: s, annotations: {'a/b/c': 'v'}}\n",
                "spec.keys[0].secret.annotations.a/b/c: not a valid annotation key",
            ),
        ] {
            refused(&policy(bad), needle);
        }
        let long = "x".repeat(64);
        refused(
            &policy(&format!(
                "    - name: k\n      secret: {{name: s, labels: {{a: '{long}'}}}}\n"
            )),
            "not a valid label value",
        );
        let big = "x".repeat(300 * 1024);
        refused(
            &policy(&format!(
                "    - name: k\n      secret: {{name: s, annotations: {{a: '{big}'}}}}\n"
            )),
            "spec.keys[0].secret.annotations: 307201 bytes in all; Kubernetes allows 256 KiB",
        );
        // A policy name may hold dots (a DNS subdomain); valid fields pass.
        let ok = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: web.front, namespace: shop}\nspec:\n  keys:\n    - name: k\n      secret: {name: s.v1, keyField: API_KEY.v2, labels: {app.kubernetes.io/part-of: web, empty: ''}, annotations: {example.com/note: 'any text: here'}}\n";
        assert_eq!(check(ok), Ok(Vec::new()));
    }

    use proptest::prelude::*;

    /// Valid names from a small alphabet, so that different ones often look alike.
    fn names() -> impl Strategy<Value = (String, String, String, String)> {
        let label = "[ab](-?[ab]){0,2}";
        let subdomain = "[ab]{1,2}(\\.[ab]{1,2}){0,2}";
        (label, subdomain, label, subdomain)
    }

    proptest! {
        /// Two different keys never share a CMS name, and two different Secrets never share a
        /// file, whatever valid names they have (`shop/web.front` + `reader` against `shop/web`
        /// + `front.reader` cannot happen: a key name holds no dot).
        #[test]
        fn key_names_and_secret_files_are_one_to_one(a in names(), b in names()) {
            for (ns, policy, key, secret) in [&a, &b] {
                prop_assert!(dns_label(ns, 63) && dns_subdomain(policy) && dns_label(key, 40));
                prop_assert!(dns_subdomain(secret));
            }
            let id = |ns: &str, name: &str| PolicyId {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid: None,
            };
            if (&a.0, &a.1, &a.2) != (&b.0, &b.1, &b.2) {
                prop_assert_ne!(cms_key_name(&id(&a.0, &a.1), &a.2), cms_key_name(&id(&b.0, &b.1), &b.2));
            }
            let file = |ns: &str, secret: &str| format!("{ns}.{secret}.yaml");
            if (&a.0, &a.3) != (&b.0, &b.3) {
                prop_assert_ne!(file(&a.0, &a.3), file(&b.0, &b.3));
            }
        }
    }
}
