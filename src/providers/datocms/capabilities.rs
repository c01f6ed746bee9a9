//! What DatoCMS's API tokens and roles can hold, for the validator: everything else is refused
//! by field, with these reasons, before any call.

use crate::model::capabilities::{Capabilities, Lifetimes};
use crate::model::Scope;

pub const CAPABILITIES: Capabilities = Capabilities {
    provider: "datocms",
    cors: Some("DatoCMS's Content Delivery API answers every origin; it has no CORS setting"),
    public_endpoints: Some("every DatoCMS API needs a token: there are no public endpoints"),
    non_content_kinds: Some(
        "a keyward key in DatoCMS is an API token with content rights only; make management tokens in its console",
    ),
    owner: Some("a DatoCMS API token belongs to the project, not to a collaborator"),
    management_permissions: Some(
        "keyward's DatoCMS tokens hold rights on models only, never project settings",
    ),
    // Environments map to the role's per-environment rights; the provider refuses names the
    // project does not have.
    environments: None,
    scopes: Some((
        &[Scope::ContentRead, Scope::ContentWrite],
        "'{}' has no DatoCMS equivalent (only content:read and content:write map to a role's rights)",
    )),
    // Drafts are the token-wide `can_access_cda_preview`; the provider refuses drafts on some
    // models only, and GET_ALL_CLOSED.
    draft_permissions: None,
    lifetimes: Lifetimes::Days {
        allowed: &[],
        reason: "a DatoCMS API token never expires (leave expiresAfter out)",
        renew_without_expiry: "a DatoCMS API token never expires: there is nothing to renew",
    },
    key_api: None,
    value_check: Some("keyward does not check DatoCMS tokens against their id yet"),
    rotation_overlap: Some(
        "DatoCMS regenerates a token in place: the old value ends at once, with no overlap",
    ),
    description: None,
};
