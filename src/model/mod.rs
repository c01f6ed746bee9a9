//! The provider-neutral key model: the union of the seed systems' concepts (microCMS content
//! permissions, the scoped CMS's scopes and key types, Kontent.ai's key kinds, management
//! permissions and expiry rules). The reference CMS enforces it; policies are validated against it.

pub(crate) mod capabilities;
pub mod desired;
mod digest;
pub mod effective;
pub(crate) mod live;
mod rights;
pub mod secret;
mod settings;
mod spec;
pub(crate) mod template;
mod time;
mod value;

pub use digest::{sha256_hex, short_hash};
pub use rights::{ContentOp, ContentPermission, ManagementPermission, PermSet, Scope, ServiceOp};
pub use settings::{check_endpoint, check_origin, endpoint_host, is_metadata_address, Tier};
pub use spec::{
    expiry_rules, human, normalize, valid_label_key, valid_label_value, valid_slug, ApiPermission,
    CelRule, ExpiryRules, KeyKind, KeySpec, KeyType, SpecError, DRAFTS_NEED_GET,
};
pub use time::{days, earlier, later, rfc3339};
pub use value::{fingerprint, KeyValue};
