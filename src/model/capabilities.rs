//! What a CMS's key model can hold. Each provider describes itself with one [`Capabilities`];
//! the validator refuses what a CMS cannot hold, by field and with the provider's reason, before
//! any call, without knowing anything else of the provider.

use super::{ContentPermission, KeyKind, KeySpec, Scope};

/// Lifetimes a CMS can give a key.
#[derive(Clone, Copy, Debug)]
pub enum Lifetimes {
    /// Any lifetime within the key kind's range; a key always expires.
    Any,
    /// Only these lifetimes, in days; a key without `expiresAfter` never expires.
    Days {
        allowed: &'static [i64],
        /// Why other lifetimes are refused.
        reason: &'static str,
        /// Why `renewBefore` without `expiresAfter` is refused.
        renew_without_expiry: &'static str,
    },
}

/// Each `Some(reason)` is something the CMS cannot hold, and why; `None` means it can.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// The provider's name in messages (`strapi`).
    pub provider: &'static str,
    pub cors: Option<&'static str>,
    pub public_endpoints: Option<&'static str>,
    /// Management and personal keys.
    pub non_content_kinds: Option<&'static str>,
    pub owner: Option<&'static str>,
    pub management_permissions: Option<&'static str>,
    pub environments: Option<&'static str>,
    /// The only scopes it can hold, and why others are refused (`{}` is the scope).
    pub scopes: Option<(&'static [Scope], &'static str)>,
    /// Why `GET_ALL_DRAFTS` and `GET_ALL_CLOSED` are refused (`{}` is the permission).
    pub draft_permissions: Option<&'static str>,
    pub lifetimes: Lifetimes,
    pub rotation_overlap: Option<&'static str>,
    /// Why a key's current value cannot be checked against the CMS (`adopt.valueFrom`).
    pub value_check: Option<&'static str>,
    /// Why keyward can only track this CMS's keys (it has no API for them): then a policy must
    /// be ObserveOnly and each key an `adopt` with `valueFrom`.
    pub key_api: Option<&'static str>,
    /// Whether a key's description fits the CMS (with what the provider stores beside it);
    /// `Some(reason)` when it does not.
    pub description: Option<fn(&KeySpec) -> Option<String>>,
}

impl Capabilities {
    /// A CMS that holds the whole key model (the reference CMS).
    pub const fn full(provider: &'static str) -> Capabilities {
        Capabilities {
            provider,
            cors: None,
            public_endpoints: None,
            non_content_kinds: None,
            owner: None,
            management_permissions: None,
            environments: None,
            scopes: None,
            draft_permissions: None,
            lifetimes: Lifetimes::Any,
            rotation_overlap: None,
            value_check: None,
            key_api: None,
            description: None,
        }
    }

    /// The fields of a key's rights that this CMS cannot hold, as (field path, reason).
    pub fn key_refusals(&self, spec: &KeySpec) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut no = |field: String, reason: Option<&str>| {
            if let Some(r) = reason {
                out.push((field, r.to_owned()));
            }
        };
        if spec.kind != KeyKind::Content {
            no("kind".into(), self.non_content_kinds);
        }
        if spec.owner.is_some() {
            no("owner".into(), self.owner);
        }
        if !spec.management_permissions.is_empty() {
            no("managementPermissions".into(), self.management_permissions);
        }
        if !spec.environments.is_empty() {
            no("environments".into(), self.environments);
        }
        if let Some((allowed, reason)) = self.scopes {
            for (j, s) in spec.scopes.iter().enumerate() {
                if !allowed.contains(s) {
                    out.push((format!("scopes[{j}]"), reason.replace("{}", s.as_str())));
                }
            }
        }
        if let Some(reason) = self.draft_permissions {
            let drafts = |p: &ContentPermission| {
                matches!(
                    p,
                    ContentPermission::GetAllDrafts | ContentPermission::GetAllClosed
                )
            };
            let lists =
                std::iter::once(("defaultPermissions".to_owned(), &spec.default_permissions))
                    .chain(spec.api_permissions.iter().enumerate().map(|(i, a)| {
                        (format!("apiPermissions[{i}].permissions"), &a.permissions)
                    }));
            for (path, perms) in lists {
                for (j, p) in perms.iter().enumerate() {
                    if drafts(p) {
                        out.push((format!("{path}[{j}]"), reason.replace("{}", p.as_str())));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiPermission;

    #[test]
    fn a_full_model_refuses_nothing_a_narrow_one_names_each_field() {
        let spec = KeySpec {
            name: "k".into(),
            kind: KeyKind::Management,
            environments: vec!["staging".into()],
            scopes: vec![Scope::ContentRead, Scope::ExportWrite],
            default_permissions: vec![ContentPermission::Get, ContentPermission::GetAllDrafts],
            api_permissions: vec![ApiPermission {
                api: "blog".into(),
                permissions: vec![ContentPermission::GetAllClosed],
            }],
            ..Default::default()
        };
        assert!(Capabilities::full("keyward").key_refusals(&spec).is_empty());
        let narrow = Capabilities {
            non_content_kinds: Some("content keys only"),
            environments: Some("no environments"),
            scopes: Some((&[Scope::ContentRead], "'{}' has no equivalent")),
            draft_permissions: Some("cannot grant {}"),
            ..Capabilities::full("narrow")
        };
        let fields: Vec<(String, String)> = narrow.key_refusals(&spec);
        assert_eq!(
            fields,
            [
                ("kind".to_owned(), "content keys only".to_owned()),
                ("environments".into(), "no environments".into()),
                (
                    "scopes[1]".into(),
                    "'export:write' has no equivalent".into()
                ),
                (
                    "defaultPermissions[1]".into(),
                    "cannot grant GET_ALL_DRAFTS".into()
                ),
                (
                    "apiPermissions[0].permissions[0]".into(),
                    "cannot grant GET_ALL_CLOSED".into()
                ),
            ]
        );
    }
}
