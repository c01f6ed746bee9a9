//! keyward: headless-CMS API keys as code.
//!
//! A run (one `keyward plan`/`apply`, or one reconcile of a policy) is one pipeline of named
//! steps: dereference, validate, observe, plan, apply, publish, status. The modules, from the
//! bottom up (each uses only modules above it in this list):
//!
//! - [`model`]: the provider-neutral key model and its offline rules; the Secret contract
//!   ([`model::secret`]).
//! - [`files`]: size-capped reads of the files a run is given; [`dirlock`]: one writer per
//!   directory.
//! - [`providers`]: the `CmsProvider` trait, its registry, and the reference CMS, Strapi and
//!   Directus adapters.
//! - [`policy`]: the custom resources, manifest loading, offline validation into a desired
//!   state, and the one connection resolver that the CLI and the operator share.
//! - [`plan`]: the pure diff (desired vs live vs Secrets -> ordered actions) and its rendering.
//! - [`engine`]: observe and plan for both sides, and the one apply.
//! - [`cms`]: the embedded reference CMS key service (`keyward cms serve`); it uses [`model`],
//!   [`files`] and [`dirlock`] only.
//! - [`operator`]: the Kubernetes controller over the pipeline, and the Kubernetes Secret sink.
//! - [`gitops`]: `plan`/`apply` without a cluster (connections from the manifests, the
//!   embedded CMS, Secrets to a directory or to a cluster through the operator's sink, saved
//!   plans).

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
