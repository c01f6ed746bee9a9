//! The events the operator records on a policy: one reason per kind of change (kube's
//! Recorder folds events with the same reason into one series, keeping the first note), and
//! the Ready condition's reason when it flips.

use super::context::Context;
use crate::plan::Action;
use crate::policy::ApiKeyPolicy;
use kube::runtime::events::{Event, EventType};
use kube::Resource;

/// The reasons of the events that are not a condition's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    KeyCreated,
    /// A key made by hand taken over (`adopt`).
    KeyAdopted,
    KeyUpdated,
    KeyRotated,
    KeyReplaced,
    SecretRewritten,
    KeyRevoked,
    SettingsChanged,
    /// A policy's keys revoked together (it left a connection, or was offboarded).
    KeysRevoked,
    /// Keys on a connection that is gone: nothing can revoke them.
    KeysLeft,
    /// A reader Role or RoleBinding of that name is someone else's.
    ReaderConflict,
    /// Workloads restarted for a new value.
    Restarted,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "KeyCreated",
            Self::KeyAdopted => "KeyAdopted",
            Self::KeyUpdated => "KeyUpdated",
            Self::KeyRotated => "KeyRotated",
            Self::KeyReplaced => "KeyReplaced",
            Self::SecretRewritten => "SecretRewritten",
            Self::KeyRevoked => "KeyRevoked",
            Self::SettingsChanged => "SettingsChanged",
            Self::KeysRevoked => "KeysRevoked",
            Self::KeysLeft => "KeysLeft",
            Self::ReaderConflict => "ReaderConflict",
            Self::Restarted => "Restarted",
        }
    }

    /// The reason for an applied action.
    pub fn of(a: &Action) -> EventReason {
        match a {
            Action::Create { .. } => Self::KeyCreated,
            Action::Adopt { .. } => Self::KeyAdopted,
            Action::Update { .. } => Self::KeyUpdated,
            Action::Rotate { .. } => Self::KeyRotated,
            Action::Replace { .. } => Self::KeyReplaced,
            Action::WriteSecret { .. } => Self::SecretRewritten,
            Action::Revoke { .. } => Self::KeyRevoked,
            Action::SetCors { .. } | Action::SetPublic { .. } => Self::SettingsChanged,
        }
    }
}

/// Records an event on `p`; a failure to record one is logged, never fatal.
pub async fn record(ctx: &Context, p: &ApiKeyPolicy, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an event");
    }
}
