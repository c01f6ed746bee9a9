//! The line of each field of a YAML document, so that a problem found in the typed object can
//! point at the line a person has to change (`spec.keys[0].secret.name` -> line 12), not only
//! at the start of the document.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field paths (`spec.keys[0].name`, as serde and the validator spell them) and their lines,
/// plus the fields dropped because their type was wrong (what follows from their absence is
/// not reported again). The lines are read from the document the first time one is asked
/// for: a run without problems never needs them, so it parses each document once.
#[derive(Clone, Debug, Default)]
pub struct FieldMap {
    document: Option<Arc<str>>,
    first_line: usize,
    lines: Arc<OnceLock<BTreeMap<String, usize>>>,
    dropped: Vec<String>,
}

/// Two maps are equal when they are of the same document and dropped the same fields, read
/// or not.
impl PartialEq for FieldMap {
    fn eq(&self, other: &Self) -> bool {
        self.document == other.document
            && self.first_line == other.first_line
            && self.dropped == other.dropped
    }
}

impl Eq for FieldMap {}

impl FieldMap {
    /// The fields of one YAML document whose first line is line `first_line` of its file.
    pub fn of_document(doc: &str, first_line: usize) -> FieldMap {
        FieldMap {
            document: Some(doc.into()),
            first_line,
            ..FieldMap::default()
        }
    }

    /// A document that cannot be parsed has no lines (its syntax error is reported elsewhere).
    fn lines(&self) -> &BTreeMap<String, usize> {
        self.lines.get_or_init(|| {
            let Some(doc) = &self.document else {
                return BTreeMap::new();
            };
            let mut walk = Walk {
                offset: self.first_line.saturating_sub(1),
                ..Walk::default()
            };
            match Parser::new_from_str(doc).load(&mut walk, false) {
                Ok(()) => walk.lines,
                Err(_) => BTreeMap::new(),
            }
        })
    }

    /// The line of `path`, or of the nearest enclosing field the document has.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let lines = self.lines();
        let mut p = path;
        loop {
            if let Some(line) = lines.get(p) {
                return Some(*line);
            }
            p = parent(p)?;
        }
    }

    pub fn drop_field(&mut self, path: &str) {
        self.dropped.push(path.to_owned());
    }

    pub fn was_dropped(&self, path: &str) -> bool {
        self.dropped.iter().any(|d| d == path)
    }

    /// Whether a problem at `path` may only follow from a dropped field: the field itself,
    /// something inside it, or an object that holds it.
    pub fn follows_from_dropped(&self, path: &str) -> bool {
        self.dropped
            .iter()
            .any(|d| within(path, d) || within(d, path))
    }
}

/// `path` is `outer` or lies inside it.
fn within(path: &str, outer: &str) -> bool {
    outer.is_empty()
        || path == outer
        || path
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// `a.b[1]` -> `a.b`, `a.b` -> `a`, `a` -> none.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walk {
    offset: usize,
    stack: Vec<(String, Frame)>,
    lines: BTreeMap<String, usize>,
}

impl Walk {
    /// The path of the node that starts now, recorded at `line` when it is a sequence item
    /// (a mapping's value is recorded at its key).
    fn node_path(&mut self, line: usize) -> String {
        match self.stack.last() {
            None => String::new(),
            Some((base, Frame::Map { key: Some(k) })) => join(base, k),
            Some((base, Frame::Map { key: None })) => base.clone(),
            Some((base, Frame::Seq { index })) => {
                let p = format!("{base}[{index}]");
                self.lines.entry(p.clone()).or_insert(line);
                p
            }
        }
    }

    /// A node ended: its parent moves on to the next key or item.
    fn node_done(&mut self) {
        match self.stack.last_mut() {
            Some((_, Frame::Map { key })) => *key = None,
            Some((_, Frame::Seq { index })) => *index += 1,
            None => {}
        }
    }
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

impl MarkedEventReceiver for Walk {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line() + self.offset;
        match ev {
            Event::MappingStart(..) => {
                let path = self.node_path(line);
                self.stack.push((path, Frame::Map { key: None }));
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(line);
                self.stack.push((path, Frame::Seq { index: 0 }));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.node_done();
            }
            Event::Scalar(value, ..) => {
                if let Some((base, Frame::Map { key: key @ None })) = self.stack.last_mut() {
                    let path = join(base, &value);
                    *key = Some(value);
                    self.lines.entry(path).or_insert(line);
                } else {
                    self.node_path(line);
                    self.node_done();
                }
            }
            Event::Alias(_) => {
                self.node_path(line);
                self.node_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> String {
        crate::policy::policy_yaml(
            "    - name: k
      defaultPermissions: [GET,
        POST]
      secret:
        name: s
    - name: j
      secret: {name: t}
",
        )
    }

    #[test]
    fn every_field_has_its_line() {
        let m = FieldMap::of_document(&doc(), 10);
        assert_eq!(m.line_of("kind"), Some(11));
        assert_eq!(m.line_of("metadata.namespace"), Some(12));
        assert_eq!(m.line_of("spec.keys"), Some(14));
        assert_eq!(m.line_of("spec.keys[0]"), Some(15));
        assert_eq!(m.line_of("spec.keys[0].defaultPermissions[1]"), Some(17));
        assert_eq!(m.line_of("spec.keys[0].secret.name"), Some(19));
        assert_eq!(m.line_of("spec.keys[1].name"), Some(20));
        assert_eq!(m.line_of("spec.keys[1].secret.name"), Some(21));
        // A field the document does not have: the nearest one that holds it.
        assert_eq!(m.line_of("spec.keys[1].secret.keyField"), Some(21));
        assert_eq!(m.line_of("spec.cors.origins[0]"), Some(13));
        assert_eq!(m.line_of("nothing"), None);
    }

    #[test]
    fn broken_yaml_has_no_lines() {
        assert_eq!(
            FieldMap::of_document("a: [unclosed\n", 1).line_of("a"),
            None
        );
    }

    #[test]
    fn dropped_fields_cover_what_holds_them_and_what_they_hold() {
        let mut m = FieldMap::default();
        m.drop_field("spec.keys[0].defaultPermissions[1]");
        assert!(m.follows_from_dropped("spec.keys[0].defaultPermissions"));
        assert!(m.follows_from_dropped("spec.keys[0]"));
        assert!(m.follows_from_dropped("spec.keys[0].defaultPermissions[1]"));
        assert!(!m.follows_from_dropped("spec.keys[0].secret.name"));
        assert!(!m.follows_from_dropped("spec.keys[1]"));
        assert!(!m.follows_from_dropped("spec.keys[0].defaultPermissions[10]"));
        assert!(!m.follows_from_dropped("metadata.name"));
    }
}
