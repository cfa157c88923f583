//! Parameters of a run: the values it is given, checked against the pipeline's declared
//! parameters, with defaults for the rest.

use super::quote::{json, q};
use crate::api::PipelineSpec;
use crate::api::params::ParamType;
use serde_json::Value;
use std::collections::BTreeMap;

/// The parameters of a run: what it gives, defaults for the rest. Every problem is reported
/// (unknown parameter, missing required one, string given for a list or the other way).
pub fn effective_params(
    spec: &PipelineSpec,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for name in given.keys() {
        if !spec.params.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
            errors.push(format!(
                "unknown parameter {} (the pipeline declares: {})",
                q(name),
                known.join(", ")
            ));
        }
    }
    for param in &spec.params {
        let value = match given.get(&param.name).or(param.default.as_ref()) {
            Some(v) => v.clone(),
            None => {
                errors.push(format!(
                    "parameter {} is required (it has no default)",
                    q(&param.name)
                ));
                continue;
            }
        };
        match coerce(param.type_, value) {
            Ok(v) => {
                out.insert(param.name.clone(), v);
            }
            Err(e) => errors.push(format!("parameter {}: {e}", q(&param.name))),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Checks a value against a parameter type. A list may be given as JSON text
/// (`--param parts='["a","b"]'`) or as comma-separated text (`--param parts=a,b`).
pub fn coerce(type_: ParamType, value: Value) -> Result<Value, String> {
    match (type_, value) {
        (ParamType::String, Value::String(s)) => Ok(Value::String(s)),
        (ParamType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (ParamType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (ParamType::List, Value::Array(items)) => list_of_strings(items),
        (ParamType::List, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Array(items)) => list_of_strings(items),
            _ if s.is_empty() => Ok(Value::Array(vec![])),
            _ => Ok(Value::Array(
                s.split(',')
                    .map(|p| Value::String(p.trim().to_string()))
                    .collect(),
            )),
        },
        (ParamType::String, other) => Err(format!("expected a string, got {}", json(&other))),
        (ParamType::List, other) => Err(format!("expected a list of strings, got {}", json(&other))),
    }
}

fn list_of_strings(items: Vec<Value>) -> Result<Value, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(Value::String(s)),
            Value::Number(n) => out.push(Value::String(n.to_string())),
            other => return Err(format!("list items must be strings, got {}", json(&other))),
        }
    }
    Ok(Value::Array(out))
}
