//! What Strapi's API-token model can hold, for the validator: everything else is refused by field,
//! with these reasons, before any call.

use super::tag::compose_description;
use crate::model::capabilities::{Capabilities, Lifetimes};
use crate::model::{KeySpec, Scope};

/// Strapi's lifespans besides unlimited (its `API_TOKEN_LIFESPANS`).
pub const LIFESPAN_DAYS: [i64; 3] = [7, 30, 90];
/// Strapi stores a description as a `string` attribute: 255 characters on SQL databases.
pub const DESCRIPTION_MAX: usize = 255;

pub const CAPABILITIES: Capabilities = Capabilities {
    provider: "strapi",
    cors: Some("Strapi's CORS origins are set in config/middlewares.js, not through its API"),
    public_endpoints: Some(
        "Strapi's public access is the users-permissions Public role, outside its token API",
    ),
    non_content_kinds: Some(
        "Strapi API tokens are content keys; it has no management or personal keys",
    ),
    owner: Some("Strapi API tokens belong to no member (no personal keys)"),
    management_permissions: Some(
        "Strapi API tokens reach the content API only, not its admin API",
    ),
    environments: Some("Strapi has no environments in its token model"),
    scopes: Some((
        &[Scope::ContentRead, Scope::ContentWrite],
        "'{}' has no Strapi equivalent (only content:read and content:write map to content-API actions)",
    )),
    draft_permissions: Some(
        "Strapi tokens cannot grant {}: drafts are the admin panel's, not the token's",
    ),
    lifetimes: Lifetimes::Days {
        allowed: &LIFESPAN_DAYS,
        reason: "Strapi token lifespans are 7d, 30d or 90d, or unlimited (leave expiresAfter out)",
        renew_without_expiry: "without expiresAfter a Strapi token never expires (unlimited lifespan): there is nothing to renew",
    },
    key_api: None,
    value_check: Some("Strapi does not tell whose an API token is (no call answers with its id), so a value cannot be matched to a key"),
    rotation_overlap: Some("Strapi's regenerate ends the old value at once; it has no overlap"),
    description: Some(description_fits),
};

/// Strapi keeps 255 characters of description, keyward's ownership tag included.
pub(super) fn description_fits(spec: &KeySpec) -> Option<String> {
    let n = compose_description(spec).chars().count();
    (n > DESCRIPTION_MAX).then(|| {
        format!("Strapi keeps {DESCRIPTION_MAX} characters of description; with keyward's ownership tag this one needs {n}")
    })
}
