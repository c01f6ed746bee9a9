//! keyward: headless-CMS API keys as code.
//!
//! - [`model`]: the provider-neutral key model and its offline rules.
//! - [`cms`]: the embedded reference CMS key service (`keyward cms serve`).

pub mod cms;
pub mod dirlock;
pub mod engine;
pub mod files;
pub mod gitops;
pub mod model;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod providers;
