//! The custom resources and their offline validation.

pub(crate) mod ceilings;
pub(crate) mod connection;
pub mod duration;
pub mod load;
pub(crate) mod locate;
mod secrets_read;
mod types;
pub mod validate;

pub use secrets_read::{SecretField, SecretsRead};
pub use types::*;

use kube::CustomResourceExt;

impl ApiKeyPolicy {
    /// The policy's identity, as its keys' ownership tags carry it (with its uid when it is an
    /// object of a cluster).
    pub fn policy_id(&self) -> crate::model::desired::PolicyId {
        crate::model::desired::PolicyId {
            namespace: self
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: self.metadata.name.clone().unwrap_or_default(),
            uid: self.metadata.uid.clone(),
        }
    }
}

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

/// Test manifests: policy `shop/p` with `keys` (YAML list items, indented four spaces).
#[cfg(test)]
pub(crate) fn policy_yaml(keys: &str) -> String {
    format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  keys:\n{keys}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The schema type at a printer column's JSONPath (`.a.b`, `.a[?(...)].c`, `.a[*].c`).
    fn type_at(schema: &Value, path: &str) -> Option<String> {
        // Filters and wildcards (`[?(@.type=="Ready")]`, `[*]`) only mean "into the items".
        let mut plain = String::new();
        let mut depth = 0;
        for c in path.chars() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    plain.push_str("[]");
                }
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let mut node = schema;
        for part in plain.trim_start_matches('.').split('.') {
            let (name, into_items) = match part.find('[') {
                Some(i) => (&part[..i], true),
                None => (part, false),
            };
            node = node.get("properties")?.get(name)?;
            if into_items {
                node = node.get("items")?;
            }
        }
        node.get("type")?.as_str().map(str::to_owned)
    }

    #[test]
    fn printer_columns_have_the_type_of_what_they_print() {
        let crd = serde_json::to_value(ApiKeyPolicy::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        assert!(columns.len() >= 3);
        for c in columns {
            let (kind, path) = (c["type"].as_str().unwrap(), c["jsonPath"].as_str().unwrap());
            if path.starts_with(".metadata.") {
                continue; // Kubernetes' own ObjectMeta, not in the CRD's schema
            }
            let expected = if kind == "date" { "string" } else { kind };
            assert_eq!(type_at(schema, path).as_deref(), Some(expected), "{c}");
        }
    }

    /// Every property under `schema` (path, schema), depth first.
    fn properties<'a>(schema: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                let at = format!("{path}.{name}");
                out.push((at.clone(), p));
                properties(p, &at, out);
            }
        }
        if let Some(items) = schema.get("items") {
            properties(items, &format!("{path}[]"), out);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            properties(values, &format!("{path}{{}}"), out);
        }
    }

    /// `kubectl explain` reads each kind and field in keyward's words: every property has a
    /// description, and no kind has the derive's placeholder text.
    #[test]
    fn every_kind_and_field_is_described() {
        for crd in [
            ApiKeyPolicy::crd(),
            CmsConnection::crd(),
            ClusterCmsConnection::crd(),
        ] {
            let crd = serde_json::to_value(crd).unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let top = schema["description"].as_str().unwrap_or_default();
            assert!(
                !top.is_empty() && !top.contains("Auto-generated"),
                "{kind}: {top}"
            );
            let mut all = Vec::new();
            properties(schema, "", &mut all);
            let undescribed: Vec<&str> = all
                .iter()
                .filter(|(path, p)| {
                    // Kubernetes' own types (metadata, conditions, label selectors) bring
                    // their own descriptions or none; keyward's fields all have one.
                    !path.starts_with(".metadata")
                        && p.get("description")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                })
                .map(|(path, _)| path.as_str())
                .collect();
            assert!(undescribed.is_empty(), "{kind}: {undescribed:?}");
        }
    }
}
