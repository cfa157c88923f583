//! A task's environment and command line as the kubelet would give them to its container:
//! Weir's own variables, then the task's, with `$(NAME)` references expanded.

use k8s_openapi::api::core::v1::EnvVar;

/// Expands `$(NAME)` the way the kubelet does in a container's command, args and variable
/// values: a defined name is replaced by its value, an undefined one is left as written,
/// `$$` stands for `$`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('(') => {
                let rest = &text[i + 2..];
                match rest.find(')') {
                    Some(end) => {
                        let name = &rest[..end];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        // Skip `(`, the name and `)`.
                        while chars.peek().is_some_and(|&(j, _)| j <= i + 2 + end) {
                            chars.next();
                        }
                    }
                    None => {
                        chars.next();
                        out.push_str("$(");
                    }
                }
            }
            _ => out.push('$'),
        }
    }
    out
}

/// The variables of a task's process, in order: `weir` (Weir's own, unless the task sets a
/// variable of the same name), then the task's. Values may refer to variables defined before
/// them. A `valueFrom` (Secret, ConfigMap, field) cannot be read on this machine: its value is
/// taken from `host` (the environment `weir run` was started with), and when it is not there
/// the variable's name is returned as an error.
pub fn container_env(
    weir: &[(&str, String)],
    task: &[EnvVar],
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut env: Vec<(String, String)> = weir
        .iter()
        .filter(|(name, _)| !task.iter().any(|v| v.name == *name))
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    let mut missing = Vec::new();
    for var in task {
        let value = match (&var.value, &var.value_from) {
            (_, Some(_)) => match host(&var.name) {
                Some(v) => v,
                None => {
                    missing.push(var.name.clone());
                    continue;
                }
            },
            (Some(value), None) => expand(value, |name| lookup(&env, name)),
            (None, None) => String::new(),
        };
        match env.iter_mut().find(|(n, _)| *n == var.name) {
            Some(existing) => existing.1 = value,
            None => env.push((var.name.clone(), value)),
        }
    }
    if missing.is_empty() { Ok(env) } else { Err(missing) }
}

/// The value of `name` in an environment list.
pub fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// Where a `valueFrom` would read from, for messages.
pub fn source_of(var: &EnvVar) -> String {
    let Some(from) = &var.value_from else {
        return "a value".into();
    };
    if let Some(s) = &from.secret_key_ref {
        format!("Secret {} key {}", s.name, s.key)
    } else if let Some(c) = &from.config_map_key_ref {
        format!("ConfigMap {} key {}", c.name, c.key)
    } else if let Some(f) = &from.field_ref {
        format!("field {}", f.field_path)
    } else if let Some(r) = &from.resource_field_ref {
        format!("resource {}", r.resource)
    } else {
        "a reference".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVarSource, SecretKeySelector};

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = vars(&[("A", "1"), ("B", "two")]);
        let e = |t: &str| expand(t, |n| lookup(&env, n));
        assert_eq!(e("x $(A) $(B)$(A)"), "x 1 two1");
        assert_eq!(e("$(NOPE) stays"), "$(NOPE) stays");
        assert_eq!(e("$$(A) is escaped, $$ is $"), "$(A) is escaped, $ is $");
        assert_eq!(
            e("$HOME and $ alone and $(unterminated"),
            "$HOME and $ alone and $(unterminated"
        );
        assert_eq!(e("é$(A)ü"), "é1ü");
        assert_eq!(e("end$"), "end$");
    }

    #[test]
    fn task_variables_win_and_see_earlier_ones() {
        let task = vec![
            EnvVar {
                name: "GREETING".into(),
                value: Some("hi $(WEIR_TASK)".into()),
                value_from: None,
            },
            EnvVar {
                name: "WEIR_ATTEMPT".into(),
                value: Some("mine".into()),
                value_from: None,
            },
        ];
        let weir = [
            ("WEIR_TASK", "extract".to_string()),
            ("WEIR_ATTEMPT", "1".to_string()),
        ];
        let env = container_env(&weir, &task, &|_| None).unwrap();
        assert_eq!(
            env,
            vars(&[
                ("WEIR_TASK", "extract"),
                ("GREETING", "hi extract"),
                ("WEIR_ATTEMPT", "mine")
            ])
        );
    }

    #[test]
    fn value_from_is_read_from_the_host_or_reported() {
        let secret = EnvVar {
            name: "DB_PASSWORD".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "db".into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        };
        assert_eq!(source_of(&secret), "Secret db key password");
        let task = vec![secret];
        assert_eq!(
            container_env(&[], &task, &|_| None),
            Err(vec!["DB_PASSWORD".to_string()])
        );
        let host = |n: &str| (n == "DB_PASSWORD").then(|| "s3cret".to_string());
        assert_eq!(
            container_env(&[], &task, &host).unwrap(),
            vars(&[("DB_PASSWORD", "s3cret")])
        );
    }
}
