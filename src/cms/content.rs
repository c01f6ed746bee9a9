//! Content entries: publication states, versions, and list filters/search.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An entry's publication state (microCMS's statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Published,
    Draft,
    PublishedWithDraft,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub published_at: Option<Timestamp>,
    /// The published version's fields.
    #[serde(default)]
    pub published: Option<Map<String, Value>>,
    /// The draft version's fields (a draft, or a newer draft of published content).
    #[serde(default)]
    pub draft: Option<Map<String, Value>>,
    #[serde(default)]
    pub closed: bool,
    /// Reads the draft of this one entry without the all-drafts permission.
    #[serde(default)]
    pub draft_key: Option<String>,
}

impl Entry {
    pub fn status(&self) -> Status {
        match (self.closed, &self.published, &self.draft) {
            (true, _, _) => Status::Closed,
            (false, Some(_), Some(_)) => Status::PublishedWithDraft,
            (false, Some(_), None) => Status::Published,
            (false, None, _) => Status::Draft,
        }
    }

    /// The entry as the content API shows it, with the chosen version's fields.
    pub fn render(&self, version: &Map<String, Value>) -> Value {
        let mut out = version.clone();
        out.insert("id".into(), Value::String(self.id.clone()));
        super::keys::insert_times(
            &mut out,
            &[
                ("createdAt", Some(self.created_at)),
                ("updatedAt", Some(self.updated_at)),
                ("publishedAt", self.published_at),
            ],
        );
        out.insert(
            "status".into(),
            serde_json::to_value(self.status()).unwrap_or(Value::Null),
        );
        Value::Object(out)
    }

    /// The version a reader sees by default: published (or closed) content, else the draft.
    pub fn visible(&self) -> Option<&Map<String, Value>> {
        self.published.as_ref().or(self.draft.as_ref())
    }
}

/// One comparison of a `filters` expression: `field[op]value`.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    field: String,
    op: FilterOp,
    value: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FilterOp {
    Equals,
    NotEquals,
    Contains,
    GreaterThan,
    LessThan,
    Exists,
    NotExists,
}

/// A parsed `filters` query: alternatives (`[or]`) of conjunctions (`[and]`), microCMS syntax.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter(Vec<Vec<Condition>>);

impl Filter {
    pub fn parse(expr: &str) -> Result<Filter, String> {
        // Messages count the conditions instead of repeating them: a query is not echoed.
        let mut alternatives = Vec::new();
        let mut n = 0usize;
        for alt in expr.split("[or]") {
            let mut all = Vec::new();
            for cond in alt.split("[and]") {
                n += 1;
                let malformed = || format!("filter condition {n} is not field[operator]value");
                let (field, rest) = cond.split_once('[').ok_or_else(malformed)?;
                let (op, value) = rest.split_once(']').ok_or_else(malformed)?;
                let op = match op {
                    "equals" => FilterOp::Equals,
                    "not_equals" => FilterOp::NotEquals,
                    "contains" => FilterOp::Contains,
                    "greater_than" => FilterOp::GreaterThan,
                    "less_than" => FilterOp::LessThan,
                    "exists" => FilterOp::Exists,
                    "not_exists" => FilterOp::NotExists,
                    _ => {
                        return Err(format!(
                            "filter condition {n} has an unknown operator (equals, not_equals, contains, greater_than, less_than, exists, not_exists)"
                        ))
                    }
                };
                if field.is_empty() {
                    return Err(format!("filter condition {n} has no field"));
                }
                all.push(Condition {
                    field: field.to_owned(),
                    op,
                    value: value.to_owned(),
                });
            }
            alternatives.push(all);
        }
        Ok(Filter(alternatives))
    }

    pub fn matches(&self, fields: &Map<String, Value>) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|all| all.iter().all(|c| c.matches(fields)))
    }
}

impl Condition {
    fn matches(&self, fields: &Map<String, Value>) -> bool {
        let v = fields.get(&self.field).filter(|v| !v.is_null());
        match self.op {
            FilterOp::Exists => v.is_some(),
            FilterOp::NotExists => v.is_none(),
            FilterOp::Equals => v.is_some_and(|v| text(v) == self.value),
            FilterOp::NotEquals => v.is_none_or(|v| text(v) != self.value),
            FilterOp::Contains => v.is_some_and(|v| text(v).contains(&self.value)),
            FilterOp::GreaterThan | FilterOp::LessThan => {
                let Some(v) = v else { return false };
                let ord = match (v.as_f64(), self.value.parse::<f64>()) {
                    (Some(a), Ok(b)) => a.partial_cmp(&b),
                    _ => Some(text(v).as_str().cmp(self.value.as_str())),
                };
                let want = if self.op == FilterOp::GreaterThan {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                };
                ord == Some(want)
            }
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Full-text search (`q`): a case-insensitive substring of any string field.
/// A full-text search (`q=`): a string field, at any depth, contains the text, ignoring case.
/// The text is lowered once per search; ASCII fields (the usual case) are lowered into one
/// reused buffer and searched with SIMD (`memchr`'s memmem) instead of allocating a lowered
/// copy of each.
pub struct Search {
    lower: String,
    finder: Option<memchr::memmem::Finder<'static>>,
    buf: std::cell::RefCell<Vec<u8>>,
}

impl Search {
    pub fn new(q: &str) -> Search {
        let lower = q.to_lowercase();
        let finder = lower
            .is_ascii()
            .then(|| memchr::memmem::Finder::new(lower.as_bytes()).into_owned());
        Search {
            lower,
            finder,
            buf: std::cell::RefCell::new(Vec::new()),
        }
    }

    pub fn matches(&self, fields: &Map<String, Value>) -> bool {
        fields.values().any(|v| self.walk(v))
    }

    fn walk(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.contained_in(s),
            Value::Array(a) => a.iter().any(|x| self.walk(x)),
            Value::Object(o) => o.values().any(|x| self.walk(x)),
            _ => false,
        }
    }

    fn contained_in(&self, hay: &str) -> bool {
        if let Some(finder) = self.finder.as_ref().filter(|_| hay.is_ascii()) {
            let mut buf = self.buf.borrow_mut();
            buf.clear();
            buf.extend(hay.bytes().map(|b| b.to_ascii_lowercase()));
            return finder.find(&buf).is_some();
        }
        hay.to_lowercase().contains(&self.lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    /// Whether `q` is found in the fields (one search: see [`Search`]).
    fn search_matches(fields: &Map<String, Value>, q: &str) -> bool {
        Search::new(q).matches(fields)
    }

    #[test]
    fn filters_and_or() {
        let f = Filter::parse("title[equals]a[and]n[greater_than]3[or]tag[contains]x").unwrap();
        assert!(f.matches(&obj(json!({"title": "a", "n": 4}))));
        assert!(!f.matches(&obj(json!({"title": "a", "n": 2}))));
        assert!(f.matches(&obj(json!({"tag": "xyz"}))));
        let e = Filter::parse("title[equals]a[and]title[near]kw_secret").unwrap_err();
        assert!(e.contains("condition 2 has an unknown operator"), "{e}");
        assert!(!e.contains("kw_secret") && !e.contains("near"), "{e}");
        assert!(Filter::parse("title").is_err());
    }

    #[test]
    fn search_is_case_insensitive_over_strings() {
        assert!(search_matches(&obj(json!({"t": "Hello World"})), "world"));
        assert!(!search_matches(&obj(json!({"n": 5})), "5"));
        // In place for ASCII, lowered for the rest: the same answers.
        for (hay, q, found) in [
            ("Hello World", "LO WO", true),
            ("Hello World", "", true),
            ("Grüße aus Köln", "KÖLN", true),
            ("Grüße aus Köln", "koln", false),
            ("ab", "abc", false),
            ("tags", "TAG", true),
        ] {
            assert_eq!(
                search_matches(&obj(json!({"t": [{"x": hay}]})), q),
                found,
                "{hay} {q}"
            );
        }
    }
}
