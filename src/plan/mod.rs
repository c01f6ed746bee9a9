//! The pure diff: desired state vs the CMS's live state -> an ordered list of actions, and its
//! rendering for people (text with unified diffs) and pipelines (JSON).

mod diff;
mod render;
mod rotate;
#[cfg(test)]
pub(crate) mod testkit;

pub use diff::{diff, replace_overlap, spec_diff, Action, Plan};
pub use render::{flow_list, render_text, summary};
pub use rotate::{add_rotations, rotate_now, KeyTarget, RotateNow};
