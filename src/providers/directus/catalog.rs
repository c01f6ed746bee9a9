//! The collections of a Directus that keys can be given rights on: every collection with a table
//! (folders have none) but Directus's own (`directus_*`), and whether each has a `status` field
//! (drafts map to an item filter on it).

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Collection name -> whether it has a `status` field.
    pub collections: BTreeMap<String, bool>,
}

impl Catalog {
    /// From `GET /collections` and `GET /fields` (each `{"data": [...]}`).
    pub fn from_listings(collections: &Value, fields: &Value) -> Result<Catalog, String> {
        let list = collections
            .get("data")
            .and_then(Value::as_array)
            .ok_or("the collection listing has no data array")?;
        let mut c = Catalog::default();
        for col in list {
            let Some(name) = col.get("collection").and_then(Value::as_str) else {
                continue;
            };
            let has_table = col.get("schema").is_some_and(|s| !s.is_null());
            if has_table && !name.starts_with("directus_") {
                c.collections.insert(name.to_owned(), false);
            }
        }
        let fields = fields
            .get("data")
            .and_then(Value::as_array)
            .ok_or("the field listing has no data array")?;
        for f in fields {
            let (Some(col), Some("status")) = (
                f.get("collection").and_then(Value::as_str),
                f.get("field").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Some(has) = c.collections.get_mut(col) {
                *has = true;
            }
        }
        Ok(c)
    }

    pub fn has_status(&self, collection: &str) -> bool {
        self.collections.get(collection).copied().unwrap_or(false)
    }

    /// For messages: "articles, authors" or "none".
    pub fn names(&self) -> String {
        if self.collections.is_empty() {
            "none".into()
        } else {
            self.collections
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn own_collections_with_tables_and_their_status_fields() {
        let cols = json!({"data": [
            {"collection": "articles", "schema": {"name": "articles"}},
            {"collection": "authors", "schema": {"name": "authors"}},
            {"collection": "a_folder", "schema": null},
            {"collection": "directus_users", "schema": {"name": "directus_users"}},
        ]});
        let fields = json!({"data": [
            {"collection": "articles", "field": "status"},
            {"collection": "authors", "field": "name"},
            {"collection": "directus_users", "field": "status"},
        ]});
        let c = Catalog::from_listings(&cols, &fields).unwrap();
        assert_eq!(
            c.collections,
            BTreeMap::from([("articles".into(), true), ("authors".into(), false)])
        );
        assert_eq!(c.names(), "articles, authors");
        assert!(Catalog::from_listings(&json!({}), &fields).is_err());
    }
}
