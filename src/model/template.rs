//! `{{ placeholder }}` templates of Secret fields: checked when a policy is validated, rendered
//! when a Secret is written.

use std::collections::BTreeMap;

/// Placeholders allowed in `secret.extraFields`.
pub const TEMPLATE_VARS: [&str; 4] = ["endpoint", "keyId", "keyName", "expiresAt"];

/// Whether every placeholder of `t` is one of [`TEMPLATE_VARS`].
pub fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed '{{{{' in '{t}'"))?;
        let var = after[..end].trim();
        if !TEMPLATE_VARS.contains(&var) {
            return Err(format!(
                "unknown placeholder '{{{{ {var} }}}}' (known: {})",
                TEMPLATE_VARS.join(", ")
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Fills `{{ var }}` placeholders.
pub fn render_template(t: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let var = after[..end].trim();
                out.push_str(vars.get(var).map(String::as_str).unwrap_or_default());
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
