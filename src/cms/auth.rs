//! Who is calling, what they may do, and how fast.

use super::error::CmsError;
use super::limits::{keyed, limit, Limiter, Rate};
use super::rights::Rights;
use super::secret::{digest, key_id_of};
use super::service::Service;
use super::verifier::{KeyEntry, Rejection};
use crate::model::{ContentOp, KeyKind, ManagementPermission, PermSet, ServiceOp};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who sent a request: the credential it presents and the client's address.
pub struct Client {
    pub presented: Presented,
    pub ip: IpAddr,
    /// Where the audit trail learns who the caller is (an audited request).
    pub audit: Option<super::audit::Caller>,
}

/// The headers a key can come in (`Authorization: Bearer`, `X-API-KEY`), as cheap clones of the
/// request's values (no copy of the key, no allocation).
#[derive(Clone, Default)]
pub struct Presented {
    authorization: Option<HeaderValue>,
    api_key: Option<HeaderValue>,
}

impl Presented {
    pub fn of(headers: &HeaderMap) -> Presented {
        Presented {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            api_key: headers.get(API_KEY_HEADER).cloned(),
        }
    }

    /// The key: from `Authorization: Bearer`, else from `X-API-KEY`.
    pub fn key(&self) -> Option<&str> {
        if let Some(v) = self.authorization.as_ref().and_then(|v| v.to_str().ok()) {
            if let Some(k) = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                return Some(k.trim());
            }
        }
        self.api_key
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }
}

impl Client {
    /// The caller of a request with these headers and extensions (its address is the
    /// connection's, in `ConnectInfo`).
    pub fn of(headers: &HeaderMap, extensions: &axum::http::Extensions) -> Client {
        let ip = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Client {
            presented: Presented::of(headers),
            ip,
            audit: extensions.get::<super::audit::Caller>().cloned(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, Infallible> {
        Ok(Client::of(&parts.headers, &parts.extensions))
    }
}

/// The caller of a request.
pub enum Principal {
    /// The bootstrap admin token: every right.
    Admin,
    Key(Arc<KeyEntry>),
    Anonymous,
}

pub struct Auth {
    admin_digest: [u8; 32],
    /// Unauthenticated calls to public endpoints, per client address.
    public_limiter: Limiter<IpAddr>,
    /// Authenticated calls, per key (the key id is 64 bits of hex).
    key_limiter: Limiter<u64>,
    /// Values that need an Argon2id check (a wrong secret, or a value's first use), per client
    /// address and key id, taken before any hashing: a flood of guesses for one key from one
    /// address gets 429 instead of CPU time.
    verify_limiter: Limiter<(IpAddr, u64)>,
    /// Values that are not keys and not the admin token (guesses at it), per client address.
    admin_failures: Limiter<IpAddr>,
    /// Addresses that guessed too fast, and until when every admin attempt from them (the right
    /// token too, or the answer would tell a right guess) is 429.
    admin_blocked: parking_lot::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

/// How long an address that guessed at the admin token too fast is refused.
const ADMIN_BLOCK: std::time::Duration = std::time::Duration::from_secs(10);

const KEY_REQUIRED: &str =
    "an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-KEY: KEY'";

/// The header a key may come in instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

impl Auth {
    pub fn new(admin_token: &str, public_rate: Rate, key_rate: Rate, verify_rate: Rate) -> Auth {
        Auth {
            admin_digest: digest(admin_token),
            public_limiter: keyed(public_rate),
            key_limiter: keyed(key_rate),
            verify_limiter: keyed(verify_rate),
            admin_failures: keyed(verify_rate),
            admin_blocked: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Refuses a value that could be a guess at the admin token from an address that guessed
    /// too fast lately.
    fn admin_not_blocked(&self, ip: IpAddr) -> Result<(), CmsError> {
        let now = std::time::Instant::now();
        match self.admin_blocked.lock().get(&ip) {
            Some(until) if *until > now => Err(CmsError::RateLimited(*until - now)),
            _ => Ok(()),
        }
    }

    /// Counts a wrong admin token; one too many blocks the address for a while (429 from
    /// this one on).
    fn admin_failed(&self, ip: IpAddr) -> Result<(), CmsError> {
        let Err(e) = limit(&self.admin_failures, &ip) else {
            return Ok(());
        };
        if let CmsError::RateLimited(wait) = &e {
            let until = std::time::Instant::now() + (*wait).max(ADMIN_BLOCK);
            self.admin_blocked.lock().insert(ip, until);
        }
        Err(e)
    }

    /// Forgets the buckets of clients and keys that have been quiet long enough to be full again,
    /// so the limiters' memory follows the active clients, not every client ever seen.
    pub fn forget_idle(&self) {
        self.public_limiter.retain_recent();
        self.key_limiter.retain_recent();
        self.verify_limiter.retain_recent();
        self.admin_failures.retain_recent();
        self.public_limiter.shrink_to_fit();
        self.key_limiter.shrink_to_fit();
        self.verify_limiter.shrink_to_fit();
        self.admin_failures.shrink_to_fit();
        let now = std::time::Instant::now();
        self.admin_blocked.lock().retain(|_, until| *until > now);
    }

    /// Identifies the caller (and tells the audit trail who it is); a key that is presented
    /// must be valid, whatever the endpoint.
    pub async fn authenticate(
        &self,
        svc: &Service,
        client: &Client,
    ) -> Result<Principal, CmsError> {
        let p = self.identify(svc, client).await?;
        if let Some(caller) = &client.audit {
            caller.set(match &p {
                Principal::Admin => "admin".to_owned(),
                Principal::Key(entry) => format!("key {}", entry.record.id),
                Principal::Anonymous => "anonymous".to_owned(),
            });
        }
        Ok(p)
    }

    async fn identify(&self, svc: &Service, client: &Client) -> Result<Principal, CmsError> {
        let Some(value) = client.presented.key() else {
            return Ok(Principal::Anonymous);
        };
        let not_a_key = key_id_of(value).is_none();
        if not_a_key {
            self.admin_not_blocked(client.ip)?;
        }
        if bool::from(digest(value).ct_eq(&self.admin_digest)) {
            return Ok(Principal::Admin);
        }
        if not_a_key {
            self.admin_failed(client.ip)?;
        }
        let before_hashing = |key_id: &str| {
            let bucket = (client.ip, key_bucket(key_id));
            limit(&self.verify_limiter, &bucket).map_err(|e| match e {
                CmsError::RateLimited(wait) => Rejection::Throttled(wait),
                _ => Rejection::Busy,
            })
        };
        let entry = svc
            .verifier
            .verify(value, before_hashing)
            .await
            .map_err(|r| match r {
                Rejection::Throttled(wait) => CmsError::RateLimited(wait),
                Rejection::Busy => CmsError::RateLimited(std::time::Duration::from_secs(1)),
                Rejection::Expired => CmsError::Unauthorized("the API key has expired".into()),
                other => CmsError::Unauthorized(other.to_string()),
            })?;
        let bucket = key_bucket(&entry.record.id);
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

/// A key id (16 hex digits) as a limiter bucket.
fn key_bucket(id: &str) -> u64 {
    u64::from_str_radix(id, 16).unwrap_or_default()
}

fn owner_role(svc: &Service, entry: &KeyEntry) -> Result<super::rights::Role, CmsError> {
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
