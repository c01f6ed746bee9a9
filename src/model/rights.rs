//! Permissions, scopes and the operations they grant.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A content-API permission (microCMS's default/individual permission items).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ContentPermission {
    #[serde(rename = "GET")]
    Get,
    /// List every draft ("retrieve all draft content"); requires `GET`.
    #[serde(rename = "GET_ALL_DRAFTS")]
    GetAllDrafts,
    /// List every closed entry ("retrieve all expired content"); requires `GET`.
    #[serde(rename = "GET_ALL_CLOSED")]
    GetAllClosed,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
}

impl ContentPermission {
    pub const ALL: [ContentPermission; 7] = [
        Self::Get,
        Self::GetAllDrafts,
        Self::GetAllClosed,
        Self::Post,
        Self::Put,
        Self::Patch,
        Self::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::GetAllDrafts => "GET_ALL_DRAFTS",
            Self::GetAllClosed => "GET_ALL_CLOSED",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Write methods are what a `public` key may never hold.
    pub fn is_write(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch | Self::Delete)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for ContentPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope of the scoped CMS. Rights are the union of permissions and scopes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Scope {
    #[serde(rename = "content:read")]
    ContentRead,
    #[serde(rename = "content:write")]
    ContentWrite,
    #[serde(rename = "cache:purge")]
    CachePurge,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "export:write")]
    ExportWrite,
    #[serde(rename = "*")]
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentRead => "content:read",
            Self::ContentWrite => "content:write",
            Self::CachePurge => "cache:purge",
            Self::WebhooksWrite => "webhooks:write",
            Self::ExportWrite => "export:write",
            Self::All => "*",
        }
    }

    /// Everything but `content:read` changes something.
    pub fn is_write(self) -> bool {
        !matches!(self, Self::ContentRead)
    }

    /// The content permissions this scope grants on every API.
    pub fn content_grants(self) -> PermSet {
        match self {
            Self::ContentRead => PermSet::of(&[ContentPermission::Get]),
            Self::ContentWrite => PermSet::of(&[
                ContentPermission::Post,
                ContentPermission::Put,
                ContentPermission::Patch,
                ContentPermission::Delete,
            ]),
            Self::All => PermSet::ALL,
            Self::CachePurge | Self::WebhooksWrite | Self::ExportWrite => PermSet::EMPTY,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Management permissions (Kontent.ai management keys, microCMS management API items).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ManagementPermission {
    /// Read every entry, drafts and closed ones included.
    #[serde(rename = "content:read")]
    ContentRead,
    /// Create, edit and delete entries (includes reading them).
    #[serde(rename = "content:write")]
    ContentWrite,
    /// Change an entry's publication status (publish, close).
    #[serde(rename = "content:status")]
    ContentStatus,
    #[serde(rename = "members:read")]
    MembersRead,
    /// Add and remove members, define roles.
    #[serde(rename = "members:manage")]
    MembersManage,
    /// Create, change, regenerate and revoke API keys.
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// APIs, CORS origins and public endpoints.
    #[serde(rename = "settings:manage")]
    SettingsManage,
}

impl ManagementPermission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentRead => "content:read",
            Self::ContentWrite => "content:write",
            Self::ContentStatus => "content:status",
            Self::MembersRead => "members:read",
            Self::MembersManage => "members:manage",
            Self::KeysManage => "keys:manage",
            Self::SettingsManage => "settings:manage",
        }
    }

    /// What this management permission grants on the content API.
    pub fn content_grants(self) -> PermSet {
        use ContentPermission::*;
        match self {
            Self::ContentRead => PermSet::of(&[Get, GetAllDrafts, GetAllClosed]),
            Self::ContentWrite => {
                PermSet::of(&[Get, GetAllDrafts, GetAllClosed, Post, Put, Patch, Delete])
            }
            Self::ContentStatus => PermSet::STATUS,
            _ => PermSet::EMPTY,
        }
    }

    /// Whether holding it reaches every API at once: content rights on all of them, opening any
    /// of them to everyone (`settings:manage`), or members whose roles do
    /// (`members:manage`). Under a ceiling on APIs such a permission cannot be given.
    pub fn reaches_every_api(self) -> bool {
        !matches!(self, Self::MembersRead | Self::KeysManage)
    }

    /// `members:manage` includes reading members.
    pub fn implies(self, needed: ManagementPermission) -> bool {
        self == needed || (self == Self::MembersManage && needed == Self::MembersRead)
    }
}

impl fmt::Display for ManagementPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service operations outside the content and key APIs, each granted by one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceOp {
    CachePurge,
    WebhooksReplay,
    Export,
}

impl ServiceOp {
    pub fn scope(self) -> Scope {
        match self {
            Self::CachePurge => Scope::CachePurge,
            Self::WebhooksReplay => Scope::WebhooksWrite,
            Self::Export => Scope::ExportWrite,
        }
    }
}

/// A set of content permissions as a bit set: the authorization hot path is a mask test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermSet(u8);

impl PermSet {
    pub const EMPTY: PermSet = PermSet(0);
    pub const ALL: PermSet = PermSet(0xff);
    /// Not a user-facing permission: the right to change status only (management `content:status`).
    pub const STATUS: PermSet = PermSet(1 << 7);

    pub fn of(perms: &[ContentPermission]) -> PermSet {
        PermSet(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn contains(self, p: ContentPermission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Whether the status-only right (management `content:status`) is in the set.
    pub fn has_status(self) -> bool {
        self.0 & Self::STATUS.0 != 0
    }

    pub fn union(self, other: PermSet) -> PermSet {
        PermSet(self.0 | other.0)
    }

    pub fn allows(self, op: ContentOp) -> bool {
        match op {
            ContentOp::Publish => self.contains(ContentPermission::Patch) || self.has_status(),
            other => self.contains(other.required()),
        }
    }
}

/// An operation on the content API, and the permission it needs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ContentOp {
    List,
    Get,
    Create,
    Update,
    Delete,
    Publish,
    /// `PUT /api/{api}/{id}`: create or replace with a chosen id.
    Replace,
}

impl ContentOp {
    /// The operations that can be made public per API (the scoped CMS's public endpoints).
    pub const PUBLIC_OPERATIONS: [ContentOp; 6] = [
        Self::List,
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Publish,
    ];

    pub fn required(self) -> ContentPermission {
        match self {
            Self::List | Self::Get => ContentPermission::Get,
            Self::Create => ContentPermission::Post,
            Self::Replace => ContentPermission::Put,
            Self::Update | Self::Publish => ContentPermission::Patch,
            Self::Delete => ContentPermission::Delete,
        }
    }

    /// Public-endpoint settings name `update` for both PATCH and PUT.
    pub fn public_name(self) -> ContentOp {
        match self {
            Self::Replace => Self::Update,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Publish => "publish",
            Self::Replace => "replace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_grant_their_documented_operations() {
        assert!(Scope::ContentRead.content_grants().allows(ContentOp::List));
        assert!(!Scope::ContentRead
            .content_grants()
            .allows(ContentOp::Create));
        let w = Scope::ContentWrite.content_grants();
        for op in [
            ContentOp::Create,
            ContentOp::Update,
            ContentOp::Delete,
            ContentOp::Publish,
        ] {
            assert!(w.allows(op), "{op:?}");
        }
        assert!(!w.allows(ContentOp::Get));
        assert!(Scope::All
            .content_grants()
            .contains(ContentPermission::GetAllDrafts));
    }

    #[test]
    fn status_right_publishes_but_does_not_edit() {
        let s = ManagementPermission::ContentStatus.content_grants();
        assert!(s.allows(ContentOp::Publish));
        assert!(!s.allows(ContentOp::Update));
        assert!(!s.allows(ContentOp::Get));
    }
}
