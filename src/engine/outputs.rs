//! Task outputs: what a task wrote to the file named by `WEIR_OUTPUTS` (its container's
//! termination message), as a JSON object or `key=value` lines.

use std::collections::BTreeMap;

/// Environment variable naming the file a task writes its outputs to.
pub const OUTPUTS_ENV: &str = "WEIR_OUTPUTS";
/// Where Kubernetes reads a container's termination message from; Weir points
/// `WEIR_OUTPUTS` there so outputs travel in the pod status without any sidecar.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The kubelet keeps at most this many bytes of a termination message.
pub const MAX_BYTES: usize = 4096;

/// Parses the outputs text and checks every declared output is there.
pub fn parse(text: &str, declared: &[String]) -> Result<BTreeMap<String, String>, String> {
    let trimmed = text.trim();
    let mut outputs = BTreeMap::new();
    if trimmed.starts_with('{') {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(trimmed) {
            Ok(map) => {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    outputs.insert(k, text);
                }
            }
            Err(e) if text.len() >= MAX_BYTES => {
                return Err(format!(
                    "outputs are cut at the {MAX_BYTES}-byte limit of a termination message ({e}); write less, or store large results elsewhere and output their location"
                ));
            }
            Err(e) => return Err(format!("outputs are not a valid JSON object: {e}")),
        }
    } else {
        for (n, line) in trimmed.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                if text.len() >= MAX_BYTES {
                    return Err(format!(
                        "outputs are cut at the {MAX_BYTES}-byte limit of a termination message"
                    ));
                }
                return Err(format!("outputs line {} is not key=value: {line:?}", n + 1));
            };
            outputs.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let missing: Vec<&str> = declared
        .iter()
        .filter(|d| !outputs.contains_key(*d))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let cut = if text.len() >= MAX_BYTES {
            format!(" (the text reached the {MAX_BYTES}-byte limit and was cut)")
        } else {
            String::new()
        };
        return Err(format!(
            "declared output(s) {} missing: write them to ${OUTPUTS_ENV} as a JSON object or key=value lines{cut}",
            missing.join(", ")
        ));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn json_and_key_value_forms() {
        let out = parse(
            r#"{"rows": 42, "path": "s3://b/k", "parts": ["a","b"]}"#,
            &declared(&["rows"]),
        )
        .unwrap();
        assert_eq!(out["rows"], "42");
        assert_eq!(out["path"], "s3://b/k");
        assert_eq!(out["parts"], r#"["a","b"]"#);
        let out = parse(
            "rows=42\n# comment\nstatus = ok\n",
            &declared(&["rows", "status"]),
        )
        .unwrap();
        assert_eq!((out["rows"].as_str(), out["status"].as_str()), ("42", "ok"));
        assert!(parse("", &[]).unwrap().is_empty());
    }

    #[test]
    fn missing_and_malformed_outputs_are_named() {
        let e = parse(r#"{"rows": 1}"#, &declared(&["rows", "status"])).unwrap_err();
        assert!(e.contains("status missing") && e.contains("WEIR_OUTPUTS"), "{e}");
        assert!(
            parse("{not json", &[])
                .unwrap_err()
                .contains("not a valid JSON object")
        );
        assert!(parse("just text", &[]).unwrap_err().contains("not key=value"));
        let big = format!("{{\"blob\": \"{}", "x".repeat(MAX_BYTES));
        assert!(
            parse(&big[..MAX_BYTES], &[])
                .unwrap_err()
                .contains("4096-byte limit")
        );
    }
}
