//! Task outputs: what a task wrote to the file named by `WEIR_OUTPUTS` (its container's
//! termination message), as a JSON object or `key=value` lines.

use std::collections::BTreeMap;

/// Environment variable naming the file a task writes its outputs to.
pub const OUTPUTS_ENV: &str = "WEIR_OUTPUTS";
/// Where Kubernetes reads a container's termination message from; Weir points
/// `WEIR_OUTPUTS` there so outputs travel in the pod status without any sidecar.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The kubelet keeps at most this many bytes of a termination message (the last ones: it
/// reads the file from its end).
pub const MAX_BYTES: usize = 4096;

/// Most bytes of outputs a task may write when they do not travel in a termination message
/// (under `weir exec`, which moves large values through the artifact store, and in
/// `weir run`).
pub const MAX_LARGE_BYTES: usize = 32 << 20;
/// Prefix of the key under which a value moved to the artifact store is reported: its
/// object key, size and digest, as JSON. Keys with a dot cannot be declared as outputs, so
/// they never clash.
pub const LARGE_PREFIX: &str = "weir.large.";

/// The key under which output `key`, moved to the artifact store, is reported.
pub fn large_key(key: &str) -> String {
    format!("{LARGE_PREFIX}{key}")
}

/// The values to move to the store so that the rest, with a reference of `ref_bytes` in
/// place of each moved value, comes to less than `budget` bytes as JSON: the largest first.
/// `None` when even moving every value would not do.
pub fn to_move(outputs: &BTreeMap<String, String>, ref_bytes: usize, budget: usize) -> Option<Vec<String>> {
    let json = |m: &BTreeMap<String, String>| serde_json::to_string(m).map_or(usize::MAX, |t| t.len());
    let mut left = outputs.clone();
    let mut by_size: Vec<(&String, &String)> = outputs.iter().collect();
    by_size.sort_by_key(|(k, v)| (std::cmp::Reverse(v.len()), k.as_str()));
    let mut moved = Vec::new();
    let mut by_size = by_size.into_iter();
    while json(&left) >= budget {
        let (key, value) = by_size.next()?;
        if value.len() <= ref_bytes {
            // Moving what is no longer than its reference gains nothing.
            return None;
        }
        left.remove(key);
        left.insert(large_key(key), "x".repeat(ref_bytes));
        moved.push(key.clone());
    }
    Some(moved)
}

/// Parses the outputs text and checks every declared output is there.
///
/// Text of [`MAX_BYTES`] or more is refused as cut: the kubelet passes on only the last
/// [`MAX_BYTES`] bytes of a longer file, and what is left can still parse (a `key=value`
/// line cut short is still `key=value`), so a value would arrive shortened without anyone
/// noticing. A file of exactly [`MAX_BYTES`] bytes cannot be told apart from a cut one.
pub fn parse(text: &str, declared: &[String]) -> Result<BTreeMap<String, String>, String> {
    parse_within(text, declared, MAX_BYTES)
}

/// [`parse`] for outputs that may be up to `limit` bytes (refused from `limit` on). A
/// declared output reported as moved to the store ([`large_key`]) is there.
pub fn parse_within(
    text: &str,
    declared: &[String],
    limit: usize,
) -> Result<BTreeMap<String, String>, String> {
    if text.len() >= limit && limit > MAX_BYTES {
        return Err(format!(
            "outputs come to {} bytes, more than the {limit} bytes a task may write",
            text.len()
        ));
    }
    if text.len() >= limit {
        return Err(format!(
            "outputs reached the {MAX_BYTES}-byte limit of a termination message and were cut \
             (Kubernetes keeps only the last {MAX_BYTES} bytes): write less than {MAX_BYTES} \
             bytes to ${OUTPUTS_ENV}, or configure an artifact store and give the task a \
             command, so that weir exec moves large values through the store (see \
             docs/artifacts.md)"
        ));
    }
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
            Err(e) => return Err(format!("outputs are not a valid JSON object: {e}")),
        }
    } else {
        for (n, line) in trimmed.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("outputs line {} is not key=value: {line:?}", n + 1));
            };
            outputs.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let missing: Vec<&str> = declared
        .iter()
        .filter(|d| !outputs.contains_key(*d) && !outputs.contains_key(&large_key(d)))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "declared output(s) {} missing: write them to ${OUTPUTS_ENV} as a JSON object or key=value lines",
            missing.join(", ")
        ));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_values_move_until_the_rest_fits() {
        let outputs = BTreeMap::from([
            ("small".to_string(), "1".to_string()),
            ("big".to_string(), "b".repeat(5000)),
            ("bigger".to_string(), "c".repeat(9000)),
        ]);
        assert_eq!(
            to_move(&outputs, 200, MAX_BYTES),
            Some(vec!["bigger".into(), "big".into()])
        );
        let fits = BTreeMap::from([("rows".to_string(), "42".to_string())]);
        assert_eq!(to_move(&fits, 200, MAX_BYTES), Some(vec![]));
        // A thousand short values cannot be helped by moving any of them.
        let many: BTreeMap<String, String> = (0..1000).map(|i| (format!("k{i}"), "v".repeat(10))).collect();
        assert_eq!(to_move(&many, 200, MAX_BYTES), None);
    }

    #[test]
    fn a_declared_output_moved_to_the_store_is_there() {
        let text = format!(r#"{{"{}": "{{}}", "rows": "1"}}"#, large_key("parts"));
        let parsed = parse(&text, &declared(&["parts", "rows"])).unwrap();
        assert!(parsed.contains_key("weir.large.parts"));
        let big = format!(r#"{{"parts": "{}"}}"#, "p".repeat(100_000));
        assert!(parse(&big, &declared(&["parts"])).is_err());
        assert_eq!(
            parse_within(&big, &declared(&["parts"]), MAX_LARGE_BYTES).unwrap()["parts"].len(),
            100_000
        );
        let err = parse_within(&big, &[], 1000 + MAX_BYTES).unwrap_err();
        assert!(err.contains("more than the 5096 bytes"), "{err}");
    }

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
    }

    /// What the kubelet hands back of a long outputs file is its last 4 KiB, which may parse
    /// as well as the whole: such text is refused as cut, whatever its form.
    #[test]
    fn text_at_the_limit_is_refused_as_cut() {
        let cut_key_value = format!("v={}", "x".repeat(5_000));
        let cut_json = format!("{{\"blob\": \"{}\"}}", "x".repeat(5_000));
        let tail = |text: &str| text[text.len() - MAX_BYTES..].to_string();
        for text in [
            cut_key_value[..MAX_BYTES].to_string(),
            tail(&format!("{cut_key_value}\nw=1\n")),
            cut_json[..MAX_BYTES].to_string(),
            "k=v\n".repeat(MAX_BYTES / 4),
        ] {
            assert_eq!(text.len(), MAX_BYTES);
            let e = parse(&text, &[]).unwrap_err();
            assert!(
                e.contains("4096-byte limit") && e.contains("write less than 4096 bytes"),
                "{e}"
            );
        }
        let just_under = format!("v={}", "x".repeat(MAX_BYTES - 3));
        assert_eq!(just_under.len(), MAX_BYTES - 1);
        assert_eq!(
            parse(&just_under, &declared(&["v"])).unwrap()["v"].len(),
            MAX_BYTES - 3
        );
    }
}
