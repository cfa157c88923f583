//! YAML documents as trees that remember where each node came from, so that every problem
//! found in a manifest (schema or engine) can name its line and column.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A position in a file, both 1-based. `line == 0` means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl Loc {
    fn of(location: &serde_saphyr::Location) -> Loc {
        Loc {
            line: location.line(),
            column: location.column(),
        }
    }

    pub fn is_known(self) -> bool {
        self.line > 0
    }
}

/// A YAML value with the position of each node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    /// Also holds the numbers JSON cannot represent (`.nan`, `.inf`), as written.
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// One node of a document.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

/// A mapping key and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string at `key` in a mapping, if it is one.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for messages ("a string", "the number 1").
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Number(n) => format!("the number {n}"),
            Value::String(s) => format!("the string {s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The node as plain JSON (what the API server stores).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.name.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// The position of the node at `path` (segments of a field path such as
    /// `tasks[2].dependsOn`), or of its deepest ancestor that exists.
    pub fn locate(&self, path: &[PathSegment]) -> Loc {
        let mut node = self;
        for segment in path {
            let next = match (segment, &node.value) {
                (PathSegment::Field(name), Value::Map(entries)) => {
                    entries.iter().find(|(k, _)| &k.name == name).map(|(_, v)| v)
                }
                (PathSegment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.loc
    }

    /// The node at `path`, if all of it exists.
    pub fn at(&self, path: &[PathSegment]) -> Option<&Node> {
        let mut node = self;
        for segment in path {
            node = match (segment, &node.value) {
                (PathSegment::Field(name), Value::Map(entries)) => {
                    entries.iter().find(|(k, _)| &k.name == name).map(|(_, v)| v)?
                }
                (PathSegment::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    Field(String),
    Index(usize),
}

/// Splits `tasks[2].retries.delay` into its segments. Unparseable parts end the path.
pub fn parse_path(path: &str) -> Vec<PathSegment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            out.push(PathSegment::Field(field.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { return out };
            match stripped[..end].parse() {
                Ok(i) => out.push(PathSegment::Index(i)),
                Err(_) => return out,
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// What one manifest file may cost to read. YAML can ask for far more than its size
/// (aliases repeat what an anchor holds, as in "billion laughs"; nesting costs stack), so
/// each limit is checked while the file is read and a file over one is refused with a
/// message naming it. They are far above what a manifest needs: the API server keeps no
/// object over about 1.5 MiB, and Kubernetes objects nest about a dozen levels deep.
pub mod limits {
    /// Bytes in one file.
    pub const FILE_BYTES: usize = 4 << 20;
    /// Levels of lists and mappings inside each other.
    pub const DEPTH: usize = 32;
    /// Lists, mappings and scalars, every copy an alias makes counted.
    pub const NODES: usize = 250_000;
    /// Bytes of scalar text, every copy an alias makes counted.
    pub const SCALAR_BYTES: usize = 8 << 20;
    /// Documents in one file.
    pub const DOCUMENTS: usize = 1_024;
    /// Aliases (`*name`) in one file.
    pub const ALIASES: usize = 10_000;
}

/// The reader's options: YAML 1.2 as `kubectl` reads it, within [`limits`].
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits::DEPTH;
    budget.flow_nesting_limit = limits::DEPTH;
    budget.max_nodes = limits::NODES;
    budget.max_total_scalar_bytes = limits::SCALAR_BYTES;
    budget.max_documents = limits::DOCUMENTS;
    budget.max_aliases = limits::ALIASES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses every document of a YAML text. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    if text.len() > limits::FILE_BYTES {
        return Err(SyntaxError {
            loc: Loc::default(),
            message: format!(
                "the file is {} bytes, more than the limit of {} (4 MiB) for a manifest file: split it",
                text.len(),
                limits::FILE_BYTES
            ),
            limit: Some("file size"),
        });
    }
    let docs: Vec<Spanned<Value>> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(SyntaxError::from)?;
    Ok(docs
        .into_iter()
        .map(|d| Node {
            loc: Loc::of(&d.referenced),
            value: d.value,
        })
        .collect())
}

/// A YAML syntax error, or a file over one of the [`limits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub loc: Loc,
    pub message: String,
    /// The limit the file is over, if that is the problem.
    pub limit: Option<&'static str>,
}

/// The inner error, without the wrappers that add a snippet or the alias it came through.
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::WithSnippet { error, .. } | serde_saphyr::Error::AliasError { error, .. } =
        err
    {
        err = error;
    }
    err
}

/// What a file over one of the [`limits`] is told: the limit and its value.
fn over_limit(err: &serde_saphyr::Error) -> Option<(&'static str, String)> {
    use serde_saphyr::budget::BudgetBreach;
    let depth = || {
        (
            "nesting depth",
            format!(
                "lists and mappings nest more than {} levels deep, the limit for a manifest",
                limits::DEPTH
            ),
        )
    };
    let breach = match original(err) {
        // The scanner reads ahead of the nesting count and may reach its own limit first.
        e if e
            .without_snippet()
            .to_string()
            .starts_with("recursion limit exceeded") =>
        {
            return Some(depth());
        }
        serde_saphyr::Error::Budget { breach, .. } => breach,
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. } => {
            return Some((
                "aliases",
                "aliases repeat more than a manifest file may hold: use fewer aliases".to_string(),
            ));
        }
        _ => return None,
    };
    Some(match breach {
        BudgetBreach::Depth { .. } => depth(),
        BudgetBreach::Nodes { .. } => (
            "nodes",
            format!(
                "more than {} values, lists and mappings (each copy an alias makes counted), the limit for a manifest file",
                limits::NODES
            ),
        ),
        BudgetBreach::ScalarBytes { .. } => (
            "text size",
            format!(
                "more than {} bytes of text in values (each copy an alias makes counted), the limit for a manifest file",
                limits::SCALAR_BYTES
            ),
        ),
        BudgetBreach::Documents { .. } => (
            "documents",
            format!(
                "more than {} documents, the limit for a manifest file: split it",
                limits::DOCUMENTS
            ),
        ),
        BudgetBreach::Aliases { .. } => (
            "aliases",
            format!(
                "more than {} aliases, the limit for a manifest file",
                limits::ALIASES
            ),
        ),
        other => (
            "aliases",
            format!("the file asks too much of the YAML reader ({other:?}): use fewer anchors and aliases"),
        ),
    })
}

impl From<serde_saphyr::Error> for SyntaxError {
    fn from(err: serde_saphyr::Error) -> Self {
        let loc = err.location().map(|l| Loc::of(&l)).unwrap_or_default();
        if let Some((limit, message)) = over_limit(&err) {
            return SyntaxError {
                loc,
                message,
                limit: Some(limit),
            };
        }
        let mut message = err.without_snippet().to_string();
        // The position is reported separately.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        // Advice meant for programs using the library, not for people writing YAML.
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
        }
        SyntaxError {
            loc,
            message,
            limit: None,
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

fn node(spanned: Spanned<Value>) -> Node {
    Node {
        loc: Loc::of(&spanned.referenced),
        value: spanned.value,
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(Value::Number(v.into())),
            Err(_) => Ok(Value::String(v.to_string())),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(v) => Ok(Value::Number(v.into())),
            Err(_) => Ok(Value::String(v.to_string())),
        }
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(match serde_json::Number::from_f64(v) {
            Some(n) => Value::Number(n),
            None => Value::String(v.to_string()),
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(node(item));
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let key_loc = Loc::of(&key.referenced);
            let name = match key.value {
                Value::String(s) => s,
                Value::Null => "null".to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom("a mapping key must be a plain value"));
                }
            };
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((Key { name, loc: key_loc }, node(value)));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_lines() {
        let docs = parse_documents("a: 1\nb:\n  - x: \"2\"\n    z: on\n---\nc: [1, 2]\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].get("b").unwrap();
        let path = parse_path("b[0].z");
        assert_eq!(docs[0].locate(&path), Loc { line: 4, column: 8 });
        assert_eq!(docs[0].at(&path).unwrap().value, Value::Bool(true));
        assert_eq!(b.loc.line, 3);
        assert_eq!(docs[1].loc.line, 6);
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": 1, "b": [{"x": "2", "z": true}]})
        );
        // A path that goes further than the document stops at the deepest node found.
        assert_eq!(docs[0].locate(&parse_path("b[0].z.w")).line, 4);
    }

    #[test]
    fn syntax_errors_have_a_position_and_a_plain_message() {
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.loc, Loc { line: 2, column: 1 });
        assert_eq!(err.message, "duplicate mapping key: a");
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.loc.line, 2);
        assert!(!err.message.contains("line"), "{}", err.message);
    }

    fn nested(depth: usize) -> String {
        format!("a: {}1{}\n", "[".repeat(depth - 1), "]".repeat(depth - 1))
    }

    #[test]
    fn nesting_is_limited_and_the_limit_named() {
        assert!(parse_documents(&nested(limits::DEPTH)).is_ok());
        let err = parse_documents(&nested(limits::DEPTH + 1)).unwrap_err();
        assert_eq!(err.limit, Some("nesting depth"));
        assert_eq!(
            err.message,
            "lists and mappings nest more than 32 levels deep, the limit for a manifest"
        );
        assert_eq!(err.loc.line, 1);
    }

    #[test]
    fn alias_bombs_stop_at_the_node_limit() {
        let mut text = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for l in 1..10 {
            let refs = vec![format!("*l{}", l - 1); 9].join(", ");
            text.push_str(&format!("l{l}: &l{l} [{refs}]\n"));
        }
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.limit, Some("nodes"), "{}", err.message);
        assert!(err.message.contains("more than 250000 values"), "{}", err.message);
        assert!(
            err.message.contains("each copy an alias makes"),
            "{}",
            err.message
        );
    }

    #[test]
    fn aliased_text_counts_against_the_text_limit() {
        let big = "x".repeat(1 << 20);
        let text = format!("a: &a {big}\nb: [*a, *a, *a, *a, *a, *a, *a, *a]\n");
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.limit, Some("text size"), "{}", err.message);
    }

    #[test]
    fn files_and_document_counts_are_limited() {
        let err = parse_documents(&" ".repeat(limits::FILE_BYTES + 1)).unwrap_err();
        assert_eq!(err.limit, Some("file size"));
        assert!(err.message.contains("4194305 bytes"), "{}", err.message);
        let err = parse_documents(&"---\na: 1\n".repeat(limits::DOCUMENTS + 1)).unwrap_err();
        assert_eq!(err.limit, Some("documents"), "{}", err.message);
        assert!(parse_documents(&"---\na: 1\n".repeat(limits::DOCUMENTS)).is_ok());
    }

    #[test]
    fn paths_are_split_into_segments() {
        use PathSegment::*;
        assert_eq!(
            parse_path("tasks[2].env[0].name"),
            vec![
                Field("tasks".into()),
                Index(2),
                Field("env".into()),
                Index(0),
                Field("name".into())
            ]
        );
        assert_eq!(parse_path("timeout"), vec![Field("timeout".into())]);
    }
}
