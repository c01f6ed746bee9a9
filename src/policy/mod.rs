//! The custom resources and their offline validation.

pub mod duration;
pub mod load;
mod types;
pub mod validate;

pub use types::*;

use kube::CustomResourceExt;

/// The CRDs as multi-document YAML: what `keyward crd` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in [
        ApiKeyPolicy::crd(),
        CmsConnection::crd(),
        ClusterCmsConnection::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
