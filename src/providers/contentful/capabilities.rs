//! What Contentful's Delivery API keys can hold, for the validator: everything else is refused
//! by field, with these reasons, before any call.

use crate::model::capabilities::{Capabilities, Lifetimes};
use crate::model::Scope;

pub const CAPABILITIES: Capabilities = Capabilities {
    provider: "contentful",
    cors: Some("Contentful's delivery APIs answer every origin; they have no CORS setting"),
    public_endpoints: Some("every Contentful delivery API needs a key: there are no public endpoints"),
    non_content_kinds: Some(
        "a keyward key in Contentful is a Delivery API key; make management tokens in its web app",
    ),
    owner: Some("a Contentful Delivery API key belongs to the space, not to a member"),
    management_permissions: Some("a Contentful Delivery API key reads content only"),
    // Environments are the key's list of environments; the provider refuses names the space
    // does not have.
    environments: None,
    scopes: Some((
        &[Scope::ContentRead],
        "'{}' has no Contentful equivalent (a Delivery API key only reads: content:read)",
    )),
    // Rights (read-only, every content type) are checked by the provider.
    draft_permissions: None,
    lifetimes: Lifetimes::Days {
        allowed: &[],
        reason: "a Contentful Delivery API key never expires (leave expiresAfter out)",
        renew_without_expiry: "a Contentful Delivery API key never expires: there is nothing to renew",
    },
    key_api: None,
    value_check: Some("keyward does not check Contentful keys against their id yet"),
    rotation_overlap: Some(
        "Contentful cannot regenerate a key: keyward makes a new one and deletes the old one as soon as the new one answers, with no overlap",
    ),
    description: None,
};
