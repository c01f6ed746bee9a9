//! The provider-neutral key model: the union of the seed systems' concepts (microCMS content
//! permissions, the scoped CMS's scopes and key types, Kontent.ai's key kinds, management
//! permissions and expiry rules). The reference CMS enforces it; policies are validated against it.

mod rights;
mod settings;
mod spec;
mod value;

pub use rights::{ContentOp, ContentPermission, ManagementPermission, PermSet, Scope, ServiceOp};
pub use settings::{check_origin, Plan};
pub use spec::{
    expiry_rules, human, valid_label_key, valid_label_value, valid_slug, ApiPermission,
    ExpiryRules, KeyKind, KeySpec, KeyType, SpecError,
};
pub use value::{fingerprint, KeyValue};
