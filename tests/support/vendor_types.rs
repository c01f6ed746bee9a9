//! Checks JSON against a vendor's own TypeScript types with `tsc --strict` (the vendors'
//! packages and TypeScript come from `scripts/vendor-sdks.sh`): a missing field, a field the
//! type does not have, or a wrong value is an error.

use serde_json::Value;
use std::path::PathBuf;

/// A call to a stand-in and its answer, as the stand-in recorded it, for the checks against
/// the vendor's types.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// With its query.
    pub path: String,
    pub request: Option<Value>,
    pub status: u16,
    pub response: Value,
}

/// Where `scripts/vendor-sdks.sh` installed the vendors' packages.
pub fn vendor_dir() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(super::node_app::script("vendor-sdks"))
        .arg("install")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// What `tsc` says of each `(what, type, value)`, with `import` (a TypeScript import line)
/// first; `None`: every value is of its type.
pub fn type_errors(import: &str, values: &[(String, String, Value)]) -> Option<String> {
    let mut ts = format!("{import}\n");
    for (n, (what, t, v)) in values.iter().enumerate() {
        ts.push_str(&format!("// {what}\nexport const value{n}: {t} = {v};\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exchanges.ts");
    std::fs::write(&file, &ts).unwrap();
    let tsc = vendor_dir().join("node_modules/typescript/bin/tsc");
    let out = std::process::Command::new("bash")
        .arg(super::node_app::script("vendor-sdks"))
        .arg("run")
        .arg(tsc)
        .args([
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--target",
            "es2020",
            "--moduleResolution",
            "node",
        ])
        .arg(&file)
        .output()
        .unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
