//! Reading manifests: files or directories of multi-document YAML, sorted by kind. Syntax errors
//! point at the line; type errors name the field path and its line. A field of the wrong type
//! is reported and left out, and the rest of the object still loads, so that one run reports
//! every problem of every file.

use super::locate::FieldMap;
use super::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where an object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line where the object's document starts; 0 for the path itself (it could not
    /// be read), shown without a line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            line => write!(f, "{}:{line}", self.file.display()),
        }
    }
}

impl Origin {
    /// The same file at another line (0 stays: the file as a whole).
    pub fn at_line(&self, line: Option<usize>) -> Origin {
        Origin {
            file: self.file.clone(),
            line: line.unwrap_or(self.line),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub origin: Origin,
    pub object: T,
    /// The line of each field, and the fields left out because they were malformed.
    pub fields: FieldMap,
}

/// Everything keyward reads from a set of manifests.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub policies: Vec<Sourced<ApiKeyPolicy>>,
    pub connections: Vec<Sourced<CmsConnection>>,
    pub cluster_connections: Vec<Sourced<ClusterCmsConnection>>,
    /// Credential Secrets for connections.
    pub secrets: Vec<Sourced<Secret>>,
    /// Namespaces, for the labels that cluster connections select on.
    pub namespaces: Vec<Sourced<Namespace>>,
    /// Documents of other kinds, skipped (kind, origin).
    pub skipped: Vec<(String, Origin)>,
    /// Objects of these kinds that could not be loaded at all (kind, namespace, name): what
    /// refers to them is not reported as missing as well.
    pub unloaded: Vec<(String, Option<String>, String)>,
    /// Each file read (`<stdin>` for standard input) with the SHA-256 of its text, in the
    /// order read: what a saved plan was made from.
    pub sources: Vec<(PathBuf, String)>,
}

impl ManifestSet {
    /// Whether `kind` `namespace/name` was in the manifests but could not be loaded.
    pub fn failed_to_load(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.unloaded.iter().any(|(k, ns, n)| {
            k == kind
                && ns.as_deref().unwrap_or("default") == namespace.unwrap_or("default")
                && n == name
        })
    }
}

/// A manifest that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{message}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
pub struct LoadError {
    pub origin: Origin,
    /// `Kind namespace/name`, when known.
    pub object: Option<String>,
    pub message: String,
}

const GROUP_VERSION: &str = "keyward.dev/v1alpha1";

/// Reads every `.yaml`/`.yml` file under `paths` (directories recursively, in name order).
pub fn load(paths: &[PathBuf]) -> Result<ManifestSet, Vec<LoadError>> {
    let (set, errors) = load_all(paths);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Reads what can be read of `paths`, with every problem found on the way: the set holds the
/// objects that loaded (without their malformed fields), for validation to go on with.
pub fn load_all(paths: &[PathBuf]) -> (ManifestSet, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in paths {
        if p.as_os_str() == STDIN {
            files.push(p.clone());
            continue;
        }
        let before = files.len();
        collect(p, &mut files, &mut errors, &mut seen);
        if files.len() == before && p.is_dir() && errors.is_empty() {
            errors.push(LoadError {
                origin: Origin {
                    file: p.clone(),
                    line: 0,
                },
                object: None,
                message: "no manifests here (no .yaml or .yml files)".into(),
            });
        }
    }
    let mut set = ManifestSet::default();
    for file in files {
        let read = if file.as_os_str() == STDIN {
            read_stdin().map(|text| (PathBuf::from(STDIN_NAME), text))
        } else {
            std::fs::read_to_string(&file).map(|text| (file.clone(), text))
        };
        match read {
            Ok((name, text)) => {
                set.sources.push((name.clone(), digest(text.as_bytes())));
                load_text(&name, &text, &mut set, &mut errors)
            }
            Err(e) => errors.push(LoadError {
                origin: Origin {
                    file: if file.as_os_str() == STDIN {
                        PathBuf::from(STDIN_NAME)
                    } else {
                        file.clone()
                    },
                    line: 0,
                },
                object: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (set, errors)
}

/// The path that means standard input (`-f -`): `kustomize build overlays/prod | keyward plan
/// -f -`.
pub const STDIN: &str = "-";
/// How messages name standard input: `<stdin>:LINE`.
const STDIN_NAME: &str = "<stdin>";
/// The most standard input may hold (a large repository's rendered manifests fit).
const MAX_STDIN: u64 = 64 * 1024 * 1024;

/// SHA-256 in hex.
fn digest(bytes: &[u8]) -> String {
    crate::model::sha256_hex(bytes)
}

/// Standard input, whole, as text of at most `MAX_STDIN` bytes.
fn read_stdin() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_STDIN} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// Reads manifests from a string, as if from the file `name`.
pub fn load_str(name: &str, text: &str) -> Result<ManifestSet, Vec<LoadError>> {
    let mut set = ManifestSet::default();
    let mut errors = Vec::new();
    load_text(Path::new(name), text, &mut set, &mut errors);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Adds the manifest files at `p`: a regular file, or a directory's `.yaml`/`.yml` files (in
/// name order, recursively). Anything else (a device, a pipe, a link that loops or leads back
/// into a directory already read) is an error, never read or followed forever.
fn collect(
    p: &Path,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<LoadError>,
    seen: &mut std::collections::BTreeSet<PathBuf>,
) {
    let at = |message: String| LoadError {
        origin: Origin {
            file: p.to_path_buf(),
            line: 0,
        },
        object: None,
        message,
    };
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return errors.push(at("no such file or directory".into()))
        }
        Err(e) => return errors.push(at(format!("cannot read: {e}"))),
    };
    if meta.is_file() {
        return files.push(p.to_path_buf());
    }
    if !meta.is_dir() {
        return errors.push(at("not a regular file or a directory".into()));
    }
    match std::fs::canonicalize(p) {
        Ok(real) if !seen.insert(real.clone()) => {
            return errors.push(at(format!(
                "leads back to {}, already read (a link loop?)",
                real.display()
            )))
        }
        Ok(_) => {}
        Err(e) => return errors.push(at(format!("cannot read: {e}"))),
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => return errors.push(at(format!("cannot read directory: {e}"))),
    };
    entries.sort();
    for e in entries {
        if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            collect(&e, files, errors, seen);
        }
    }
}

/// Splits multi-document YAML where YAML does, keeping each document's first line number: at
/// each document start YAML's own parser finds (an explicit `---`, which may carry the
/// document's first node on its line: `--- {kind: ...}`). A stream with a syntax error is split
/// at `---` lines instead, so each document reports its own errors and the others still load.
fn documents(text: &str) -> Vec<(usize, String)> {
    let docs = match document_starts(text) {
        Some(starts) => split_before(text, &starts),
        None => split_at_markers(text),
    };
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#') && l != "..."
            })
        })
        .collect()
}

/// The line each document of `text` starts on, by YAML's parser; `None` if it does not parse.
fn document_starts(text: &str) -> Option<Vec<usize>> {
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut starts = Vec::new();
    loop {
        match parser.next_token() {
            Ok((yaml_rust2::parser::Event::DocumentStart, mark)) => starts.push(mark.line()),
            Ok((yaml_rust2::parser::Event::StreamEnd, _)) => return Some(starts),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// `text` cut before each of the (1-based, ascending) `starts` lines; what comes before the
/// first start (comments, blank lines) belongs to no document.
fn split_before(text: &str, starts: &[usize]) -> Vec<(usize, String)> {
    let mut docs: Vec<(usize, String)> = Vec::new();
    let mut next = starts.iter().peekable();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut line = std::borrow::Cow::Borrowed(line);
        if next.next_if(|s| **s <= n).is_some() {
            match marker_rest(&line) {
                // A bare `---`: the document's first line is the next one.
                Some(rest) if rest.trim().is_empty() || rest.trim_start().starts_with('#') => {
                    docs.push((n + 1, String::new()));
                    continue;
                }
                Some(rest) => line = format!("   {rest}").into(),
                None => {}
            }
            docs.push((n, String::new()));
        }
        if let Some((_, doc)) = docs.last_mut() {
            doc.push_str(&line);
            doc.push('\n');
        }
    }
    docs
}

/// What follows a document marker `---` at the start of `line`, if it has one.
fn marker_rest(line: &str) -> Option<&str> {
    line.strip_prefix("---")
        .filter(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

/// Splits at `---` lines (for a stream YAML's parser refuses): a document that starts on its
/// `---` line keeps that line, the marker blanked so columns stay where they were.
fn split_at_markers(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = marker_rest(line) {
            docs.push((start, std::mem::take(&mut current)));
            if rest.trim().is_empty() || rest.trim_start().starts_with('#') {
                start = i + 2;
            } else {
                start = i + 1;
                current.push_str("   ");
                current.push_str(rest);
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

/// One YAML document (starting at `origin`), or why it is not YAML, at its line.
fn parse_document(origin: &Origin, doc: &str) -> Result<serde_yaml_ng::Value, LoadError> {
    serde_yaml_ng::from_str(doc).map_err(|e| {
        let start = origin.line;
        let line = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
        let message = e.to_string();
        // serde_yaml reports its own (document-relative) position: drop it.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        LoadError {
            origin: origin.at_line(Some(line)),
            object: None,
            message: format!("invalid YAML: {message}"),
        }
    })
}

/// What a document says it is, read before its type is: its kind, apiVersion, name and
/// namespace.
struct Header {
    kind: String,
    api_version: String,
    name: String,
    namespace: Option<String>,
}

impl Header {
    fn of(value: &serde_yaml_ng::Value) -> Header {
        let text = |v: Option<&serde_yaml_ng::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let meta = value.get("metadata");
        Header {
            kind: text(value.get("kind")).unwrap_or_default(),
            api_version: text(value.get("apiVersion")).unwrap_or_default(),
            name: text(meta.and_then(|m| m.get("name"))).unwrap_or_else(|| "<unnamed>".into()),
            namespace: text(meta.and_then(|m| m.get("namespace"))),
        }
    }
}

fn load_text(file: &Path, text: &str, set: &mut ManifestSet, errors: &mut Vec<LoadError>) {
    for (start, doc) in documents(text) {
        let origin = Origin {
            file: file.to_path_buf(),
            line: start,
        };
        let value = match parse_document(&origin, &doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Header {
            kind,
            api_version,
            name,
            namespace,
        } = Header::of(&value);
        let object_name = Some(match &namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        });
        let is_ours = matches!(
            kind.as_str(),
            "ApiKeyPolicy" | "CmsConnection" | "ClusterCmsConnection"
        );
        if is_ours && api_version != GROUP_VERSION {
            errors.push(LoadError {
                origin: origin.at_line(FieldMap::of_document(&doc, start).line_of("apiVersion")),
                object: object_name,
                message: format!("apiVersion must be {GROUP_VERSION}, not '{api_version}'"),
            });
            continue;
        }
        let mut fields = FieldMap::of_document(&doc, start);
        macro_rules! typed {
            ($list:expr) => {{
                let (object, problems) = typed(value, &mut fields);
                for (path, message) in problems {
                    let origin = origin.at_line(fields.line_of(&path));
                    let message = match path.as_str() {
                        "." => message,
                        _ => format!("{path}: {message}"),
                    };
                    errors.push(LoadError {
                        origin,
                        object: object_name.clone(),
                        message,
                    });
                }
                match object {
                    Some(object) => $list.push(Sourced {
                        origin,
                        object,
                        fields,
                    }),
                    None => set.unloaded.push((kind, namespace, name)),
                }
            }};
        }
        match (kind.as_str(), api_version.as_str()) {
            ("ApiKeyPolicy", _) => typed!(set.policies),
            ("CmsConnection", _) => typed!(set.connections),
            ("ClusterCmsConnection", _) => typed!(set.cluster_connections),
            ("Secret", "v1") => typed!(set.secrets),
            ("Namespace", "v1") => typed!(set.namespaces),
            ("", _) => errors.push(LoadError {
                origin,
                object: None,
                message: "document has no kind".into(),
            }),
            _ => set.skipped.push((kind, origin)),
        }
    }
}

/// How many malformed fields of one object are reported before giving up on it.
const MAX_PROBLEMS_PER_OBJECT: usize = 20;

/// Deserializes `value`, reporting each malformed field (path, reason) and trying again
/// without it. A field of the wrong type is recorded in `fields` as dropped, so that what
/// follows from its absence is not reported too; a missing required field takes the object
/// that lacks it out the same way. The object is `None` when its top level is wrong.
fn typed<T: DeserializeOwned>(
    mut value: serde_yaml_ng::Value,
    fields: &mut FieldMap,
) -> (Option<T>, Vec<(String, String)>) {
    use serde_path_to_error::Segment;
    let mut problems = Vec::new();
    // Items taken out of lists so far (the list's path, the item's index, both as written):
    // later errors count items as they are now, people count them as they wrote them.
    let mut removed: Vec<(String, usize)> = Vec::new();
    for _ in 0..2 * MAX_PROBLEMS_PER_OBJECT {
        if problems.len() >= MAX_PROBLEMS_PER_OBJECT {
            break;
        }
        let e = match serde_path_to_error::deserialize(value.clone()) {
            Ok(object) => return (Some(object), problems),
            Err(e) => e,
        };
        let now: Vec<Segment> = e.path().iter().cloned().collect();
        let written = as_written(&now, &removed);
        let path = path_string(&written);
        let message = without_values(&e.into_inner().to_string());
        let unknown = message.starts_with("unknown field");
        // A required field already reported as malformed is missing now: said once.
        let consequence = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
            .is_some_and(|field| {
                let field_path = match path.as_str() {
                    "." => field.to_owned(),
                    p => format!("{p}.{field}"),
                };
                fields.was_dropped(&field_path)
            });
        if !consequence {
            problems.push((path.clone(), message));
        }
        if now.is_empty() || !remove(&mut value, &now) {
            break;
        }
        if let Some((Segment::Seq { index }, list)) = written.split_last() {
            removed.push((path_string(list), *index));
        }
        if !unknown {
            fields.drop_field(&path);
        }
    }
    (None, problems)
}

/// `path` with each list index counted as in the file, given the items already `removed`.
fn as_written(
    path: &[serde_path_to_error::Segment],
    removed: &[(String, usize)],
) -> Vec<serde_path_to_error::Segment> {
    use serde_path_to_error::Segment;
    let mut out: Vec<Segment> = Vec::with_capacity(path.len());
    for segment in path {
        let segment = match segment {
            Segment::Seq { index } => {
                let list = path_string(&out);
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|(l, _)| *l == list)
                    .map(|(_, i)| *i)
                    .collect();
                gone.sort_unstable();
                let mut index = *index;
                for g in gone {
                    if g <= index {
                        index += 1;
                    }
                }
                Segment::Seq { index }
            }
            other => other.clone(),
        };
        out.push(segment);
    }
    out
}

/// A path as serde_path_to_error and the validator write it: `spec.keys[0].name`.
fn path_string(path: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    if path.is_empty() {
        return ".".into();
    }
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !matches!(segment, Segment::Seq { .. }) {
            out.push('.');
        }
        out.push_str(&segment.to_string());
    }
    out
}

/// Takes the node at `path` out of `value`; false if there is none.
fn remove(value: &mut serde_yaml_ng::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    use serde_yaml_ng::Value;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index),
            (Segment::Map { key }, Value::Mapping(map)) => map.get_mut(key.as_str()),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Seq { index }, Value::Sequence(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        (Segment::Map { key }, Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// serde's "invalid type: string `VALUE`, expected ..." without the value: a field given the
/// wrong type may hold a credential or a key value, and errors end up in CI logs.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest
        .find("invalid type: ")
        .or_else(|| rest.find("invalid value: "))
    {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        match (tail.find(" `"), tail.find("`,")) {
            (Some(open), Some(close)) if open < close => {
                out.push_str(&tail[..open]);
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(tail);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_never_echo_the_value() {
        assert_eq!(
            without_values("invalid type: string `kw_secret`, expected a sequence"),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            without_values("invalid value: integer `123456`, expected u32"),
            "invalid value: integer, expected u32"
        );
        assert_eq!(
            without_values("unknown variant `FLY`, expected one of `GET`"),
            "unknown variant `FLY`, expected one of `GET`"
        );
    }

    fn load_str(text: &str) -> Result<ManifestSet, Vec<LoadError>> {
        super::load_str("m.yaml", text)
    }

    /// Policy shop/p with key k, 8 lines.
    fn policy() -> String {
        crate::policy::policy_yaml(
            "    - name: k
      defaultPermissions: [GET]
      secret: {name: s}
",
        )
    }

    #[test]
    fn multi_document_with_line_numbers() {
        let text = format!(
            "# comment\n---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n",
            policy()
        );
        let set = load_str(&text).unwrap();
        assert_eq!(set.policies.len(), 1);
        assert_eq!(set.policies[0].origin.line, 3);
        assert_eq!(
            set.policies[0].object.spec.keys[0].secret.key_field,
            "apiKey"
        );
        assert_eq!(set.skipped[0].0, "ConfigMap");
    }

    #[test]
    fn yaml_errors_point_at_the_line() {
        let text = format!(
            "{}---\nkind: ApiKeyPolicy\nmetadata:\n  name: [unclosed\n",
            policy()
        );
        let e = load_str(&text).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].origin.line >= 11, "{e:?}");
        assert!(e[0].to_string().starts_with("m.yaml:1"), "{}", e[0]);
    }

    #[test]
    fn every_malformed_field_is_reported_at_its_line_and_the_rest_still_loads() {
        let text = crate::policy::policy_yaml(
            "    - name: a
      defaultPermissions: 7
      secret: {name: s}
    - name: b
      secret: {}
    - name: c
      defaultPermissions: [GET, FETCH, POST]
      secret: {name: u, colour: red}
",
        );
        let (set, errors) = super::load_all(&[]);
        assert!(set.policies.is_empty() && errors.is_empty());
        let mut set = ManifestSet::default();
        let mut errors = Vec::new();
        load_text(Path::new("m.yaml"), &text, &mut set, &mut errors);
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            [
                "m.yaml:7: ApiKeyPolicy shop/p: spec.keys[0].defaultPermissions: invalid type: integer, expected a sequence",
                "m.yaml:10: ApiKeyPolicy shop/p: spec.keys[1].secret: missing field `name`",
                // Counted as written, although keys[1] was taken out before.
                "m.yaml:12: ApiKeyPolicy shop/p: spec.keys[2].defaultPermissions[1]: unknown variant `FETCH`, expected one of `GET`, `GET_ALL_DRAFTS`, `GET_ALL_CLOSED`, `POST`, `PUT`, `PATCH`, `DELETE`",
                "m.yaml:13: ApiKeyPolicy shop/p: spec.keys[2].secret.colour: unknown field `colour`, expected one of `name`, `keyField`, `extraFields`, `labels`, `annotations`, `adopt`, `deletionPolicy`",
            ]
        );
        // What is left loads, for validation to go on with; what was taken out is known.
        let p = &set.policies[0];
        let names: Vec<&str> = p.object.spec.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(p.object.spec.keys[1].default_permissions.len(), 2);
        assert!(p
            .fields
            .follows_from_dropped("spec.keys[0].defaultPermissions"));
        assert!(p.fields.follows_from_dropped("spec.keys[1].secret.name"));
        assert!(!p.fields.follows_from_dropped("spec.keys[2].secret.name"));
        assert_eq!(p.fields.line_of("spec.keys[2].secret.name"), Some(13));
    }

    #[test]
    fn an_object_without_its_required_fields_is_reported_once_and_not_loaded() {
        let text = "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: c, namespace: shop}
spec:
  endpoint: 42
";
        let e = load_str(text).unwrap_err();
        let got: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            ["m.yaml:5: CmsConnection shop/c: spec.endpoint: invalid type: integer, expected a string"]
        );
        let mut set = ManifestSet::default();
        load_text(Path::new("m.yaml"), text, &mut set, &mut Vec::new());
        assert!(set.connections.is_empty());
        assert!(set.failed_to_load("CmsConnection", Some("shop"), "c"));
        assert!(!set.failed_to_load("CmsConnection", None, "c"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = policy().replace("[GET]", "[GET, FETCH]");
        let e = load_str(&text).unwrap_err();
        let msg = e[0].to_string();
        assert!(msg.contains("ApiKeyPolicy shop/p"), "{msg}");
        assert!(msg.contains("spec.keys[0].defaultPermissions[1]"), "{msg}");
        assert!(msg.contains("FETCH"), "{msg}");
        let text = policy().replace("secret: {name: s}", "secret: {name: s}\n      colour: red");
        assert!(load_str(&text).unwrap_err()[0]
            .to_string()
            .contains("unknown field `colour`"));
    }

    #[test]
    fn a_document_may_start_on_its_marker_line_and_every_document_is_read() {
        let inline = "--- {apiVersion: keyward.dev/v1alpha1, kind: ApiKeyPolicy, metadata: {name: a, namespace: ns}, spec: {keys: [{name: k, defaultPermissions: [GET], secret: {name: s}}]}}\n";
        let text = format!(
            "{inline}{inline}---\n{}...\n",
            policy().replace("name: p", "name: c")
        );
        let text = text.replacen("name: a", "name: b", 1);
        let set = load_str(&text).unwrap();
        let names: Vec<(&str, usize)> = set
            .policies
            .iter()
            .map(|p| {
                (
                    p.object.metadata.name.as_deref().unwrap_or(""),
                    p.origin.line,
                )
            })
            .collect();
        assert_eq!(names, [("b", 1), ("a", 2), ("c", 4)]);

        // A stream YAML refuses is still split at its markers: the bad document is reported
        // at its line, the others load, the one on its marker line too.
        let broken = format!("--- {{kind: ApiKeyPolicy, metadata: {{name: x}}}}}}\n{inline}");
        let errors = load_str(&broken).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].origin.line, 1);
        let (set, _) = {
            let mut set = ManifestSet::default();
            let mut errors = Vec::new();
            load_text(Path::new("f.yaml"), &broken, &mut set, &mut errors);
            (set, errors)
        };
        assert_eq!(set.policies.len(), 1);
        assert_eq!(set.policies[0].origin.line, 2);
    }
}
