//! keyward's CRD schemas (crds/keyward.dev.yaml, the file the chart ships) applied to writes
//! of its resources as the API server applies a structural schema
//! (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/):
//! unknown fields are pruned, `null` is pruned where the schema does not allow it, defaults
//! are filled in, and types, enums, patterns, lengths, bounds, required fields and date-time
//! formats are checked (422 Invalid, naming each field). An update is held only to what it
//! changes: a field stored invalid (under an older schema) and left as it was passes, as with
//! the API server's CRD validation ratcheting (GA in Kubernetes 1.33,
//! https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-ratcheting).
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Per resource plural: the schema of its served version.
pub struct Schemas(HashMap<String, Value>);

impl Schemas {
    /// The CRDs keyward ships.
    pub fn keyward() -> Schemas {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/keyward.dev.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = HashMap::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let crd = Value::deserialize(doc).unwrap();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_owned();
            let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
            out.insert(plural, schema);
        }
        Schemas(out)
    }

    /// The schema of resource `plural` (`openAPIV3Schema`).
    pub fn root(&self, plural: &str) -> &Value {
        &self.0[plural]
    }

    /// Makes `obj` conform to its schema (pruning, defaulting) or says why it cannot: the
    /// spec and other top-level fields for a write of the object, `status` only for a write
    /// of the status subresource. Resources without a schema here are left alone.
    pub fn conform(
        &self,
        plural: &str,
        obj: &mut Value,
        status_only: bool,
        old: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        let Some(root) = self.0.get(plural) else {
            return Ok(());
        };
        let Some(fields) = obj.as_object_mut() else {
            return Err(vec!["the object is not a JSON object".into()]);
        };
        let properties = root["properties"].as_object().cloned().unwrap_or_default();
        let mut errors: Errors = Vec::new();
        // apiVersion, kind and metadata are the API server's; the rest is the schema's.
        let own = |k: &str| !matches!(k, "apiVersion" | "kind" | "metadata");
        let unknown: Vec<String> = fields
            .keys()
            .filter(|k| own(k) && !properties.contains_key(*k))
            .cloned()
            .collect();
        for k in unknown {
            fields.remove(&k);
        }
        for (name, schema) in &properties {
            if (name == "status") != status_only {
                continue;
            }
            conform_field(fields, name, schema, name, &format!("/{name}"), &mut errors);
        }
        if !status_only {
            for name in required(root) {
                if !fields.contains_key(&name) {
                    errors.push((format!("/{name}"), format!("{name}: Required value")));
                }
            }
        }
        // Ratcheting: what an update leaves as it was is not held to the schema.
        if let Some(old) = old {
            errors.retain(|(at, _)| old.pointer(at) != obj.pointer(at));
        }
        let mut errors: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
        // Then the CEL rules, on a spec this write changes (a spec stored under an older schema
        // and left as it was passes, as the API server ratchets unchanged values).
        let spec_changed = old.is_none_or(|o| o.get("spec") != obj.get("spec"));
        if errors.is_empty() && !status_only && spec_changed {
            errors = cel_errors(root, obj);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn required(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// Errors found, each with the JSON pointer of its field.
type Errors = Vec<(String, String)>;

/// The field `name` of `parent`: null pruned unless nullable, default filled in, then checked.
fn conform_field(
    parent: &mut Map<String, Value>,
    name: &str,
    schema: &Value,
    path: &str,
    at: &str,
    errors: &mut Errors,
) {
    if parent.get(name).is_some_and(Value::is_null) && schema["nullable"] != true {
        parent.remove(name);
    }
    if !parent.contains_key(name) {
        if let Some(default) = schema.get("default") {
            parent.insert(name.to_owned(), default.clone());
        }
    }
    if let Some(v) = parent.get_mut(name) {
        conform_value(v, schema, path, at, errors);
    }
}

fn conform_value(v: &mut Value, schema: &Value, path: &str, at: &str, errors: &mut Errors) {
    if v.is_null() {
        return; // allowed: null where not nullable was pruned before
    }
    let shown = || {
        let s = v.to_string();
        if s.len() > 60 {
            format!(
                "{}...",
                &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]
            )
        } else {
            s
        }
    };
    let want = schema["type"].as_str().unwrap_or_default();
    let type_ok = match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push((
            at.to_owned(),
            format!(
                "{path}: Invalid value: \"{}\": {path} in body must be of type {want}: \"{}\"",
                json_type(v),
                shown()
            ),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            errors.push((
                at.to_owned(),
                format!(
                    "{path}: Unsupported value: {}: supported values: {}",
                    shown(),
                    list.join(", ")
                ),
            ));
        }
    }
    if let Some(s) = v.as_str() {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema["maxLength"].as_u64().filter(|m| chars > *m) {
            errors.push((
                at.to_owned(),
                format!("{path}: Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema["minLength"].as_u64().filter(|m| chars < *m) {
            errors.push((at.to_owned(), format!("{path}: Invalid value: \"{s}\": {path} in body should be at least {min} chars long")));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            if !regex::Regex::new(pattern).is_ok_and(|re| re.is_match(s)) {
                errors.push((
                    at.to_owned(),
                    format!(
                        "{path}: Invalid value: {}: {path} in body should match '{pattern}'",
                        shown()
                    ),
                ));
            }
        }
        if schema["format"] == "date-time" && s.parse::<jiff::Timestamp>().is_err() {
            errors.push((
                at.to_owned(),
                format!(
                    "{path}: Invalid value: {}: {path} in body must be of type date-time",
                    shown()
                ),
            ));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema["minimum"].as_f64().filter(|m| n < *m) {
            errors.push((at.to_owned(), format!("{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}")));
        }
        if let Some(max) = schema["maximum"].as_f64().filter(|m| n > *m) {
            errors.push((
                at.to_owned(),
                format!(
                "{path}: Invalid value: {n}: {path} in body should be less than or equal to {max}"
            ),
            ));
        }
    }
    if let Some(items) = v.as_array_mut() {
        if let Some(max) = schema["maxItems"]
            .as_u64()
            .filter(|m| items.len() as u64 > *m)
        {
            errors.push((
                at.to_owned(),
                format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ),
            ));
        }
        for (i, item) in items.iter_mut().enumerate() {
            conform_value(
                item,
                &schema["items"],
                &format!("{path}[{i}]"),
                &format!("{at}/{i}"),
                errors,
            );
        }
        duplicates(items, schema, path, at, errors);
    }
    if let Some(fields) = v.as_object_mut() {
        if schema["x-kubernetes-preserve-unknown-fields"] == true {
            return;
        }
        if let Some(each) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            for (k, child) in fields.iter_mut() {
                conform_value(
                    child,
                    each,
                    &format!("{path}.{k}"),
                    &format!("{at}/{}", escape(k)),
                    errors,
                );
            }
            return;
        }
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let unknown: Vec<String> = fields
            .keys()
            .filter(|k| !properties.contains_key(*k))
            .cloned()
            .collect();
        for k in unknown {
            fields.remove(&k);
        }
        for (name, child) in &properties {
            conform_field(
                fields,
                name,
                child,
                &format!("{path}.{name}"),
                &format!("{at}/{}", escape(name)),
                errors,
            );
        }
        for name in required(schema) {
            if !fields.contains_key(&name) {
                errors.push((
                    format!("{at}/{}", escape(&name)),
                    format!("{path}.{name}: Required value"),
                ));
            }
        }
    }
}

/// A list of type `set` holds each value once, one of type `map` each key once (the API
/// server's "Duplicate value", naming the later entry).
fn duplicates(items: &[Value], schema: &Value, path: &str, at: &str, errors: &mut Errors) {
    let key = |item: &Value| -> Value {
        match schema["x-kubernetes-list-type"].as_str() {
            Some("set") => item.clone(),
            Some("map") => {
                let names = schema["x-kubernetes-list-map-keys"].as_array();
                let mut k = Map::new();
                for n in names.into_iter().flatten().filter_map(Value::as_str) {
                    k.insert(n.to_owned(), item[n].clone());
                }
                Value::Object(k)
            }
            _ => Value::Null,
        }
    };
    if !matches!(
        schema["x-kubernetes-list-type"].as_str(),
        Some("set" | "map")
    ) {
        return;
    }
    let keys: Vec<Value> = items.iter().map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].contains(k) {
            errors.push((
                format!("{at}/{i}"),
                format!("{path}[{i}]: Duplicate value: {k}"),
            ));
        }
    }
}

/// The CRD's CEL rules (`x-kubernetes-validations`) over `obj`, as the API server evaluates
/// them after defaulting (kube-cel; it evaluates the rules, it does not cost them): each rule
/// that fails, as `path: Invalid value: message`.
pub fn cel_errors(schema: &Value, obj: &Value) -> Vec<String> {
    match kube_cel::validate(schema, obj, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                let reason = match e.reason.as_deref() {
                    Some("FieldValueRequired") => "Required value",
                    Some("FieldValueForbidden") => "Forbidden",
                    Some("FieldValueDuplicate") => "Duplicate value",
                    _ => "Invalid value",
                };
                format!("{}: {reason}: {}", e.field_path, e.message)
            })
            .collect(),
    }
}

/// A JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
