//! Strategic merge patch as the API server applies it to the built-in types around keyward
//! (workloads' pod templates, object metadata): a list with a merge key is merged item by item
//! (`$patch: delete` removes one), a list the types mark as a merged set of strings is unioned
//! (`$deleteFromPrimitiveList/<field>` takes some out), `$patch: replace` replaces a map, `null`
//! removes a field, and every other list is replaced whole. Custom resources do not take it.

use serde_json::{Map, Value};

/// The merge key of the list at `path` (field names joined by dots, no indexes), from the
/// Kubernetes API types' `patchMergeKey`; `None`: the list is replaced whole.
fn merge_key(path: &str) -> Option<&'static str> {
    let last_two: Vec<&str> = path.rsplit('.').take(2).collect();
    match last_two.as_slice() {
        ["ownerReferences", "metadata"] => Some("uid"),
        ["containers" | "initContainers" | "ephemeralContainers", "spec"] => Some("name"),
        ["volumes" | "imagePullSecrets", "spec"] => Some("name"),
        ["env", "containers" | "initContainers"] => Some("name"),
        ["volumeMounts", "containers" | "initContainers"] => Some("mountPath"),
        ["ports", "containers" | "initContainers"] => Some("containerPort"),
        _ => None,
    }
}

/// Lists of strings the types merge as sets (`patchStrategy: merge` without a key).
fn merged_set(path: &str) -> bool {
    path == "metadata.finalizers" || path.ends_with(".metadata.finalizers")
}

/// Applies `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    merge_map(target, patch, "");
}

fn join(path: &str, field: &str) -> String {
    match path {
        "" => field.to_owned(),
        p => format!("{p}.{field}"),
    }
}

fn merge_map(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = Value::Object(without_directives(p));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Value::Array(gone)) = (t.get_mut(field), v) {
                have.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let sub = join(path, k);
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let cur = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(cur, items, &sub);
            }
            Value::Object(_) => merge_map(t.entry(k.clone()).or_insert(Value::Null), v, &sub),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(cur: &mut Value, items: &[Value], path: &str) {
    if !cur.is_array() {
        *cur = Value::Array(Vec::new());
    }
    let Some(list) = cur.as_array_mut() else {
        return;
    };
    if merged_set(path) {
        for item in items {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(path) else {
        *list = items.to_vec();
        return;
    };
    for item in items {
        let id = item.get(key).filter(|v| !v.is_null());
        let at = id.and_then(|id| list.iter().position(|x| x.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (delete, at) {
            (true, Some(i)) => {
                list.remove(i);
            }
            (true, None) => {}
            (false, Some(i)) => merge_map(&mut list[i], item, path),
            (false, None) => match item {
                Value::Object(m) => list.push(Value::Object(without_directives(m))),
                other => list.push(other.clone()),
            },
        }
    }
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
