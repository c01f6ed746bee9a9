//! Who is calling, what they may do, and how fast.

use super::error::CmsError;
use super::rights::Rights;
use super::secret::digest;
use super::service::Service;
use super::verifier::{KeyEntry, Rejection};
use crate::model::{ContentOp, KeyKind, ManagementPermission, PermSet, ServiceOp};
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The caller of a request.
pub enum Principal {
    /// The bootstrap admin token: every right.
    Admin,
    Key(Arc<KeyEntry>),
    Anonymous,
}

/// Requests per second and burst for a rate limiter.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn new(per_second: u32) -> Option<Rate> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        Some(Rate { per_second, burst })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

type Limiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct Auth {
    admin_digest: [u8; 32],
    /// Unauthenticated calls to public endpoints, per client address.
    public_limiter: Limiter<IpAddr>,
    /// Authenticated calls, per key (the key id is 64 bits of hex).
    key_limiter: Limiter<u64>,
}

const KEY_REQUIRED: &str =
    "an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-KEY: KEY'";

/// The key a request presents, from `Authorization: Bearer` or `X-API-KEY`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Auth {
    pub fn new(admin_token: &str, public_rate: Rate, key_rate: Rate) -> Auth {
        Auth {
            admin_digest: digest(admin_token),
            public_limiter: RateLimiter::keyed(public_rate.quota()),
            key_limiter: RateLimiter::keyed(key_rate.quota()),
        }
    }

    /// Identifies the caller; a key that is presented must be valid, whatever the endpoint.
    pub async fn authenticate(
        &self,
        svc: &Service,
        headers: &HeaderMap,
    ) -> Result<Principal, CmsError> {
        let Some(value) = presented_key(headers) else {
            return Ok(Principal::Anonymous);
        };
        if bool::from(digest(value).ct_eq(&self.admin_digest)) {
            return Ok(Principal::Admin);
        }
        let entry = svc.verifier.verify(value).await.map_err(|r| {
            CmsError::Unauthorized(match r {
                Rejection::Expired => "the API key has expired".into(),
                other => other.to_string(),
            })
        })?;
        let bucket = u64::from_str_radix(&entry.record.id, 16).unwrap_or_default();
        limit(&self.key_limiter, &bucket)?;
        Ok(Principal::Key(entry))
    }

    pub fn limit_public(&self, ip: IpAddr) -> Result<(), CmsError> {
        limit(&self.public_limiter, &ip)
    }

    /// Authorizes a content operation and returns the caller's rights on that API.
    pub fn content(
        &self,
        svc: &Service,
        principal: &Principal,
        ip: IpAddr,
        env: &str,
        api: &str,
        op: ContentOp,
    ) -> Result<PermSet, CmsError> {
        let rights = match principal {
            Principal::Admin => return Ok(PermSet::ALL),
            Principal::Anonymous => PermSet::EMPTY,
            Principal::Key(entry) => {
                let spec = &entry.record.spec;
                if !spec.environments.is_empty() && !spec.environments.iter().any(|e| e == env) {
                    return Err(CmsError::Forbidden(format!(
                        "this key is limited to the environment(s) {}; this request is for '{env}'",
                        spec.environments.join(", ")
                    )));
                }
                key_content_rights(svc, entry, api)?
            }
        };
        if rights.allows(op) {
            return Ok(rights);
        }
        if svc.is_public(api, op) {
            if matches!(principal, Principal::Anonymous) {
                self.limit_public(ip)?;
            }
            return Ok(rights.union(PermSet::of(&[op.required()])));
        }
        match principal {
            Principal::Anonymous => Err(CmsError::Unauthorized(KEY_REQUIRED.into())),
            _ => Err(CmsError::Forbidden(format!(
                "this key lacks the {} permission on API '{api}' (needed to {} entries)",
                op.required(),
                op.as_str()
            ))),
        }
    }

    /// Authorizes a management call.
    pub fn management(
        &self,
        svc: &Service,
        principal: &Principal,
        needed: ManagementPermission,
    ) -> Result<(), CmsError> {
        let ok = match principal {
            Principal::Admin => true,
            Principal::Anonymous => return Err(CmsError::Unauthorized(KEY_REQUIRED.into())),
            Principal::Key(entry) => {
                let spec = &entry.record.spec;
                match spec.kind {
                    KeyKind::Content => spec.scopes.contains(&crate::model::Scope::All),
                    KeyKind::Management => spec
                        .management_permissions
                        .iter()
                        .any(|p| p.implies(needed)),
                    KeyKind::Personal => owner_role(svc, entry)?
                        .management_permissions
                        .iter()
                        .any(|p| p.implies(needed)),
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CmsError::Forbidden(format!(
                "this key lacks the management permission '{needed}'"
            )))
        }
    }

    /// Authorizes an operation that one scope grants (export, cache purge, webhook replay) in
    /// one environment.
    pub fn service_op(
        &self,
        svc: &Service,
        principal: &Principal,
        op: ServiceOp,
        env: &str,
    ) -> Result<(), CmsError> {
        match principal {
            Principal::Admin => Ok(()),
            Principal::Anonymous => Err(CmsError::Unauthorized(KEY_REQUIRED.into())),
            Principal::Key(entry) => {
                let scopes = &entry.record.spec.scopes;
                if !(scopes.contains(&op.scope()) || scopes.contains(&crate::model::Scope::All)) {
                    return Err(CmsError::Forbidden(format!(
                        "this key lacks the scope '{}'",
                        op.scope()
                    )));
                }
                check_environment(&self.rights(svc, principal)?, env)
            }
        }
    }

    /// Everything the caller holds, to compare with what it asks to create or change.
    pub fn rights(&self, svc: &Service, principal: &Principal) -> Result<Rights, CmsError> {
        match principal {
            Principal::Admin => Ok(Rights::everything()),
            Principal::Anonymous => Err(CmsError::Unauthorized(KEY_REQUIRED.into())),
            Principal::Key(entry) => {
                if entry.record.spec.kind == KeyKind::Personal {
                    owner_role(svc, entry)?;
                }
                Ok(svc.rights_of(&entry.record.spec))
            }
        }
    }
}

/// Environment limits bind every call: content, export and management alike.
pub fn check_environment(rights: &Rights, env: &str) -> Result<(), CmsError> {
    match rights.environment_limit() {
        Some(limit) if !rights.allows_environment(env) => Err(CmsError::Forbidden(format!(
            "this key is limited to the environment(s) {limit}; this request is for '{env}'"
        ))),
        _ => Ok(()),
    }
}

fn owner_role(svc: &Service, entry: &KeyEntry) -> Result<super::service::Role, CmsError> {
    let owner = entry.record.spec.owner.as_deref().unwrap_or_default();
    svc.member_role(owner).ok_or_else(|| {
        CmsError::Unauthorized("the owner of this personal key is no longer a member".into())
    })
}

/// A key's rights on one API: its permissions for that API (individual ones replace the
/// defaults) united with what its scopes or management permissions grant, or, for a personal key,
/// its owner's role as it is now.
fn key_content_rights(svc: &Service, entry: &KeyEntry, api: &str) -> Result<PermSet, CmsError> {
    let spec = &entry.record.spec;
    Ok(match spec.kind {
        KeyKind::Content => spec
            .scopes
            .iter()
            .fold(PermSet::of(spec.permissions_for(api)), |acc, s| {
                acc.union(s.content_grants())
            }),
        KeyKind::Management => spec
            .management_permissions
            .iter()
            .fold(PermSet::EMPTY, |acc, p| acc.union(p.content_grants())),
        KeyKind::Personal => {
            let role = owner_role(svc, entry)?;
            role.management_permissions
                .iter()
                .fold(PermSet::of(&role.content_permissions), |acc, p| {
                    acc.union(p.content_grants())
                })
        }
    })
}

fn limit<K: std::hash::Hash + Eq + Clone>(limiter: &Limiter<K>, key: &K) -> Result<(), CmsError> {
    limiter.check_key(key).map_err(|not_until| {
        CmsError::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
    })
}
