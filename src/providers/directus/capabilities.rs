//! What Directus's user-and-policy model can hold, for the validator: everything else is refused
//! by field, with these reasons, before any call.

use crate::model::capabilities::{Capabilities, Lifetimes};
use crate::model::Scope;

pub const CAPABILITIES: Capabilities = Capabilities {
    provider: "directus",
    cors: Some("Directus's CORS origins are its CORS_* environment settings, not its API"),
    public_endpoints: Some(
        "Directus's Public policy applies to every request, with or without a key; keyward does not manage it",
    ),
    non_content_kinds: Some(
        "a keyward key in Directus is a user with content rights only; it has no management or personal keys",
    ),
    owner: Some("a keyward key in Directus is a user of its own, owned by no member"),
    management_permissions: Some(
        "keyward's Directus keys hold rights on content collections only, never admin or app access",
    ),
    environments: Some("Directus has no environments in its access model"),
    scopes: Some((
        &[Scope::ContentRead, Scope::ContentWrite],
        "'{}' has no Directus equivalent (only content:read and content:write map to collection rights)",
    )),
    // Drafts map to a filter on a `status` field; the provider refuses them where a collection
    // has none.
    draft_permissions: None,
    lifetimes: Lifetimes::Days {
        allowed: &[],
        reason: "a Directus static token never expires (leave expiresAfter out)",
        renew_without_expiry: "a Directus static token never expires: there is nothing to renew",
    },
    key_api: None,
    value_check: Some("keyward does not check Directus tokens against their user yet"),
    rotation_overlap: Some(
        "a Directus user has one static token: a new value ends the old one at once, with no overlap",
    ),
    description: None,
};
