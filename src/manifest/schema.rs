//! Checks a document against the openAPIV3Schema of Weir's generated CRDs: the schema the API
//! server enforces at `kubectl apply`, so `weir validate` finds offline what it would refuse
//! (unknown fields, wrong types, missing required fields, enum values, patterns, bounds).
//!
//! The check also yields the document as the API server would store it: `null`s of fields that
//! are not nullable are pruned and values in error are left out, so the rest of the document
//! can still be read into the Rust types and validated by the engine, and one run of
//! `weir validate` reports every problem.

use super::yaml::{Loc, Node, Value};
use crate::engine::quote::{cut, q};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use std::cell::RefCell;
use std::collections::HashMap;

/// Which rule of the schema a value broke. Engine validation reports some of the same
/// problems with a better message (`"5d" is not a duration: unknown unit "d"` rather than a
/// pattern); [`Rule::is_refinable`] says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Type,
    UnknownField,
    Required,
    Enum,
    Pattern,
    Length,
    Range,
    Items,
}

impl Rule {
    /// Whether engine validation checks the same thing (so its message wins).
    pub fn is_refinable(self) -> bool {
        matches!(self, Rule::Pattern | Rule::Length | Rule::Range)
    }
}

/// One place where a document does not match the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaProblem {
    /// Field path, for example `spec.tasks[0].dependOn`.
    pub path: String,
    pub loc: Loc,
    pub message: String,
    pub rule: Rule,
}

/// Checks documents against one schema; compiled patterns are kept between documents.
#[derive(Default)]
pub struct Checker {
    patterns: RefCell<HashMap<String, Option<regex::Regex>>>,
}

/// Fields of `metadata` (ObjectMeta) people may write.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Checks a whole object (`apiVersion`, `kind`, `metadata` and what the schema
    /// describes) and returns it as the API server would store it.
    pub fn check_object(
        &self,
        doc: &Node,
        schema: &JSONSchemaProps,
        out: &mut Vec<SchemaProblem>,
    ) -> serde_json::Value {
        let Value::Map(entries) = &doc.value else {
            out.push(SchemaProblem {
                path: String::new(),
                loc: doc.loc,
                message: format!("expected a mapping (a Kubernetes object), got {}", doc.describe()),
                rule: Rule::Type,
            });
            return serde_json::Value::Null;
        };
        let mut object = serde_json::Map::new();
        let properties = schema.properties.as_ref();
        for (key, value) in entries {
            let path = key.name.clone();
            let checked = match key.name.as_str() {
                "apiVersion" | "kind" => self.check(value, &string_schema(), &path, out),
                "metadata" => self.check_metadata(value, out),
                name => match properties.and_then(|p| p.get(name)) {
                    Some(s) => self.check(value, s, &path, out),
                    None => {
                        let known = ["apiVersion", "kind", "metadata"]
                            .into_iter()
                            .chain(properties.into_iter().flat_map(|p| p.keys().map(String::as_str)));
                        out.push(unknown_field(&path, key.loc, name, known));
                        None
                    }
                },
            };
            if let Some(v) = checked {
                object.insert(key.name.clone(), v);
            }
        }
        check_required(doc, schema, "", out);
        object.into()
    }

    fn check_metadata(&self, node: &Node, out: &mut Vec<SchemaProblem>) -> Option<serde_json::Value> {
        let Value::Map(entries) = &node.value else {
            out.push(type_problem("metadata", node, "object"));
            return None;
        };
        let mut object = serde_json::Map::new();
        for (key, value) in entries {
            let path = format!("metadata.{}", key.name);
            if !METADATA_FIELDS.contains(&key.name.as_str()) {
                out.push(unknown_field(
                    &path,
                    key.loc,
                    &key.name,
                    METADATA_FIELDS.iter().copied(),
                ));
                continue;
            }
            let schema = match key.name.as_str() {
                "labels" | "annotations" => JSONSchemaProps {
                    type_: Some("object".into()),
                    additional_properties: Some(JSONSchemaPropsOrBool::Schema(Box::new(string_schema()))),
                    ..Default::default()
                },
                "name" | "generateName" | "namespace" | "uid" | "resourceVersion" => string_schema(),
                // Written by the API server; whatever is there is left to it.
                _ => JSONSchemaProps::default(),
            };
            if let Some(v) = self.check(value, &schema, &path, out) {
                object.insert(key.name.clone(), v);
            }
        }
        Some(object.into())
    }

    /// Checks `node` against `schema`; returns the value to keep (`None`: left out).
    pub fn check(
        &self,
        node: &Node,
        schema: &JSONSchemaProps,
        path: &str,
        out: &mut Vec<SchemaProblem>,
    ) -> Option<serde_json::Value> {
        if matches!(node.value, Value::Null) {
            // The API server prunes nulls of fields that are not nullable; a required field
            // so pruned is reported as missing by its parent.
            return schema
                .nullable
                .unwrap_or(false)
                .then_some(serde_json::Value::Null);
        }
        if schema.x_kubernetes_int_or_string == Some(true) {
            return match &node.value {
                Value::String(_) => Some(node.to_json()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some(node.to_json()),
                _ => {
                    out.push(type_problem(path, node, "integer or string"));
                    None
                }
            };
        }
        let value = match schema.type_.as_deref() {
            Some("object") => self.check_map(node, schema, path, out)?,
            Some("array") => self.check_seq(node, schema, path, out)?,
            Some("string") => match &node.value {
                Value::String(s) => {
                    self.check_string(s, node.loc, schema, path, out);
                    node.to_json()
                }
                _ => {
                    out.push(type_problem(path, node, "string"));
                    return None;
                }
            },
            Some("integer") => {
                let Value::Number(n) = &node.value else {
                    out.push(type_problem(path, node, "integer"));
                    return None;
                };
                let Some(v) = as_integer(n) else {
                    out.push(type_problem(path, node, "integer"));
                    return None;
                };
                check_integer_format(v, node.loc, schema, path, out);
                check_range(v as f64, node.loc, schema, path, out);
                // `2.0` is an integer to the API server, not to serde.
                match i64::try_from(v) {
                    Ok(i) => serde_json::Value::from(i),
                    Err(_) => node.to_json(),
                }
            }
            Some("number") => {
                let Value::Number(n) = &node.value else {
                    out.push(type_problem(path, node, "number"));
                    return None;
                };
                check_range(n.as_f64().unwrap_or(0.0), node.loc, schema, path, out);
                node.to_json()
            }
            Some("boolean") => {
                if !matches!(node.value, Value::Bool(_)) {
                    out.push(type_problem(path, node, "boolean"));
                    return None;
                }
                node.to_json()
            }
            _ => node.to_json(),
        };
        if let Some(allowed) = &schema.enum_ {
            let allowed: Vec<&serde_json::Value> = allowed.iter().map(|j| &j.0).collect();
            if !allowed.contains(&&value) {
                out.push(enum_problem(path, node, &allowed));
                return None;
            }
        }
        Some(value)
    }

    fn check_map(
        &self,
        node: &Node,
        schema: &JSONSchemaProps,
        path: &str,
        out: &mut Vec<SchemaProblem>,
    ) -> Option<serde_json::Value> {
        let Value::Map(entries) = &node.value else {
            out.push(type_problem(path, node, "object"));
            return None;
        };
        let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
        let mut object = serde_json::Map::new();
        for (key, value) in entries {
            let child = child_path(path, &key.name);
            let property = schema.properties.as_ref().and_then(|p| p.get(&key.name));
            let checked = match (property, &schema.additional_properties) {
                (Some(s), _) => self.check(value, s, &child, out),
                (None, Some(JSONSchemaPropsOrBool::Schema(s))) => self.check(value, s, &child, out),
                (None, Some(JSONSchemaPropsOrBool::Bool(true))) => Some(value.to_json()),
                _ if preserve => Some(value.to_json()),
                _ => {
                    let known = schema
                        .properties
                        .iter()
                        .flat_map(|p| p.keys().map(String::as_str));
                    out.push(unknown_field(&child, key.loc, &key.name, known));
                    None
                }
            };
            if let Some(v) = checked {
                object.insert(key.name.clone(), v);
            }
        }
        check_required(node, schema, path, out);
        Some(object.into())
    }

    fn check_seq(
        &self,
        node: &Node,
        schema: &JSONSchemaProps,
        path: &str,
        out: &mut Vec<SchemaProblem>,
    ) -> Option<serde_json::Value> {
        let Value::Seq(items) = &node.value else {
            out.push(type_problem(path, node, "array"));
            return None;
        };
        let count = items.len() as i64;
        if let Some(min) = schema.min_items
            && count < min
        {
            out.push(SchemaProblem {
                path: path.to_string(),
                loc: node.loc,
                message: format!("needs at least {min} item(s), has {count}"),
                rule: Rule::Items,
            });
        }
        if let Some(max) = schema.max_items
            && count > max
        {
            out.push(SchemaProblem {
                path: path.to_string(),
                loc: node.loc,
                message: format!("has {count} items, more than the limit of {max}"),
                rule: Rule::Items,
            });
        }
        let item_schema = match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(s)) => Some(&**s),
            _ => None,
        };
        let mut array = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let checked = match item_schema {
                Some(s) => self.check(item, s, &format!("{path}[{i}]"), out),
                None => Some(item.to_json()),
            };
            array.extend(checked);
        }
        Some(array.into())
    }

    fn check_string(
        &self,
        s: &str,
        loc: Loc,
        schema: &JSONSchemaProps,
        path: &str,
        out: &mut Vec<SchemaProblem>,
    ) {
        let len = s.chars().count() as i64;
        let mut problem = |message: String, rule| {
            out.push(SchemaProblem {
                path: path.to_string(),
                loc,
                message,
                rule,
            })
        };
        if let Some(min) = schema.min_length
            && len < min
        {
            problem(
                if min == 1 && len == 0 {
                    "must not be empty".to_string()
                } else {
                    format!("{} is {len} characters; at least {min} needed", q(s))
                },
                Rule::Length,
            );
        }
        if let Some(max) = schema.max_length
            && len > max
        {
            problem(
                format!("{} is {len} characters; at most {max} allowed", q(s)),
                Rule::Length,
            );
        }
        if let Some(pattern) = &schema.pattern {
            let mut cache = self.patterns.borrow_mut();
            let regex = cache
                .entry(pattern.clone())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            if let Some(regex) = regex
                && !regex.is_match(s)
            {
                problem(
                    format!("{} does not match the pattern {pattern}", q(s)),
                    Rule::Pattern,
                );
            }
        }
    }
}

fn string_schema() -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("string".into()),
        ..Default::default()
    }
}

fn child_path(parent: &str, key: &str) -> String {
    let simple = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (parent.is_empty(), simple) {
        (true, true) => cut(key),
        (false, true) => format!("{parent}.{}", cut(key)),
        (_, false) => format!("{parent}[{}]", q(key)),
    }
}

fn as_integer(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i128)
}

fn check_integer_format(
    v: i128,
    loc: Loc,
    schema: &JSONSchemaProps,
    path: &str,
    out: &mut Vec<SchemaProblem>,
) {
    let (min, max): (i128, i128) = match schema.format.as_deref() {
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64") => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    };
    if v < min || v > max {
        out.push(SchemaProblem {
            path: path.to_string(),
            loc,
            message: format!("{v} is out of range ({min} to {max})"),
            rule: Rule::Range,
        });
    }
}

fn check_range(v: f64, loc: Loc, schema: &JSONSchemaProps, path: &str, out: &mut Vec<SchemaProblem>) {
    let below = schema.minimum.is_some_and(|m| {
        if schema.exclusive_minimum == Some(true) {
            v <= m
        } else {
            v < m
        }
    });
    let above = schema.maximum.is_some_and(|m| {
        if schema.exclusive_maximum == Some(true) {
            v >= m
        } else {
            v > m
        }
    });
    if below || above {
        let bound = |b: Option<f64>| b.map_or("any".to_string(), |b| b.to_string());
        out.push(SchemaProblem {
            path: path.to_string(),
            loc,
            message: format!(
                "{v} is out of range ({} to {})",
                bound(schema.minimum),
                bound(schema.maximum)
            ),
            rule: Rule::Range,
        });
    }
}

fn check_required(node: &Node, schema: &JSONSchemaProps, path: &str, out: &mut Vec<SchemaProblem>) {
    for field in schema.required.iter().flatten() {
        let present = node.get(field).is_some_and(|v| !matches!(v.value, Value::Null));
        if !present {
            out.push(SchemaProblem {
                path: child_path(path, field),
                loc: node.loc,
                message: format!("missing required field {field:?}"),
                rule: Rule::Required,
            });
        }
    }
}

fn type_problem(path: &str, node: &Node, expected: &str) -> SchemaProblem {
    let article = match expected.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    };
    let hint = match (&node.value, expected) {
        (Value::Number(_) | Value::Bool(_), "string") => " (put it in quotes to make it a string)",
        (Value::String(_), "array") => " (write it as a list: [value] or '- value')",
        _ => "",
    };
    SchemaProblem {
        path: path.to_string(),
        loc: node.loc,
        message: format!("expected {article} {expected}, got {}{hint}", node.describe()),
        rule: Rule::Type,
    }
}

fn enum_problem(path: &str, node: &Node, allowed: &[&serde_json::Value]) -> SchemaProblem {
    let names: Vec<String> = allowed
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect();
    let hint = node
        .as_str()
        .and_then(|s| closest(s, names.iter().map(String::as_str)))
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default();
    let shown = match &node.value {
        Value::String(s) => q(s).to_string(),
        _ => node.describe(),
    };
    SchemaProblem {
        path: path.to_string(),
        loc: node.loc,
        message: format!("{shown} is not one of {}{hint}", names.join(", ")),
        rule: Rule::Enum,
    }
}

fn unknown_field<'a>(
    path: &str,
    loc: Loc,
    name: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> SchemaProblem {
    let message = match closest(name, known.clone()) {
        Some(s) => format!("unknown field {} (did you mean {s:?}?)", q(name)),
        None => {
            let known: Vec<&str> = known.collect();
            if known.is_empty() {
                format!("unknown field {}: no fields are allowed here", q(name))
            } else if known.len() <= 16 {
                format!("unknown field {}; known fields: {}", q(name), known.join(", "))
            } else {
                format!("unknown field {}", q(name))
            }
        }
    };
    SchemaProblem {
        path: path.to_string(),
        loc,
        message,
        rule: Rule::UnknownField,
    }
}

pub use crate::engine::suggest::closest;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;

    fn pipeline_schema() -> JSONSchemaProps {
        crate::crd::all()[0].spec.versions[0]
            .schema
            .clone()
            .unwrap()
            .open_api_v3_schema
            .unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        let doc = &parse_documents(yaml).unwrap()[0];
        let mut out = Vec::new();
        Checker::new().check_object(doc, &pipeline_schema(), &mut out);
        out.iter()
            .map(|p| format!("{}:{} {}: {}", p.loc.line, p.loc.column, p.path, p.message))
            .collect()
    }

    const HEAD: &str = "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: p\n";

    #[test]
    fn a_valid_pipeline_has_no_problems() {
        let yaml = format!(
            "{HEAD}spec:\n  tasks:\n    - name: a\n      image: busybox\n      env: [{{name: X, value: \"1\"}}]\n      retries: {{limit: 2, backoffFactor: 2}}\n      resources: {{limits: {{cpu: 1, memory: 1Gi}}}}\n"
        );
        assert_eq!(problems(&yaml), Vec::<String>::new());
    }

    #[test]
    fn typos_types_enums_and_missing_fields_are_found_with_lines() {
        let yaml = format!(
            "{HEAD}spec:\n  tasks:\n    - name: a\n      dependOn: [b]\n      triggerRule: AllSucceded\n      env:\n        - name: X\n          value: 1\n      retries:\n        limit: many\n    - image: busybox\n  paralelism: 2\n"
        );
        assert_eq!(
            problems(&yaml),
            vec![
                "8:7 spec.tasks[0].dependOn: unknown field \"dependOn\" (did you mean \"dependsOn\"?)",
                "9:20 spec.tasks[0].triggerRule: \"AllSucceded\" is not one of AllSucceeded, AllDone, AllFailed, OneSucceeded, OneFailed, NoneFailed (did you mean \"AllSucceeded\"?)",
                "12:18 spec.tasks[0].env[0].value: expected a string, got the number 1 (put it in quotes to make it a string)",
                "14:16 spec.tasks[0].retries.limit: expected an integer, got the string \"many\"",
                "15:7 spec.tasks[1].name: missing required field \"name\"",
                "16:3 spec.paralelism: unknown field \"paralelism\" (did you mean \"parallelism\"?)",
            ]
        );
    }

    #[test]
    fn metadata_and_root_fields_are_checked() {
        let yaml = "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: p\n  label: {a: b}\n  labels: {version: 2}\nspecs: {}\n";
        assert_eq!(
            problems(yaml),
            vec![
                "5:3 metadata.label: unknown field \"label\" (did you mean \"labels\"?)",
                "6:21 metadata.labels.version: expected a string, got the number 2 (put it in quotes to make it a string)",
                "7:1 specs: unknown field \"specs\" (did you mean \"spec\"?)",
                "1:1 spec: missing required field \"spec\"",
            ]
        );
    }

    #[test]
    fn nulls_are_pruned_like_the_api_server_does() {
        let doc =
            &parse_documents(&format!("{HEAD}spec:\n  tasks:\n    - name: a\n      env: ~\n")).unwrap()[0];
        let mut out = Vec::new();
        let value = Checker::new().check_object(doc, &pipeline_schema(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(value["spec"]["tasks"][0], serde_json::json!({"name": "a"}));
    }
}
