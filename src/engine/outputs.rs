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

/// Parses the outputs text and checks every declared output is there.
///
/// Text of [`MAX_BYTES`] or more is refused as cut: the kubelet passes on only the last
/// [`MAX_BYTES`] bytes of a longer file, and what is left can still parse (a `key=value`
/// line cut short is still `key=value`), so a value would arrive shortened without anyone
/// noticing. A file of exactly [`MAX_BYTES`] bytes cannot be told apart from a cut one.
pub fn parse(text: &str, declared: &[String]) -> Result<BTreeMap<String, String>, String> {
    if text.len() >= MAX_BYTES {
        return Err(format!(
            "outputs reached the {MAX_BYTES}-byte limit of a termination message and were cut \
             (Kubernetes keeps only the last {MAX_BYTES} bytes): write less than {MAX_BYTES} \
             bytes to ${OUTPUTS_ENV}, or store large results elsewhere (object storage, a \
             volume) and output their location"
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
        .filter(|d| !outputs.contains_key(*d))
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
